"""``SecurityHeadersMiddleware`` for WSGI apps (Flask): the twin of :mod:`bastion.asgi.headers`.

Wrap the WSGI callable: ``app.wsgi_app = SecurityHeadersMiddleware(app.wsgi_app)``. It wraps
``start_response`` only: the body iterable passes through untouched (streaming keeps working).
The nonce is stored in ``environ["bastion.csp_nonce"]``; read it with :func:`csp_nonce`
(``csp_nonce(flask.request)``) or in Jinja2 through :func:`add_jinja2_globals`
(``add_jinja2_globals(app.jinja_env)``, then ``{{ csp_nonce() }}``).

Flask renders its own error pages (404, 500) through ``start_response``, so they carry the
headers. An exception that escapes a bare WSGI app is left to the server, which answers with
its own 500 page (a WSGI middleware cannot both re-raise and choose that page's headers).

Nonces come from :func:`secrets.token_hex` here: WSGI servers run requests on several threads
and this is thread-safe without a lock. The report budget is shared by all threads and is
guarded by a lock.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bastion.core.audit import bind_request_id
from bastion.core.client import TrustedProxies
from bastion.core.clock import Clock, system_clock
from bastion.core.headers import HeaderPolicy, HeaderRouter, Preset
from bastion.core.request import wsgi_path
from bastion.errors import AuditUnavailable, ConfigurationError
from bastion.slices import layer_off, layer_settings
from bastion.wsgi._http import audit_unavailable, describe_client, send_response, status_line

if TYPE_CHECKING:
    from types import TracebackType

    from bastion.config import Bastion
    from bastion.core.audit import Auditor
    from bastion.runtime import Runtime
    from bastion.wsgi.types import StartResponse, WSGIApp

__all__ = ["ENVIRON_KEY", "SecurityHeadersMiddleware", "add_jinja2_globals", "csp_nonce"]

logger = logging.getLogger("bastion.security.audit")

ENVIRON_KEY = "bastion.csp_nonce"

ExcInfo = tuple[type[BaseException], BaseException, "TracebackType | None"]


def _forwarded_https(proxies: TrustedProxies, environ: Mapping[str, Any]) -> bool:
    """Whether a trusted proxy reports that the client used HTTPS (see the ASGI twin)."""
    peer = environ.get("REMOTE_ADDR")
    if not proxies.trusts(peer):
        return False
    forwarded = environ.get("HTTP_FORWARDED")
    hops = environ.get("HTTP_X_FORWARDED_FOR")
    scheme, _host = proxies.forwarded_origin(
        peer,
        (forwarded,) if forwarded else (),
        proto=environ.get("HTTP_X_FORWARDED_PROTO"),
        forwarded_for=(hops,) if hops else (),
    )
    return scheme == "https"


def _latin1(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Names lowercased (HTTP names are case-insensitive; the policy matches lowercase)."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


class SecurityHeadersMiddleware:
    """Apply ``policy`` to every response of a WSGI app. Settings as in the ASGI twin,
    including the start-up check of each policy (warnings; refusals when ``production``)."""

    def __init__(
        self,
        app: WSGIApp,
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
        self._receiver = self._router.receiver
        # Without overrides or a report path the path decides nothing: it is not even read.
        self._routing = self._overrides or self._report_path is not None
        self._proxies = proxies if proxies is not None else TrustedProxies()
        self._forwarded = "HTTP_" + self._proxies.header.upper().replace("-", "_")
        self._behind_proxy = self._proxies.trusts_any  # see the ASGI twin
        header = self._router.request_id_header
        self._request_id_key = (
            None if header is None else "HTTP_" + header.upper().replace("-", "_")
        )
        self._lock = threading.Lock()
        self._describe = functools.partial(describe_client, proxies=self._proxies)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        compiled = self._compiled
        path = None
        if self._routing:
            path = wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
            if self._overrides:
                compiled = self._router.for_path(path)
        https = environ.get("wsgi.url_scheme") == "https"
        if self._behind_proxy and not https:
            https = _forwarded_https(self._proxies, environ)
        nonce = None
        if compiled.uses_nonce:
            text = secrets.token_hex(16)
            environ[ENVIRON_KEY] = text
            nonce = text.encode("ascii")

        started: list[bool] = []  # not empty once the app called start_response

        def start_with_headers(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            started.append(True)
            applied = compiled.apply(_latin1(headers), https, nonce)
            text = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in applied]
            if exc_info is None:
                return start_response(status, text)
            return start_response(status, text, exc_info)

        # Every audit event emitted while the app runs carries the request's id (events
        # emitted later, while the server iterates the body, do not).
        key = self._request_id_key
        bound = bind_request_id(
            None if key is None else self._router.request_id(environ.get(key)),
            describe=self._describe,
            source=environ,
        )
        try:
            if path is not None and path == self._report_path:
                return self._receive_report(environ, start_with_headers)
            return self.app(environ, start_with_headers)
        except AuditUnavailable as error:
            # Fail-closed auditing refused the action's event: the action did not happen, a
            # 503 to retry rather than a crash (start_response raises if headers went out).
            logger.warning("bastion: %s; answered 503 audit_unavailable", error)
            headers, body = audit_unavailable(environ)
            # PEP 3333: a second start_response passes exc_info (it replaces the first).
            exc_info = (type(error), error, error.__traceback__) if started else None
            start_with_headers(status_line(503), headers, exc_info)
            return [body]
        finally:
            bound.var.reset(bound)

    def _receive_report(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        receiver = self._receiver
        if receiver is None:  # pragma: no cover (the path is set only with a receiver)
            raise ConfigurationError("report path without a receiver")
        content_type = environ.get("CONTENT_TYPE", "")
        length = environ.get("CONTENT_LENGTH") or None
        peer = environ.get("REMOTE_ADDR") or None
        forwarded = environ.get(self._forwarded)
        values = () if forwarded is None else (forwarded,)
        address = self._proxies.client(peer, values)
        client_ip = None if address is None else str(address)
        key = self._proxies.key(peer, values)
        with self._lock:
            status = receiver.precheck(
                environ["REQUEST_METHOD"], content_type, length, client_ip, key
            )
        if status is None:
            if length is None and not environ.get("wsgi.input_terminated"):
                status = 411  # without a length a WSGI body cannot be read safely
            else:
                limit = receiver.max_bytes
                stream = environ["wsgi.input"]
                body = stream.read(limit + 1) if length is None else stream.read(int(length))
                if len(body) > limit:
                    status = receiver.too_large(client_ip)
                else:
                    status = receiver.accept(body, content_type, client_ip)
        extra = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in receiver.EXTRA_HEADERS.get(status, ())
        ]
        if status != 204:
            extra.append(("Content-Length", "0"))
        return send_response(start_response, status, extra)

    def __repr__(self) -> str:
        return f"SecurityHeadersMiddleware({self._router!r})"


def csp_nonce(request: Any) -> str:
    """The CSP nonce of ``request``: a WSGI environ or anything with ``.environ`` (Flask's
    ``request``). Raises :class:`~bastion.errors.ConfigurationError` when there is none."""
    environ = getattr(request, "environ", request)
    nonce = environ.get(ENVIRON_KEY) if isinstance(environ, Mapping) else None
    if not isinstance(nonce, str):
        raise ConfigurationError(
            "no CSP nonce on this request: wrap the WSGI app in SecurityHeadersMiddleware with "
            "a policy whose CSP uses NONCE (the strict and relaxed presets do)",
            setting="csp_policy",
        )
    return nonce


def add_jinja2_globals(env: Any) -> None:
    """Add ``csp_nonce()`` to a Jinja2 environment (``app.jinja_env`` in Flask).

    Flask puts ``request`` in every template context, which is where the nonce is read from.
    """
    import jinja2  # noqa: PLC0415 (optional dependency, needed only by apps that use Jinja2)

    @jinja2.pass_context
    def template_csp_nonce(context: Any) -> str:
        return csp_nonce(context["request"])

    env.globals["csp_nonce"] = template_csp_nonce
