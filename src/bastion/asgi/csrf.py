"""``CSRFMiddleware`` for ASGI apps: the checks of :mod:`bastion.core.csrf` on every request.

Cheapest first: the method, exemptions, then ``Sec-Fetch-Site`` and ``Origin``, which decide
nearly every browser request from headers alone; the body is not touched then. Only when the
headers cannot decide (old browsers, ``curl``) is a token needed: from the header first, else
from a urlencoded or multipart body, read chunk by chunk up to ``max_body_bytes`` (413 beyond)
and replayed to the app byte for byte. JSON and other bodies must use the header.

Token source ``SESSION`` (default) reads the CSRF secret of bastion's session, so install
:class:`~bastion.asgi.sessions.SessionMiddleware` outside this one (``protect()`` does).
``DOUBLE_SUBMIT`` needs ``keyring=`` and, to bind the cookie to a user, ``identity=`` (a function
of the scope returning the user or client-side session ID).

A refusal is a 403 naming the failed check (413 for a body over the cap, 400 for a broken
form), JSON when the client asks for JSON and HTML otherwise, plus a ``malicious_csrf`` audit
event. ``log_only`` audits and lets the request through. A WebSocket handshake from an
untrusted ``Origin`` is refused before ``accept``: with the same 403 response where the server
offers the ASGI ``websocket.http.response`` extension, else by a close with code 1008 (the
server then answers 403 itself).

Templates get tokens through :func:`csrf_token` / :func:`csrf_input` (and the Jinja2 globals
from :func:`add_jinja2_globals`): they live in :mod:`bastion.asgi.csrf_tokens`, with the
request's :class:`CSRFContext`, and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from bastion.asgi._http import WS_RESPONSE_EXTENSION, send_refusal
from bastion.asgi.bearer import PRINCIPAL_KEY
from bastion.asgi.csrf_tokens import (
    CONTEXT_KEY,
    ContextSource,
    CSRFContext,
    add_jinja2_globals,
    csrf_input,
    csrf_token,
)
from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
from bastion.core.clock import Clock, system_clock
from bastion.core.csrf import (
    COMMON_UNSAFE_METHODS,
    SAFE_METHODS,
    CSRFConfig,
    CSRFGuard,
    CSRFReason,
    Facts,
    FormTokenScanner,
    ScanStatus,
    TokenState,
    rejection_body,
    wants_json,
)
from bastion.core.csrf.identity import IdentityFailed
from bastion.core.request import asgi_path, normalize_method
from bastion.slices import layer_settings, required_slice

if TYPE_CHECKING:
    from bastion.config import Bastion
    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.runtime import Runtime

__all__ = [
    "CONTEXT_KEY",
    "CSRFContext",
    "CSRFMiddleware",
    "add_jinja2_globals",
    "csrf_input",
    "csrf_token",
]

IdentityFunc = Callable[[Scope], "str | None"]

_OVERRIDES: Final = (b"x-http-method-override", b"x-http-method", b"x-method-override")
_OVERRIDE_NAMES: Final = frozenset(_OVERRIDES)
_SECURE_SCHEMES: Final = frozenset({"https", "wss"})
_SCAN_REASONS: Final = {
    ScanStatus.TOO_LARGE: CSRFReason.BODY_TOO_LARGE,
    ScanStatus.MALFORMED: CSRFReason.BODY_MALFORMED,
}


class CSRFMiddleware(ContextSource):
    """CSRF protection for one ASGI app. See the module docstring.

    ``config`` is a :class:`~bastion.core.csrf.CSRFConfig`. ``keyring`` is required for
    ``TokenSource.DOUBLE_SUBMIT``. ``auditor`` receives ``malicious_csrf`` events (default: JSON
    lines on the ``bastion.audit`` logger). ``production`` defaults to ``ENV``/``BASTION_ENV``.
    ``proxies`` (a :class:`~bastion.core.client.TrustedProxies`, the one the rest of the stack
    uses) says which peers may report the scheme and host (``X-Forwarded-Proto`` and
    ``X-Forwarded-Host``, or ``Forwarded``: see its ``forwarded_origin``); by default none may.
    """

    __slots__ = (
        "_api_keys",
        "_checker",
        "_forwarded",
        "_guard",
        "_header",
        "_identity",
        "_session_state",
        "_wanted",
        "app",
        "config",
        "cookie",
        "double_submit",
    )

    def __init__(
        self,
        app: ASGIApp,
        *,
        bastion: Bastion | Runtime | None = None,
        config: CSRFConfig | None = None,
        keyring: KeyRing | SecretKey | None = None,
        identity: IdentityFunc | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        if bastion is not None:
            shared = layer_settings(
                bastion,
                "CSRFMiddleware",
                "csrf",
                config=config,
                keyring=keyring,
                identity=identity,
                auditor=auditor,
                clock=clock,
                production=production,
                proxies=proxies,
            )
            config = required_slice(shared.config.csrf, "CSRFMiddleware", "csrf")
            keyring, identity = shared.keyring, shared.config.csrf_identity
            auditor, clock, proxies = shared.auditor, shared.clock, shared.proxies
            production = shared.production
        guard = CSRFGuard(
            config,
            keyring=keyring,
            auditor=auditor,
            clock=clock,
            production=production,
            proxies=proxies,
        )
        config = guard.config
        self._guard = guard
        self._checker = guard.checker
        self.app = app
        self.config = config
        self.double_submit = guard.double_submit
        self.cookie = guard.cookie
        self._identity = identity
        # Session tokens need no per-request state: one shared, never-written TokenState.
        self._session_state = TokenState(guard)
        self._forwarded = guard.proxies.header.encode("ascii")
        self._header = config.header_name.lower().encode("ascii")
        self._api_keys = frozenset(h.lower().encode("ascii") for h in config.api_key_headers)
        self._wanted = frozenset(
            {
                b"host",
                b"sec-fetch-site",
                b"origin",
                b"referer",
                b"x-forwarded-proto",
                b"x-forwarded-host",
                b"forwarded",
                b"authorization",
                b"content-type",
                b"accept",
                b"cookie",
                self._header,
                *_OVERRIDES,
                *self._api_keys,
            }
        )

    def _facts(self, scope: Scope) -> tuple[Facts, str | None]:
        """The request's :class:`Facts`, from one pass over the headers, and its ``Cookie``
        header (several joined with ``; ``: HTTP/2 splits them)."""
        found: dict[bytes, str] = {}
        wanted = self._wanted
        for name, value in scope["headers"]:
            if name in wanted:
                if name not in found:
                    found[name] = value.decode("latin-1")
                elif name == b"cookie":
                    found[name] += "; " + value.decode("latin-1")
                elif name == b"forwarded" or name in _OVERRIDE_NAMES:
                    # Every value counts: one list over several lines (RFC 9110 5.3), and an
                    # app's override middleware may read any override header.
                    found[name] += "," + value.decode("latin-1")
        override = None
        if not _OVERRIDE_NAMES.isdisjoint(found):
            # Every override header counts: an app's override middleware may read any of them.
            override = ",".join(found[name] for name in _OVERRIDES if name in found)
        get = found.get
        path = scope.get("path") or "/"
        root = scope.get("root_path")
        if root and root != "/":
            path = asgi_path(path, root)
        client = scope.get("client")
        facts = Facts(
            method=normalize_method(scope.get("method", "GET")),
            path=path,
            scheme="https" if scope.get("scheme") in _SECURE_SCHEMES else "http",
            host=get(b"host"),
            client=client[0] if client else None,
            sec_fetch_site=get(b"sec-fetch-site"),
            origin=get(b"origin"),
            referer=get(b"referer"),
            forwarded_proto=get(b"x-forwarded-proto"),
            forwarded_host=get(b"x-forwarded-host"),
            forwarded=get(b"forwarded"),
            authorization=get(b"authorization"),
            api_key=not self._api_keys.isdisjoint(found),
            method_override=override,
            query=scope.get("query_string", b"").decode("latin-1"),
            content_type=get(b"content-type"),
            header_token=get(self._header),
            accept=get(b"accept"),
            cookie=b"cookie" in found,
            bearer=_has_principal(scope),
        )
        return facts, get(b"cookie")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method in SAFE_METHODS or (
            method not in COMMON_UNSAFE_METHODS and normalize_method(method) in SAFE_METHODS
        ):
            # A safe method passes unless it asks to be read as another: decided first, from
            # the override headers and the query alone. Without an override header, and with
            # no query that can name ``_method`` (the test of ``override_methods``), the
            # checker's answer is a pass: nothing else is read. (The hot path, written for
            # CPython 3.11: a plain loop costs half of isdisjoint(map(itemgetter(0), ...)), and
            # a subscript inside a zero-cost try a fraction of dict.get.)
            overrides = _OVERRIDE_NAMES  # a local: the loop reads it once per header
            for name, _value in scope["headers"]:
                if name in overrides:
                    break
            else:
                try:
                    query = scope["query_string"]
                except KeyError:
                    query = b""
                if not query or (b"%" not in query and b"method" not in query.lower()):
                    if self.double_submit is None:
                        # Session tokens need nothing of this request until a template asks
                        # for one: the context is made then (see _context).
                        scope[CONTEXT_KEY] = self
                        await self.app(scope, receive, send)
                    else:
                        await self.app(scope, receive, self._context_send(scope, send, None))
                    return
            # An override header, or a query that may name ``_method``: the checker decides.
            if await self._refuse_override(scope, send):
                return
            await self.app(scope, receive, self._context_send(scope, send, None))
            return
        await self._unsafe(scope, receive, send)

    async def _unsafe(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An unsafe method: the header checks, then, when they cannot decide, the token. Its
        own coroutine, so that a safe request's (the hot path's) frame stays small."""
        facts, cookie_header = self._facts(scope)
        verdict = self._checker.check(facts)
        if verdict.passed is not None:
            await self.app(scope, receive, self._context_send(scope, send, cookie_header))
            return
        if verdict.reason is not None:
            if not await self._refuse(verdict.reason, facts, scope, send):
                await self.app(scope, receive, self._context_send(scope, send, cookie_header))
            return
        context = CSRFContext(self, scope, cookie_header)
        token: str | bytes | None = facts.header_token
        reason: CSRFReason | None = None
        if token is None:
            outcome = await self._body_token(facts, receive)
            if outcome is None:
                return  # the client disconnected while sending the body
            token, reason, receive = outcome
        if reason is None:
            try:
                reason = self._guard.judge_token(
                    token, facts, lambda: context.state, context._known_secret
                )
            except IdentityFailed:
                reason = CSRFReason.IDENTITY_FAILED
        if reason is None or not await self._refuse(reason, facts, scope, send):
            await self.app(scope, receive, self._context_send(scope, send, cookie_header, context))

    async def _refuse_override(self, scope: Scope, send: Send) -> bool:
        """Refuse a safe method that asks to be read as an unsafe one (``True``: refused)."""
        facts, _cookie = self._facts(scope)
        reason = self._checker.check(facts).reason
        return reason is not None and await self._refuse(reason, facts, scope, send)

    def _context_send(
        self,
        scope: Scope,
        send: Send,
        cookie_header: str | None,
        context: CSRFContext | None = None,
    ) -> Send:
        """Put the request's context in the scope; the ``send`` to give the app (with
        double-submit tokens, one that adds a cookie issued during the request)."""
        if self.double_submit is None:
            scope[CONTEXT_KEY] = self  # made on first use (see _context)
            return send
        if context is None:
            context = CSRFContext(self, scope, cookie_header)
        scope[CONTEXT_KEY] = context
        state = context._state
        if state is not None and state.secret is not None:
            return send  # its cookie verified: tokens reuse it, no cookie will be issued
        context._send = send
        return context.send

    async def _body_token(
        self, facts: Facts, receive: Receive
    ) -> tuple[bytes | None, CSRFReason | None, Receive] | None:
        """The token of a form body, or why there is none, and the ``receive`` to give the app
        (it replays what was read). ``None`` when the client went away mid-body."""
        scanned = FormTokenScanner.for_content_type(
            facts.content_type, field=self.config.field_name, max_bytes=self.config.max_body_bytes
        )
        if not isinstance(scanned, FormTokenScanner):
            return None, scanned, receive
        outcome = await _scan(scanned, receive)
        if outcome is None:
            return None
        status, replay = outcome
        return scanned.token, _SCAN_REASONS.get(status), replay

    def _forwarded_for(self, scope: Scope) -> list[str]:
        """The values of the trusted proxies' forwarding header, for the audit event."""
        if not self._guard.proxies.trusts_any:
            return []
        wanted = self._forwarded
        return [value.decode("latin-1") for name, value in scope["headers"] if name == wanted]

    async def _refuse(self, reason: CSRFReason, facts: Facts, scope: Scope, send: Send) -> bool:
        """Audit the refusal and send it; ``False`` (nothing sent) in log-only mode."""
        self._guard.audit(reason, facts, self._forwarded_for(scope))
        if self.config.log_only:
            return False
        await _send_rejection(send, reason, facts)
        return True

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        facts, _cookie = self._facts(scope)
        reason = self._checker.check_websocket(facts)
        if reason is not None:
            self._guard.audit(reason, facts, self._forwarded_for(scope))
            if not self.config.log_only:
                message = await receive()  # websocket.connect
                if message.get("type") != "websocket.connect":
                    return  # the client has gone
                if WS_RESPONSE_EXTENSION in (scope.get("extensions") or {}):
                    # The server lets the refusal be an HTTP response: a 403 naming the check.
                    await _send_rejection(send, reason, facts, websocket=True)
                else:
                    await send({"type": "websocket.close", "code": 1008, "reason": ""})
                return
        await self.app(scope, receive, send)

    def __repr__(self) -> str:
        return (
            f"CSRFMiddleware(token_source={self.config.token_source.value!r}, "
            f"log_only={self.config.log_only})"
        )


_NO_STORE: Final = ((b"cache-control", b"no-store"),)


def _has_principal(scope: Scope) -> bool:
    """Whether the bearer layer verified an access token for this request."""
    state = scope.get("state")
    return isinstance(state, dict) and state.get(PRINCIPAL_KEY) is not None


async def _send_rejection(
    send: Send, reason: CSRFReason, facts: Facts, *, websocket: bool = False
) -> None:
    """The refusal naming ``reason``: JSON for a client that asks for it, else HTML."""
    content_type, body = rejection_body(
        reason, json_format=wants_json(facts.accept, facts.content_type)
    )
    await send_refusal(send, reason.status, content_type, body, _NO_STORE, websocket=websocket)


async def _scan(scanner: FormTokenScanner, receive: Receive) -> tuple[ScanStatus, Receive] | None:
    """Read the body until ``scanner`` decides; a ``receive`` that replays what was read."""
    chunks: list[bytes] = []
    more = True
    status = ScanStatus.MORE
    while status is ScanStatus.MORE:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body = message.get("body", b"")
        more = bool(message.get("more_body", False))
        chunks.append(body)
        status = scanner.feed(body, more=more)
    pending = [b"".join(chunks)]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": more}
        return await receive()

    return status, replay
