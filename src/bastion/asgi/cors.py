"""``CORSMiddleware`` for ASGI apps: a :class:`~bastion.core.cors.CORSPolicy` on every request.

Plain ASGI, one concern. A preflight is answered here from header bytes rendered at start-up
(``204``, or ``403`` with no CORS header and a ``malicious_cors`` audit event); every other
request goes to the app, and only its ``http.response.start`` is touched: the app's
``Access-Control-*`` headers are replaced by the policy's, and ``Vary: Origin`` is merged in.
WebSocket and lifespan scopes pass through untouched (CORS does not apply to WebSockets; the
CSRF layer checks their ``Origin``). :mod:`bastion.core.cors` has every decision and the reasons.

Install it inside the security-headers layer and outside rate limiting and sessions, so that a
preflight costs no store I/O: ``protect()`` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bastion.asgi._http import send_response
from bastion.core.audit import Auditor, EventName, Outcome
from bastion.core.client import TrustedProxies
from bastion.core.clock import Clock, system_clock
from bastion.core.cors import CompiledCORS, CORSPolicy, Preflight, apply_headers
from bastion.core.environment import is_production
from bastion.core.request import asgi_path, normalize_method
from bastion.errors import ConfigurationError
from bastion.slices import layer_settings, required_slice

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
    from bastion.config import Bastion
    from bastion.core.cors import CORSReason
    from bastion.runtime import Runtime

__all__ = ["CORSMiddleware"]


_ACRM: Final = b"access-control-request-method"
_ACRH: Final = b"access-control-request-headers"
_ACRPN: Final = b"access-control-request-private-network"


class CORSMiddleware:
    """Apply ``policy`` to every HTTP request of ``app``.

    ``auditor`` receives the ``malicious_cors`` event of each refused preflight (default: JSON
    lines on ``bastion.audit``), with the client address read through ``proxies``.
    ``production`` overrides ``ENV`` / ``BASTION_ENV`` for the start-up check of the policy.
    """

    def __init__(
        self,
        app: ASGIApp,
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
        self._forwarded = self._proxies.header.encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        origin = None
        if method != "GET" and (method == "OPTIONS" or normalize_method(method) == "OPTIONS"):
            requested = requested_headers = private = None
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value if origin is None else origin + b", " + value
                elif name == _ACRM:
                    requested = value if requested is None else requested + b", " + value
                elif name == _ACRH:
                    requested_headers = (
                        value if requested_headers is None else requested_headers + b"," + value
                    )
                elif name == _ACRPN:
                    private = value
            if origin is not None and requested is not None:
                answer = self._cors.preflight(origin, requested, requested_headers, private)
                if answer.reason is not None:
                    self._audit(scope, answer.reason, origin, requested)
                await _respond(send, answer)
                return
        else:
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value if origin is None else origin + b", " + value
        cors = self._cors

        # A plain function returning send's awaitable: no coroutine of our own per message.
        def send_with_cors(
            message: Message,
            send: Send = send,
            extra: tuple[tuple[bytes, bytes], ...] = cors.simple(origin),
            vary: bool = cors.vary,
        ) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message = {**message}  # never write into the app's dict: apps reuse them
                message["headers"] = apply_headers(message.get("headers") or (), extra, vary=vary)
            return send(message)

        await self.app(scope, receive, send_with_cors)

    def _audit(self, scope: Scope, reason: CORSReason, origin: bytes, method: bytes) -> None:
        forwarded = [v.decode("latin-1") for n, v in scope["headers"] if n == self._forwarded]
        client = scope.get("client")
        address = self._proxies.client(client[0] if client else None, forwarded)
        self._auditor.emit(
            EventName.MALICIOUS_CORS,
            outcome=Outcome.BLOCKED,
            client_ip=None if address is None else str(address),
            details={
                "reason": reason.value,
                "origin": origin.decode("latin-1"),
                "method": method.decode("latin-1"),
                "path": asgi_path(scope.get("path", "/"), scope.get("root_path", "")),
            },
        )

    def __repr__(self) -> str:
        return f"CORSMiddleware({self._cors.policy!r})"


async def _respond(send: Send, answer: Preflight) -> None:
    await send_response(send, answer.status, list(answer.headers), answer.body)
