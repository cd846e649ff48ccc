"""``SecurityHeadersMiddleware``: a :class:`~bastion.core.headers.HeaderPolicy` on every response.

Plain ASGI, one concern: it touches only ``http.response.start`` (and answers the CSP report
path when the policy names one); for WebSockets, only the HTTP response that refuses a
handshake (``websocket.http.response.start``, where the server offers that extension).
Everything is compiled in ``__init__``; per response it draws a nonce (only if the CSP uses
one), stores it in ``scope["state"]["csp_nonce"]`` (Starlette's ``request.state.csp_nonce``)
and appends the pre-rendered headers.

Install it outermost (``app = SecurityHeadersMiddleware(app)``) so that error pages rendered by
the framework pass through it too. If an exception escapes the app before a response started,
the middleware sends a bare ``500`` carrying the policy's headers and re-raises, so the server
still logs the error.

Templates get the nonce through :func:`csp_nonce` (``csp_nonce(request)``) or, in Jinja2, through
:func:`add_jinja2_globals` (``{{ csp_nonce() }}``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from bastion.asgi._http import (
    WS_RESPONSE_EXTENSION,
    audit_unavailable,
    describe_client,
    send_response,
)
from bastion.core.audit import bind_request_id
from bastion.core.client import TrustedProxies
from bastion.core.clock import Clock, system_clock
from bastion.core.headers import (
    CompiledHeaders,
    HeaderPolicy,
    HeaderRouter,
    NonceSource,
    Preset,
    swagger_ui_policy,
)
from bastion.core.request import asgi_path
from bastion.errors import AuditUnavailable, ConfigurationError
from bastion.slices import layer_off, layer_settings

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
    from bastion.config import Bastion
    from bastion.core.audit import Auditor
    from bastion.runtime import Runtime

__all__ = [
    "SecurityHeadersMiddleware",
    "add_jinja2_globals",
    "csp_nonce",
    "fastapi_swagger_ui_policy",
]


STATE_KEY = "csp_nonce"
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_ERROR_BODY = b"Internal Server Error"
logger = logging.getLogger("bastion.security.audit")
_WS_START = "websocket.http.response.start"


class SecurityHeadersMiddleware:
    """Apply ``policy`` (a :class:`HeaderPolicy` or a preset name) to every HTTP response.

    ``overrides`` maps path patterns (:mod:`bastion.core.paths`: ``"/login"`` exact,
    ``"/legacy/*"`` a prefix on whole segments) to other policies (``{"/docs/*":
    fastapi_swagger_ui_policy(app)}``, ``{"/legacy/*": "relaxed"}``); the most specific
    pattern wins (:class:`~bastion.core.headers.HeaderRouter`).

    When the policy's ``report_to`` is a path, POSTs to it are answered here: at most
    ``report_max_bytes`` per body (413), ``application/csp-report`` or
    ``application/reports+json`` only (415), ``report_client_burst`` reports at once refilled at
    ``report_client_rate`` per second for each client (its address as ``proxies``, a
    :class:`~bastion.core.client.TrustedProxies`, resolves it; IPv6 grouped by /64; at most
    ``report_max_clients`` remembered), then ``report_burst`` at once refilled at
    ``report_rate`` per second for the whole process (429), malformed JSON 400, accepted 204.
    Each accepted violation and each refusal except 429 becomes an audit event on ``auditor``,
    with the resolved client address.

    At start-up every policy's weaknesses (:meth:`HeaderPolicy.weaknesses`: ``csp_policy=None``,
    ``nosniff=False``, ...) are logged once on ``bastion.security.headers``; with
    ``ENV=production`` the unsafe ones raise :class:`~bastion.errors.ConfigurationError`.
    ``production`` overrides the environment (``None`` reads ``ENV`` / ``BASTION_ENV``).
    """

    def __init__(
        self,
        app: ASGIApp,
        policy: HeaderPolicy | Preset | str | None = None,
        *,
        bastion: Bastion | Runtime | None = None,
        overrides: Mapping[str, HeaderPolicy | Preset | str] | None = None,
        auditor: Auditor | None = None,
        report_max_bytes: int = 16_384,
        report_burst: int = 50,
        report_rate: float = 1.0,
        report_client_burst: int = 10,
        report_client_rate: float = 0.5,
        report_max_clients: int = 4096,
        proxies: TrustedProxies | None = None,
        request_id_header: str | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
    ) -> None:
        self.app = app
        if bastion is not None:
            shared = layer_settings(
                bastion,
                "SecurityHeadersMiddleware",
                "headers",
                policy=policy,
                overrides=overrides,
                auditor=auditor,
                proxies=proxies,
                clock=clock,
                production=production,
            )
            policy = shared.config.headers
            if policy is None:
                layer_off("SecurityHeadersMiddleware", "headers")
            overrides = dict(shared.config.header_routes) or None
            auditor, proxies, clock = shared.auditor, shared.proxies, shared.clock
            production = shared.production
        elif policy is None:
            policy = Preset.STRICT
        self._router = HeaderRouter(
            policy,
            overrides=overrides,
            auditor=auditor,
            report_max_bytes=report_max_bytes,
            report_burst=report_burst,
            report_rate=report_rate,
            report_client_burst=report_client_burst,
            report_client_rate=report_client_rate,
            report_max_clients=report_max_clients,
            request_id_header=request_id_header,
            clock=clock,
            production=production,
        )
        self._compiled = self._router.default
        self._overrides = bool(self._router.overrides)
        self._report_path = self._router.report_path
        # Without overrides or a report path the path decides nothing: it is not even read.
        self._routing = self._overrides or self._report_path is not None
        self._receiver = self._router.receiver
        self._proxies = proxies if proxies is not None else TrustedProxies()
        self._forwarded = self._proxies.header.encode("ascii")
        # Behind a trusted TLS-terminating proxy the connection is plain HTTP: the proxy's
        # forwarded scheme says whether the browser used HTTPS (and so gets HSTS).
        self._behind_proxy = self._proxies.trusts_any
        self._nonces = NonceSource()
        header = self._router.request_id_header
        self._request_id_header = None if header is None else header.encode("ascii")
        self._describe = functools.partial(describe_client, proxies=self._proxies)

    async def __call__(  # noqa: PLR0915 (the per-request path, kept inline on purpose)
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["type"] != "http":
            await self._not_http(scope, receive, send)
            return
        # Every audit event emitted while this request runs carries its id (drawn on first use).
        bound = bind_request_id(
            None if self._request_id_header is None else self._proxy_request_id(scope),
            describe=self._describe,
            source=scope,
        )
        try:
            compiled = self._compiled
            path = None
            if self._routing:
                root = scope.get("root_path")
                path = asgi_path(scope["path"], root) if root else (scope["path"] or "/")
                if self._overrides:
                    compiled = self._router.for_path(path)
            https = scope.get("scheme") == "https"
            if self._behind_proxy and not https:
                https = _forwarded_https(self._proxies, scope)
            nonce = None
            if compiled.uses_nonce:
                source = self._nonces
                text, nonce = next(source.batch, None) or source.refill()
                state = scope.get("state")
                if state is None:
                    scope["state"] = state = {}
                state[STATE_KEY] = text
            if path is not None and path == self._report_path:
                status, extra = await self._receive_report(scope, receive)
                await _respond(send, compiled, https=https, nonce=nonce, status=status, extra=extra)
                return
            started: list[bool] = []  # not empty once http.response.start went out

            # A plain function returning send's awaitable: no coroutine of our own per message.
            # What it reads is bound as default values (one tuple) rather than closure cells (one
            # object each), and CompiledHeaders.apply is inlined for the common case: no header
            # of the policy in the response, so the app's list + static headers + nonce headers.
            def send_with_headers(  # noqa: PLR0917 (only `message` is passed; the rest are bindings)
                message: Message,
                send: Send = send,
                compiled: CompiledHeaders = compiled,
                https: bool = https,
                nonce: bytes | None = nonce,
                started: list[bool] = started,
            ) -> Awaitable[None]:
                if message["type"] == "http.response.start":
                    started.append(True)
                    headers = message.get("headers") or []
                    if type(headers) is not list:
                        headers = list(headers)
                    owned = compiled.owned
                    for name, _ in headers:
                        if name in owned:
                            result = compiled.apply(headers, https, nonce)
                            break
                    else:
                        result = headers + (compiled.https_extra if https else compiled.http_extra)
                        if nonce is not None:
                            for name, parts in compiled.nonce_headers:
                                result.append((name, nonce.join(parts)))
                    message = {**message}  # never write into the app's dict: apps reuse them
                    message["headers"] = result
                return send(message)

            try:
                await self.app(scope, receive, send_with_headers)
            except AuditUnavailable as error:
                if started:
                    raise
                await _audit_refused(error, scope, send, compiled.apply, https=https, nonce=nonce)
            except Exception:
                if not started:
                    await _respond(
                        send, compiled, https=https, nonce=nonce, status=500, body=_ERROR_BODY
                    )
                raise
        finally:
            bound.var.reset(bound)

    def _proxy_request_id(self, scope: Scope) -> str | None:
        """The id in ``request_id_header`` when one is configured and well formed."""
        name = self._request_id_header
        if name is None:
            return None
        for key, value in scope["headers"]:
            if key == name:
                return self._router.request_id(value.decode("latin-1"))
        return None

    async def _not_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Lifespan and WebSocket scopes pass through (a WebSocket connection gets a request id
        for its audit events as a request does), except that a WebSocket handshake
        refused with an HTTP response (the ``websocket.http.response`` extension: a 403 or a
        429 instead of the ``101``) gets the policy's headers like any other response."""
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        bound = bind_request_id(
            self._proxy_request_id(scope), describe=self._describe, source=scope
        )
        try:
            await self._websocket(scope, receive, send)
        finally:
            bound.var.reset(bound)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if WS_RESPONSE_EXTENSION not in (scope.get("extensions") or {}):
            await self.app(scope, receive, send)
            return
        path = asgi_path(scope["path"], scope.get("root_path", ""))
        compiled = self._router.for_path(path) if self._overrides else self._compiled
        https = scope.get("scheme") == "wss"
        if self._behind_proxy and not https:
            https = _forwarded_https(self._proxies, scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == _WS_START:
                nonce = self._nonces()[1] if compiled.uses_nonce else None
                headers = list(message.get("headers") or ())
                message = {**message, "headers": compiled.apply(headers, https, nonce)}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _receive_report(
        self, scope: Scope, receive: Receive
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Answer a request to the report path: the status and extra headers of the reply."""
        receiver = self._receiver
        if receiver is None:  # pragma: no cover (the path is set only with a receiver)
            return 404, []
        content_type = ""
        length = None
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
            elif name == self._forwarded:
                forwarded.append(value.decode("latin-1"))
        client = scope.get("client")
        peer = client[0] if client else None
        address = self._proxies.client(peer, forwarded)
        client_ip = None if address is None else str(address)
        key = self._proxies.key(peer, forwarded)
        status = receiver.precheck(scope["method"], content_type, length, client_ip, key)
        if status is None:
            body = await _read_capped(receive, receiver.max_bytes)
            if body is None:
                status = receiver.too_large(client_ip)
            else:
                status = receiver.accept(body, content_type, client_ip)
        return status, list(receiver.EXTRA_HEADERS.get(status, ()))

    def __repr__(self) -> str:
        return f"SecurityHeadersMiddleware({self._router!r})"


def _forwarded_https(proxies: TrustedProxies, scope: Scope) -> bool:
    """Whether a trusted proxy reports that the client used HTTPS (``False`` when the peer is
    not a trusted proxy: a client's own ``X-Forwarded-Proto`` is never read).
    :meth:`~bastion.core.client.TrustedProxies.forwarded_origin` reads the family the proxies
    write; the header's lines count as one list."""
    client = scope.get("client")
    peer = client[0] if client else None
    if not proxies.trusts(peer):
        return False
    proto: list[str] = []
    forwarded: list[str] = []
    hops: list[str] = []
    for name, value in scope["headers"]:
        if name == b"x-forwarded-proto":
            proto.append(value.decode("latin-1"))
        elif name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
        elif name == b"x-forwarded-for":
            hops.append(value.decode("latin-1"))
    scheme, _host = proxies.forwarded_origin(
        peer, forwarded, proto=",".join(proto) or None, forwarded_for=hops
    )
    return scheme == "https"


async def _read_capped(receive: Receive, limit: int) -> bytes | None:
    """The request body, or ``None`` once it exceeds ``limit`` bytes (nothing more is read).

    A disconnect ends the body early; the parser then refuses what arrived.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _audit_refused(
    error: AuditUnavailable,
    scope: Scope,
    send: Send,
    apply: Callable[[list[tuple[bytes, bytes]], bool, bytes | None], list[tuple[bytes, bytes]]],
    *,
    https: bool,
    nonce: bytes | None,
) -> None:
    """Fail-closed auditing refused the action's event: the action did not happen, which is a
    503 to retry, not a crash. The audit trail cannot record this, so it is logged."""
    logger.warning("bastion: %s; answered 503 audit_unavailable", error)
    headers, body = audit_unavailable(scope)
    await send_response(send, 503, apply(headers, https, nonce), body)


async def _respond(
    send: Send,
    compiled: CompiledHeaders,
    *,
    https: bool,
    nonce: bytes | None,
    status: int,
    extra: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> None:
    headers = list(extra or ())
    if body:
        headers += [_TEXT, (b"content-length", str(len(body)).encode("ascii"))]
    elif status != 204:
        headers.append((b"content-length", b"0"))
    await send_response(send, status, compiled.apply(headers, https, nonce), body)


def csp_nonce(request: Any) -> str:
    """The CSP nonce of ``request`` (anything with an ASGI ``scope``, e.g. a Starlette request).

    Raises :class:`~bastion.errors.ConfigurationError` when there is none: the middleware is not
    installed around this app, or its policy has no ``NONCE`` source.
    """
    scope = getattr(request, "scope", request)
    state = scope.get("state") if isinstance(scope, Mapping) else None
    nonce = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    if not isinstance(nonce, str):
        raise ConfigurationError(
            "no CSP nonce on this request: wrap the app in SecurityHeadersMiddleware with a "
            "policy whose CSP uses NONCE (the strict and relaxed presets do)",
            setting="csp_policy",
        )
    return nonce


def add_jinja2_globals(env: Any) -> None:
    """Add ``csp_nonce()`` to a Jinja2 environment (``templates.env`` in Starlette).

    The template must have ``request`` in its context, as Starlette's ``TemplateResponse``
    guarantees: ``<script nonce="{{ csp_nonce() }}">``.
    """
    import jinja2  # noqa: PLC0415 (optional dependency, needed only by apps that use Jinja2)

    @jinja2.pass_context
    def template_csp_nonce(context: Any) -> str:
        return csp_nonce(context["request"])

    env.globals["csp_nonce"] = template_csp_nonce


def fastapi_swagger_ui_policy(
    app: Any, *, root_path: str = "", base: HeaderPolicy | Preset | str = Preset.STRICT
) -> HeaderPolicy:
    """The policy under which a FastAPI app's Swagger UI works, for its docs path::

        app = SecurityHeadersMiddleware(api, overrides={"/docs/*": fastapi_swagger_ui_policy(api)})

    Renders ``/docs`` and ``/docs/oauth2-redirect`` as FastAPI's own routes do (``app``'s
    ``openapi_url``, title, ``swagger_ui_parameters``, ``swagger_ui_init_oauth``, and
    ``root_path`` as the server will pass it) and hands them to
    :func:`~bastion.core.headers.swagger_ui_policy`. Build it after configuring the app: the
    inline script's hash depends on those settings. FastAPI's ReDoc page (``/redoc``) needs its
    own policy (it loads another bundle and Google Fonts).
    """
    from fastapi.openapi.docs import (  # noqa: PLC0415 (FastAPI is optional)
        get_swagger_ui_html,
        get_swagger_ui_oauth2_redirect_html,
    )

    if not getattr(app, "docs_url", None) or not getattr(app, "openapi_url", None):
        raise ConfigurationError(
            "fastapi_swagger_ui_policy(): this app serves no Swagger UI (docs_url or "
            "openapi_url is None)",
            setting="docs_url",
        )
    prefix = root_path.rstrip("/")
    redirect = app.swagger_ui_oauth2_redirect_url
    docs = get_swagger_ui_html(
        openapi_url=prefix + app.openapi_url,
        title=f"{app.title} - Swagger UI",
        oauth2_redirect_url=None if not redirect else prefix + redirect,
        init_oauth=app.swagger_ui_init_oauth,
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    pages = [bytes(docs.body).decode("utf-8")]
    if redirect:
        pages.append(bytes(get_swagger_ui_oauth2_redirect_html().body).decode("utf-8"))
    return swagger_ui_policy(*pages, base=base)
