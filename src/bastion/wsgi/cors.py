"""``CORSMiddleware`` for WSGI apps (Flask): the twin of :mod:`bastion.asgi.cors`.

Wrap the WSGI callable: ``app.wsgi_app = CORSMiddleware(app.wsgi_app, policy)``. A preflight is
answered here (the app never runs); for every other request only ``start_response`` is wrapped
(the app's ``Access-Control-*`` headers replaced by the policy's, ``Vary: Origin`` merged in)
and the body iterable passes through untouched. :mod:`bastion.core.cors` has the decisions.

Two ``Origin`` headers: PEP 3333 servers (gunicorn, werkzeug's) join repeated headers with a
comma into one ``HTTP_ORIGIN``, which matches no origin, so the request gets no CORS header as
under ASGI. A server that kept only one of them would hide the repetition from any middleware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.core.audit import Auditor, EventName, Outcome
from bastion.core.client import TrustedProxies
from bastion.core.clock import Clock, system_clock
from bastion.core.cors import CompiledCORS, CORSPolicy, apply_headers
from bastion.core.environment import is_production
from bastion.core.request import normalize_method, wsgi_path
from bastion.errors import ConfigurationError
from bastion.slices import layer_settings, required_slice
from bastion.wsgi._http import send_response

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from bastion.config import Bastion
    from bastion.core.cors import CORSReason
    from bastion.runtime import Runtime
    from bastion.wsgi.types import StartResponse, WSGIApp

__all__ = ["CORSMiddleware"]

ExcInfo = tuple[type[BaseException], BaseException, "TracebackType | None"]


def _latin1(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1", "replace")


class CORSMiddleware:
    """Apply ``policy`` to every request of a WSGI app. Settings as in the ASGI twin."""

    def __init__(
        self,
        app: WSGIApp,
        policy: CORSPolicy | None = None,
        *,
        bastion: Bastion | Runtime | None = None,
        auditor: Auditor | None = None,
        proxies: TrustedProxies | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
    ) -> None:
        if bastion is not None:
            shared = layer_settings(
                bastion,
                "CORSMiddleware",
                "cors",
                policy=policy,
                auditor=auditor,
                proxies=proxies,
                clock=clock,
                production=production,
            )
            policy = required_slice(shared.config.cors, "CORSMiddleware", "cors")
            auditor, proxies, clock = shared.auditor, shared.proxies, shared.clock
            production = shared.production
        elif policy is None:
            raise ConfigurationError(
                "CORSMiddleware needs a CORSPolicy (or bastion=)", setting="policy"
            )
        self.app = app
        self._cors = CompiledCORS(
            policy, production=is_production() if production is None else production
        )
        self._auditor = auditor if auditor is not None else Auditor.default(None, clock)
        self._proxies = proxies if proxies is not None else TrustedProxies()
        self._forwarded = "HTTP_" + self._proxies.header.upper().replace("-", "_")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        cors = self._cors
        origin = _latin1(environ.get("HTTP_ORIGIN"))
        requested = environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD")
        method = environ.get("REQUEST_METHOD", "GET")
        if origin is not None and requested is not None and normalize_method(method) == "OPTIONS":
            answer = cors.preflight(
                origin,
                requested.encode("latin-1", "replace"),
                _latin1(environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS")),
                _latin1(environ.get("HTTP_ACCESS_CONTROL_REQUEST_PRIVATE_NETWORK")),
            )
            if answer.reason is not None:
                self._audit(environ, answer.reason, origin, requested)
            return send_response(
                start_response,
                answer.status,
                [(n.decode("latin-1"), v.decode("latin-1")) for n, v in answer.headers],
                answer.body,
            )
        extra = cors.simple(origin)
        vary = cors.vary

        def start_with_cors(
            status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
            applied = [
                (n.decode("latin-1"), v.decode("latin-1"))
                for n, v in apply_headers(raw, extra, vary=vary)
            ]
            if exc_info is None:
                return start_response(status, applied)
            return start_response(status, applied, exc_info)

        return self.app(environ, start_with_cors)

    def _audit(
        self, environ: dict[str, Any], reason: CORSReason, origin: bytes, method: str
    ) -> None:
        forwarded = environ.get(self._forwarded)
        address = self._proxies.client(
            environ.get("REMOTE_ADDR") or None, () if forwarded is None else (forwarded,)
        )
        self._auditor.emit(
            EventName.MALICIOUS_CORS,
            outcome=Outcome.BLOCKED,
            client_ip=None if address is None else str(address),
            details={
                "reason": reason.value,
                "origin": origin.decode("latin-1"),
                "method": method,
                "path": wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", "")),
            },
        )

    def __repr__(self) -> str:
        return f"CORSMiddleware({self._cors.policy!r})"
