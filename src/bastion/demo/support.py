"""Small parts of the demo that are not request handlers.

* :func:`read_form`: a form's text fields, its uploads closed (the demo takes none).
* :class:`RecentEvents`: an :class:`~bastion.core.audit.AuditSink` that keeps the last events
  in a bounded ring buffer (owned by the app object, never module state) for the ``/audit``
  page, and passes every event on to another sink (the ``bastion.audit`` logger).
* :class:`FriendlyErrors`: ASGI middleware that turns bastion's own terse refusals (the CSRF
  403, the rate limiter's 429 and 503, the session store's 503) into the demo's HTML error page,
  keeping their status and ``Retry-After``. Responses the app rendered itself and JSON answers
  pass unchanged. It sits inside :class:`~bastion.asgi.SecurityHeadersMiddleware`, so the
  friendly pages carry the security headers and the CSP nonce.
"""

from __future__ import annotations

import collections
import html
import re
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from starlette.requests import Request

    from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
    from bastion.core.audit import AuditEvent, AuditSink

    Renderer = Callable[[Scope, int, str, str | None], bytes]

__all__ = ["RENDERED_KEY", "FriendlyErrors", "RecentEvents", "mark_rendered", "read_form"]

RENDERED_KEY: Final = "bastion.demo.rendered"
"""Scope key set when the app itself started the response (so it is left alone)."""

_FRIENDLY: Final = frozenset({403, 413, 429, 503})
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_MAX_BODY: Final = 64 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """The text fields of the request's form (the last value of a repeated name, as
    ``form[name]`` gives); a file sent anyway is dropped and its spooled file closed, so no
    upload is left open after the handler."""
    async with request.form() as form:
        return {name: value for name, value in form.multi_items() if isinstance(value, str)}


class RecentEvents:
    """The last ``size`` audit events, newest last, then ``forward`` (another sink)."""

    __slots__ = ("_events", "_forward")

    def __init__(self, forward: AuditSink | None = None, *, size: int = 500) -> None:
        self._events: collections.deque[AuditEvent] = collections.deque(maxlen=size)
        self._forward = forward

    def emit(self, event: AuditEvent) -> None:
        self._events.append(event)
        if self._forward is not None:
            self._forward.emit(event)

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(tuple(self._events))

    def __len__(self) -> int:
        return len(self._events)

    def __repr__(self) -> str:
        return f"RecentEvents({len(self._events)}/{self._events.maxlen})"


def mark_rendered(app: ASGIApp) -> ASGIApp:
    """Wrap the innermost app so that its responses are marked as its own."""

    async def marked(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def marking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                scope[RENDERED_KEY] = True
            await send(message)

        await app(scope, receive, marking_send)

    return marked


class FriendlyErrors:
    """Replace bastion's plain 403/413/429/503 bodies with ``render(scope, status, text,
    retry_after)`` (HTML). See the module docstring."""

    __slots__ = ("_app", "_render")

    def __init__(self, app: ASGIApp, render: Renderer) -> None:
        self._app = app
        self._render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        held: Message | None = None
        chunks: list[bytes] = []
        size = 0

        async def friendly_send(message: Message) -> None:
            nonlocal held, size
            if message["type"] == "http.response.start":
                if _replaceable(scope, message):
                    held = message
                    return
                await send(message)
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            size += len(body)
            if size <= _MAX_BODY:
                chunks.append(body)
            if message.get("more_body", False):
                return
            await self._send_page(scope, send, held, b"".join(chunks))

        await self._app(scope, receive, friendly_send)

    async def _send_page(self, scope: Scope, send: Send, start: Message, body: bytes) -> None:
        status = int(start["status"])
        kept: list[tuple[bytes, bytes]] = []
        retry_after: str | None = None
        for name, value in start.get("headers", ()):
            lower = name.lower()
            if lower in {b"content-type", b"content-length"}:
                continue
            if lower == b"retry-after":
                retry_after = value.decode("latin-1")
            kept.append((name, value))
        text = _SPACE.sub(" ", _TAG.sub(" ", body.decode("utf-8", "replace"))).strip()
        page = self._render(scope, status, html.unescape(text), retry_after)
        kept += [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(page)).encode("ascii")),
        ]
        await send({"type": "http.response.start", "status": status, "headers": kept})
        await send({"type": "http.response.body", "body": page, "more_body": False})


def _replaceable(scope: Scope, message: Message) -> bool:
    if message["status"] not in _FRIENDLY or scope.get(RENDERED_KEY):
        return False
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            return not value.lower().startswith(b"application/json")
    return True
