"""Group ``cors``: bastion's CORSMiddleware against starlette's, request kind by request kind.

Every case wraps the same inner app (``GET /`` and ``PUT /`` answered 200 ``ok`` with a fresh
start message). Both layers hold the same policy: one exact origin with credentials, three
methods, one request header, one exposed header. Request kinds:

* ``get-allowed``: ``GET`` with the allowed ``Origin`` (the echoed origin, credentials,
  ``Vary: Origin``);
* ``get-no-origin``: ``GET`` without ``Origin`` (a same-origin navigation; ``Vary`` only);
* ``get-disallowed``: ``GET`` from another origin (no CORS header, ``Vary`` only);
* ``preflight``: an allowed ``OPTIONS`` preflight, answered by the layer, the app never runs.

For each kind, ``starlette-*`` is measured against the ``pass-through`` layer and
``bastion-*`` against ``starlette-*`` of the same kind (the ratio in the table); the overhead
ratio, (bastion - pass-through) / (starlette - pass-through), follows from the medians.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from starlette.middleware.cors import CORSMiddleware as StarletteCORS

from bastion.asgi.cors import CORSMiddleware
from bastion.core.cors import CORSPolicy
from bench.driver import call_asgi, http_scope
from bench.group import Group
from bench.groups.headers import PassThrough, make_inner_app
from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bench.driver import ASGIApp, Headers, Scope
    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP", "ORIGIN", "POLICY", "request_scope", "starlette_cors"]

PASS = "pass-through"
ORIGIN = b"https://app.example.com"
POLICY = CORSPolicy(
    allow_origins=(ORIGIN.decode(),),
    allow_methods=("GET", "POST", "PUT"),
    allow_headers=("content-type",),
    expose_headers=("x-request-id",),
    allow_credentials=True,
)
_BASE: Headers = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"bastion-bench/1"),
    (b"accept", b"*/*"),
]
KINDS: dict[str, tuple[str, Headers]] = {
    "get-allowed": ("GET", [*_BASE, (b"origin", ORIGIN)]),
    "get-no-origin": ("GET", list(_BASE)),
    "get-disallowed": ("GET", [*_BASE, (b"origin", b"https://evil.example")]),
    "preflight": (
        "OPTIONS",
        [
            *_BASE,
            (b"origin", ORIGIN),
            (b"access-control-request-method", b"PUT"),
            (b"access-control-request-headers", b"content-type"),
        ],
    ),
}


def request_scope(kind: str) -> Scope:
    method, headers = KINDS[kind]
    return http_scope(method, "/", headers=headers)


def starlette_cors(app: ASGIApp) -> ASGIApp:
    """starlette's CORSMiddleware with the settings of :data:`POLICY`."""
    return StarletteCORS(
        app,
        allow_origins=[ORIGIN.decode()],
        allow_methods=["GET", "POST", "PUT"],
        allow_headers=["content-type"],
        expose_headers=["x-request-id"],
        allow_credentials=True,
    )


async def _check(name: str, kind: str, app: ASGIApp) -> None:
    status, headers, _ = await call_asgi(app, request_scope(kind))
    found = dict(headers)
    allowed = found.get(b"access-control-allow-origin")
    if kind == "preflight":
        if status not in {200, 204} or allowed != ORIGIN:
            raise RuntimeError(f"cors case {name!r} refused the preflight: {status} {headers}")
        return
    if status != 200:
        raise RuntimeError(f"cors case {name!r} answered {status}")
    if name == PASS:
        return
    if (allowed == ORIGIN) is not (kind == "get-allowed") or b"vary" not in found:
        raise RuntimeError(f"cors case {name!r} answered {kind} with {headers}")


@asynccontextmanager
async def cors_cases(_options: Options) -> AsyncIterator[list[Case]]:
    inner = make_inner_app()
    layers: list[tuple[str, ASGIApp, str | None]] = [(PASS, PassThrough(inner), None)]
    bastion = CORSMiddleware(inner, POLICY, production=False)
    starlette = starlette_cors(inner)
    cases: list[Case] = []
    await _check(PASS, "get-allowed", layers[0][1])
    cases.append(async_case(PASS, partial(call_asgi, layers[0][1], request_scope("get-allowed"))))
    for kind in KINDS:
        peer = f"starlette-{kind}"
        for name, app, baseline in (
            (peer, starlette, PASS),
            (f"bastion-{kind}", bastion, peer),
        ):
            await _check(name, kind, app)
            cases.append(
                async_case(name, partial(call_asgi, app, request_scope(kind)), baseline=baseline)
            )
    yield cases


GROUP = Group(
    name="cors",
    title=(
        "In-process requests through a CORS layer over a raw ASGI app (fresh start message per "
        "request); bastion's CORSMiddleware against starlette's with the same policy, kind by "
        "kind."
    ),
    iterations=5_000,
    cases=cors_cases,
)
