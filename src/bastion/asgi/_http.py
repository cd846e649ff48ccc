"""The one place the ASGI layers send a response of their own (a refusal, a preflight's
answer, a report receiver's status), so that every layer's answer is built the same way.

A refusal is ``Content-Type`` and ``Content-Length`` first, then the layer's own headers
(``Cache-Control``, ``Retry-After``, the ``RateLimit`` fields), then its body in one message.
During a WebSocket handshake the same response goes out as the ``websocket.http.response``
messages (the ASGI extension a server offers for it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from bastion.core.refusal import AUDIT_UNAVAILABLE, refusal_body

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.asgi.types import Receive, Scope, Send
    from bastion.core.client import TrustedProxies

__all__ = [
    "WS_RESPONSE_EXTENSION",
    "AuditUnavailableResponse",
    "audit_unavailable",
    "audit_unavailable_handler",
    "client_address",
    "describe_client",
    "refusal_headers",
    "send_refusal",
    "send_response",
]

WS_RESPONSE_EXTENSION: Final = "websocket.http.response"
_HTTP: Final = ("http.response.start", "http.response.body")
_WS: Final = ("websocket.http.response.start", "websocket.http.response.body")
logger = logging.getLogger("bastion.security.audit")


async def send_response(
    send: Send,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    websocket: bool = False,
) -> None:
    """Send a whole response: its start with ``headers`` as given, then ``body`` at once."""
    start, whole = _WS if websocket else _HTTP
    await send({"type": start, "status": status, "headers": headers})
    await send({"type": whole, "body": body})  # more_body defaults to False: the whole body


def refusal_headers(
    content_type: bytes, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()
) -> list[tuple[bytes, bytes]]:
    """The headers of a refusal whose body is ``body``: its type and length, then ``extra``."""
    return [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode("ascii")),
        *extra,
    ]


async def send_refusal(
    send: Send,
    status: int,
    content_type: bytes,
    body: bytes,
    extra: Iterable[tuple[bytes, bytes]] = (),
    *,
    websocket: bool = False,
) -> None:
    """Send a refusal (:func:`refusal_headers`, then ``body``): :func:`send_response`'s two
    messages, sent here rather than through it, since a flood is all refusals and each
    coroutine level costs about a thousand instructions on every one."""
    start, whole = _WS if websocket else _HTTP
    headers = refusal_headers(content_type, body, extra)
    await send({"type": start, "status": status, "headers": headers})
    await send({"type": whole, "body": body})


def client_address(scope: Scope, proxies: TrustedProxies | None) -> str | None:
    """The client's address for an audit event (through the trusted proxies)."""
    client = scope.get("client")
    peer = client[0] if client else None
    if proxies is None or not proxies.trusts_any:
        return peer
    wanted = proxies.header.encode("ascii")
    values = [v.decode("latin-1") for n, v in scope.get("headers") or () if n == wanted]
    address = proxies.client(peer, values)
    return None if address is None else str(address)


def describe_client(scope: Scope, proxies: TrustedProxies | None) -> tuple[str | None, str | None]:
    """``(user agent, client address)`` of a request, for its audit events (the first
    ``User-Agent`` header; :func:`client_address`)."""
    agent = None
    for name, value in scope.get("headers") or ():
        if name == b"user-agent":
            agent = value.decode("latin-1")
            break
    return agent, client_address(scope, proxies)


def audit_unavailable(scope: Scope) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers and body of the ``503 audit_unavailable`` refusal (with ``Retry-After``)
    for a request whose action the fail-closed audit trail could not record."""
    accept = content_type = None
    for name, value in scope.get("headers") or ():
        if name == b"accept" and accept is None:
            accept = value.decode("latin-1")
        elif name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
    kind, body = refusal_body(AUDIT_UNAVAILABLE, accept=accept, content_type=content_type)
    extra = [(b"retry-after", b"1"), (b"cache-control", b"no-store")]
    return refusal_headers(kind, body, extra), body


class AuditUnavailableResponse:
    """The ``503 audit_unavailable`` refusal as an ASGI app: what a framework's exception
    handler returns (Starlette and FastAPI call the handler's result with the request's
    ``scope, receive, send``)."""

    __slots__ = ()

    async def __call__(self, scope: Scope, _receive: Receive, send: Send) -> None:
        headers, body = audit_unavailable(scope)
        await send_response(send, 503, headers, body)


_AUDIT_RESPONSE: Final = AuditUnavailableResponse()


async def audit_unavailable_handler(_request: Any, error: Exception) -> AuditUnavailableResponse:
    """A Starlette/FastAPI exception handler for :class:`~bastion.errors.AuditUnavailable`
    raised inside the app (a ``require`` dependency's denial, the app's own event): the action
    was not done, so the answer is ``503 audit_unavailable``, not the framework's 500.
    :func:`bastion.asgi.protect` installs it on a Starlette or FastAPI app it wraps."""
    logger.warning("bastion: %s; answered 503 audit_unavailable", error)
    return _AUDIT_RESPONSE
