"""Group ``csrf``: CSRFMiddleware against a pass-through layer and starlette-csrf, on a ``POST``.

Every case answers ``POST /transfer`` with 200 ``ok`` from the same inner app (a fresh start
message per request). Cases:

* ``pass-through``: an ASGI layer that only awaits the app (the baseline of every ratio);
* ``starlette-csrf``: its ``CSRFMiddleware`` with a valid cookie and ``x-csrftoken`` header
  (its only mode: signed double-submit, checked on every unsafe request);
* ``bastion-fetch-metadata``: bastion's middleware deciding from ``Sec-Fetch-Site:
  same-origin`` (what every current browser sends); the body is not read;
* ``bastion-origin``: decided by a matching ``Origin`` (browsers without Fetch Metadata);
* ``bastion-token``: no Fetch Metadata, no Origin (old browser, ``curl``): a signed,
  identity-bound double-submit cookie plus a masked header token, the same work as
  starlette-csrf's case plus the mask.

Targets (overhead above pass-through): fetch-metadata at most 0.3x starlette-csrf's, token at
most 0.5x.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING

from starlette_csrf import CSRFMiddleware as StarletteCSRF

from bastion.asgi.csrf import CSRFMiddleware
from bastion.core.csrf import CSRFConfig, DoubleSubmit, TokenSource, mask_secret
from bastion.core.keys import KeyRing
from bench.driver import call_asgi, http_scope
from bench.group import Group
from bench.groups.headers import PassThrough, make_inner_app
from bench.measure import async_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bench.driver import ASGIApp, Headers, Scope
    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP"]

PASS = "pass-through"
PEER = "starlette-csrf"
_SECRET = "bench-secret-" + "x" * 40
_BASE: Headers = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bastion-bench/1"),
    (b"accept", b"*/*"),
    (b"content-type", b"application/json"),
    (b"content-length", b"2"),
]


def _scope(*extra: tuple[bytes, bytes]) -> Scope:
    return http_scope("POST", "/transfer", headers=[*_BASE, *extra])


async def _check(name: str, app: ASGIApp, template: Scope) -> None:
    status, _headers, body = await call_asgi(app, template, b"{}")
    if (status, body) != (200, b"ok"):
        raise RuntimeError(f"csrf case {name!r} answered {status} {body[:120]!r}")


@asynccontextmanager
async def csrf_cases(_options: Options) -> AsyncIterator[list[Case]]:
    inner = make_inner_app()
    keyring = KeyRing.generate()
    bastion = CSRFMiddleware(
        inner,
        config=CSRFConfig(
            token_source=TokenSource.DOUBLE_SUBMIT, public_origins=("http://127.0.0.1:8000",)
        ),
        keyring=keyring,
        production=False,
    )
    cookie_value, secret = DoubleSubmit(keyring).issue("")
    peer = StarletteCSRF(inner, _SECRET)
    peer_token = peer.serializer.dumps("t" * 171)
    cases: list[tuple[str, ASGIApp, Scope, str | None]] = [
        (PASS, PassThrough(inner), _scope(), None),
        (
            PEER,
            peer,
            _scope(
                (b"cookie", b"csrftoken=" + peer_token.encode()),
                (b"x-csrftoken", peer_token.encode()),
            ),
            PASS,
        ),
        ("bastion-fetch-metadata", bastion, _scope((b"sec-fetch-site", b"same-origin")), PASS),
        ("bastion-origin", bastion, _scope((b"origin", b"http://127.0.0.1:8000")), PASS),
        (
            "bastion-token",
            bastion,
            _scope(
                (b"cookie", b"__Host-csrf=" + cookie_value.encode()),
                (b"x-csrf-token", mask_secret(secret).encode()),
            ),
            PASS,
        ),
    ]
    for name, app, template, _ in cases:
        await _check(name, app, template)
    yield [
        async_case(name, partial(call_asgi, app, template, b"{}"), baseline=baseline)
        for name, app, template, baseline in cases
    ]


GROUP = Group(
    name="csrf",
    title=(
        "In-process `POST /transfer` (JSON body) answered 200 `ok`; each CSRF middleware wraps "
        "the same app once; ratios against the pass-through layer. Targets: overhead of "
        "bastion-fetch-metadata <= 0.3x starlette-csrf's, bastion-token <= 0.5x."
    ),
    iterations=10_000,
    cases=csrf_cases,
)
