"""Group ``asgi``: whole ASGI stacks driven in-process, against a raw ASGI floor app.

Every case answers ``GET /`` with 200 ``ok``. The floor is the cheapest possible ASGI app, so
a ratio reads as "this stack costs N floors"; the driver's own cost is inside the floor too.
Later issues add bastion's middleware stacks here, each as one more case against the floor.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.driver import call_asgi, http_scope, make_floor_app
from bench.group import Group
from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

    from bench.driver import ASGIApp, Scope
    from bench.group import Options
    from bench.measure import Case

__all__ = ["FLOOR", "GROUP", "STARLETTE", "make_starlette_app"]

FLOOR = "floor"
STARLETTE = "starlette"


def make_starlette_app() -> Starlette:
    """A plain Starlette app: one route, ``PlainTextResponse("ok")``, default middleware."""

    async def ok(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", ok)])


async def check_ok(name: str, app: ASGIApp, template: Scope) -> None:
    """Refuse to time a stack that does not answer 200 ``ok``: it would measure an error path."""
    status, _headers, body = await call_asgi(app, template)
    if (status, body) != (200, b"ok"):
        raise RuntimeError(f"asgi case {name!r} answered {status} {body[:80]!r}, not 200 b'ok'")


@asynccontextmanager
async def asgi_cases(_options: Options) -> AsyncIterator[list[Case]]:
    template = http_scope("GET", "/")
    apps: list[tuple[str, ASGIApp]] = [
        (FLOOR, make_floor_app()),
        (STARLETTE, make_starlette_app()),
    ]
    for name, app in apps:
        await check_ok(name, app, template)
    yield [
        async_case(name, partial(call_asgi, app, template), baseline=None if i == 0 else FLOOR)
        for i, (name, app) in enumerate(apps)
    ]


GROUP = Group(
    name="asgi",
    title=(
        "In-process `GET /` answered 200 `ok`; floor = raw ASGI app, no framework; "
        "starlette = `Starlette(routes=[Route('/', ...PlainTextResponse('ok'))])`."
    ),
    iterations=20_000,
    cases=asgi_cases,
)
