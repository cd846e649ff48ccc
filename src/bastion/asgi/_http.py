"""The one place the ASGI layers send a response of their own (a refusal, a preflight's
answer, a report receiver's status), so that every layer's answer is built the same way.

A refusal is ``Content-Type`` and ``Content-Length`` first, then the layer's own headers
(``Cache-Control``, ``Retry-After``, the ``RateLimit`` fields), then its body in one message.
During a WebSocket handshake the same response goes out as the ``websocket.http.response``
messages (the ASGI extension a server offers for it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.asgi.types import Send

__all__ = ["WS_RESPONSE_EXTENSION", "refusal_headers", "send_refusal", "send_response"]

WS_RESPONSE_EXTENSION: Final = "websocket.http.response"
_HTTP: Final = ("http.response.start", "http.response.body")
_WS: Final = ("websocket.http.response.start", "websocket.http.response.body")


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
