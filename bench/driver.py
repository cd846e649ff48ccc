"""An in-process ASGI driver: a hand-built scope, a one-message receive, a collecting send.

No HTTP client and no socket sit between the bench and the app, so the figures are the cost of
the ASGI stack alone. The driver behaves like a server on the points an app can observe: each
call gets a fresh scope (an app or middleware may write into it), ``receive`` yields the whole
request body in one ``http.request`` message and afterwards blocks until the response is
complete before reporting ``http.disconnect``, and ``send`` refuses out-of-order messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "ASGIApp",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "call_asgi",
    "http_scope",
    "make_floor_app",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# Scope entries that are containers: copied per call so that one call's writes never leak into
# the next (uvicorn likewise copies the lifespan state into every request scope).
_MUTABLE_SCOPE_KEYS = ("headers", "state", "extensions")


def http_scope(
    method: str = "GET",
    path: str = "/",
    *,
    query_string: bytes = b"",
    headers: Headers | None = None,
) -> dict[str, Any]:
    """A complete HTTP/1.1 scope template, as uvicorn would build it for a local request."""
    if headers is None:
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"bastion-bench/1"),
            (b"accept", b"*/*"),
        ]
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": query_string,
        "headers": headers,
        "state": {},
    }


class _Exchange:
    """The server side of one request: what the app receives and what it sent."""

    __slots__ = ("_body", "_complete", "_done", "_request_sent", "chunks", "headers", "status")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._request_sent = False
        self._complete = False
        self._done: asyncio.Event | None = None  # created only if the app listens for disconnect
        self.status: int | None = None
        self.headers: Headers = []
        self.chunks: list[bytes] = []

    async def receive(self) -> Message:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        if not self._complete:
            if self._done is None:
                self._done = asyncio.Event()
            await self._done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.status is not None:
                raise RuntimeError("app sent http.response.start twice")
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
        elif kind == "http.response.body":
            if self.status is None:
                raise RuntimeError("app sent http.response.body before http.response.start")
            if self._complete:
                raise RuntimeError("app sent http.response.body after the final body message")
            self.chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                self._complete = True
                if self._done is not None:
                    self._done.set()
        else:
            raise RuntimeError(f"driver does not handle ASGI message type {kind!r}")

    def result(self) -> tuple[int, Headers, bytes]:
        if self.status is None:
            raise RuntimeError("app returned without sending http.response.start")
        if not self._complete:
            raise RuntimeError("app returned before sending the final http.response.body")
        return self.status, self.headers, b"".join(self.chunks)


async def call_asgi(
    app: ASGIApp, scope_template: Scope, body: bytes = b""
) -> tuple[int, Headers, bytes]:
    """Run one HTTP request through ``app``; ``(status, headers, body)`` of the response.

    ``scope_template`` is never modified: the app gets a shallow copy whose container entries
    (headers, state, extensions) are copied too.
    """
    scope = dict(scope_template)
    for key in _MUTABLE_SCOPE_KEYS:
        value = scope.get(key)
        if value is not None:
            scope[key] = value.copy()
    exchange = _Exchange(body)
    await app(scope, exchange.receive, exchange.send)
    return exchange.result()


def make_floor_app() -> ASGIApp:
    """The floor: a raw ASGI app that answers 200 ``ok`` with the headers Starlette would send.

    Everything it sends is built once here, so its cost is the driver plus two ``send`` awaits.
    """
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-length", b"2"),
            (b"content-type", b"text/plain; charset=utf-8"),
        ],
    }
    body: Message = {"type": "http.response.body", "body": b"ok", "more_body": False}

    async def floor_app(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send(start)
        await send(body)

    return floor_app
