"""Group ``headers``: SecurityHeadersMiddleware against a pass-through layer and secure.py.

Every case answers ``GET /`` with 200 ``ok`` from the same inner app. Unlike the ``asgi``
floor, this inner app builds a fresh ``http.response.start`` message per request, as every
framework does: secure.py's ``SecureASGIMiddleware`` writes its headers into the message it is
given, and over a reused message its header list would grow with every request.

Cases: ``inner`` (the app alone), ``pass-through`` (an ASGI layer that only awaits the app),
``send-wrapper`` (a layer that wraps ``send`` and forwards every message: the least any header
middleware does), ``bastion-strict`` (default policy: a fresh CSP nonce per response),
``bastion-api`` (no nonce), ``secure.py`` (``SecureASGIMiddleware`` with its default headers).
The target: bastion-strict at most 1 µs above pass-through, and below secure.py.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from secure.middleware.asgi import SecureASGIMiddleware

from bastion.asgi.headers import SecurityHeadersMiddleware
from bench.driver import call_asgi, http_scope
from bench.group import Group
from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bench.driver import ASGIApp, Message, Receive, Scope, Send
    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP", "PassThrough", "SendWrapper", "make_inner_app"]

INNER = "inner"
PASS = "pass-through"


def make_inner_app() -> ASGIApp:
    """A raw ASGI app answering 200 ``ok`` with a fresh start message (and header list) per call."""
    body: Message = {"type": "http.response.body", "body": b"ok", "more_body": False}

    async def inner(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", b"2"),
                    (b"content-type", b"text/plain; charset=utf-8"),
                ],
            }
        )
        await send(body)

    return inner


class PassThrough:
    """An ASGI layer that does nothing but call the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class SendWrapper:
    """An ASGI layer that wraps ``send`` and forwards every message unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def forward(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, forward)


async def _check(name: str, app: ASGIApp, template: Scope) -> None:
    status, headers, body = await call_asgi(app, template)
    if (status, body) != (200, b"ok"):
        raise RuntimeError(f"headers case {name!r} answered {status} {body[:80]!r}")
    names = {n.lower() for n, _ in headers}
    if name.startswith(("bastion", "secure")) and b"x-content-type-options" not in names:
        raise RuntimeError(f"headers case {name!r} sent no security headers: {sorted(names)}")
    if len(headers) > 40:
        raise RuntimeError(f"headers case {name!r} sent {len(headers)} headers")


@asynccontextmanager
async def headers_cases(_options: Options) -> AsyncIterator[list[Case]]:
    template = http_scope("GET", "/")
    inner = make_inner_app()
    apps: list[tuple[str, ASGIApp, str | None]] = [
        (INNER, inner, None),
        (PASS, PassThrough(inner), INNER),
        ("send-wrapper", SendWrapper(inner), PASS),
        ("bastion-strict", SecurityHeadersMiddleware(inner), PASS),
        ("bastion-api", SecurityHeadersMiddleware(inner, "api"), PASS),
        ("secure.py", SecureASGIMiddleware(inner), PASS),
    ]
    for name, app, _ in apps:
        await _check(name, app, template)
    yield [
        async_case(name, partial(call_asgi, app, template), baseline=baseline)
        for name, app, baseline in apps
    ]


GROUP = Group(
    name="headers",
    title=(
        "In-process `GET /` answered 200 `ok` by a raw ASGI app (fresh start message per "
        "request); each middleware wraps it once; ratios against the pass-through layer."
    ),
    iterations=20_000,
    cases=headers_cases,
)
