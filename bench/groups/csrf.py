"""Group ``csrf``: CSRFMiddleware against a pass-through layer and starlette-csrf.

Every case answers 200 ``ok`` from the same inner app (a fresh start message per request):
``POST /transfer`` with a JSON body, or for the ``-get`` cases ``GET /page`` from a returning
visitor (the bench's usual headers plus its cookies; ``-browser``: the ten headers of a
browser's navigation). Cases:

* ``pass-through``: an ASGI layer that only awaits the app (the baseline of every ratio);
* ``starlette-csrf``: its ``CSRFMiddleware`` with a valid cookie and ``x-csrftoken`` header
  (its only mode: signed double-submit, checked on every unsafe request);
* ``bastion-get`` / ``bastion-get-browser`` / ``bastion-get-double-submit``: a safe method,
  which needs no check, with the default token source (the session), the same with a
  browser's ten headers (the method-override headers are looked for among all of them), and
  with a signed double-submit cookie;
* ``bastion-fetch-metadata``: bastion's middleware deciding from ``Sec-Fetch-Site:
  same-origin`` (what every current browser sends); the body is not read;
* ``bastion-origin``: decided by a matching ``Origin`` (browsers without Fetch Metadata);
* ``bastion-token``: no Fetch Metadata, no Origin (old browser, ``curl``): a signed,
  identity-bound double-submit cookie plus a masked header token, the same work as
  starlette-csrf's case plus the mask.

Targets (issue 13, overhead above pass-through, in instructions: ``python -m
bench.instructions --only csrf``): a safe method within 3k instructions of the pass-through
layer; fetch-metadata and token each at most 0.3x starlette-csrf's.
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

__all__ = ["CASE_NAMES", "GROUP", "PASS", "build_cases"]

PASS = "pass-through"
PEER = "starlette-csrf"
_SECRET = "bench-secret-" + "x" * 40
_ORIGIN = "http://127.0.0.1:8000"
_POST: Headers = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bastion-bench/1"),
    (b"accept", b"*/*"),
    (b"content-type", b"application/json"),
    (b"content-length", b"2"),
]
_GET: Headers = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bastion-bench/1"),
    (b"accept", b"*/*"),
]
_BROWSER: Headers = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"),
    (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br, zstd"),
    (b"sec-fetch-dest", b"document"),
    (b"sec-fetch-mode", b"navigate"),
    (b"sec-fetch-site", b"none"),
    (b"sec-fetch-user", b"?1"),
]
_SESSION_COOKIE = b"__Host-bastion-session=" + b"s" * 43

CASE_NAMES = (
    PASS,
    PEER,
    "bastion-get",
    "bastion-get-browser",
    "bastion-get-double-submit",
    "bastion-fetch-metadata",
    "bastion-origin",
    "bastion-token",
)


def _post(*extra: tuple[bytes, bytes]) -> Scope:
    return http_scope("POST", "/transfer", headers=[*_POST, *extra])


def _get(*extra: tuple[bytes, bytes], base: Headers = _GET) -> Scope:
    return http_scope("GET", "/page", headers=[*base, *extra])


def build_cases() -> list[tuple[str, ASGIApp, Scope, str | None]]:
    """``(name, app, scope, baseline)`` of every case, in :data:`CASE_NAMES` order; shared by
    this group and ``python -m bench.instructions``."""
    inner = make_inner_app()
    keyring = KeyRing.generate()
    double = CSRFMiddleware(
        inner,
        config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT, public_origins=(_ORIGIN,)),
        keyring=keyring,
        production=False,
    )
    session = CSRFMiddleware(
        inner, config=CSRFConfig(public_origins=(_ORIGIN,)), keyring=keyring, production=False
    )
    cookie_value, secret = DoubleSubmit(keyring).issue("")
    returning = (b"cookie", _SESSION_COOKIE + b"; __Host-csrf=" + cookie_value.encode())
    peer = StarletteCSRF(inner, _SECRET)
    peer_token = peer.serializer.dumps("t" * 171)
    return [
        (PASS, PassThrough(inner), _post(), None),
        (
            PEER,
            peer,
            _post(
                (b"cookie", b"csrftoken=" + peer_token.encode()),
                (b"x-csrftoken", peer_token.encode()),
            ),
            PASS,
        ),
        ("bastion-get", session, _get((b"cookie", _SESSION_COOKIE)), PASS),
        (
            "bastion-get-browser",
            session,
            _get((b"cookie", _SESSION_COOKIE), base=_BROWSER),
            PASS,
        ),
        ("bastion-get-double-submit", double, _get(returning), PASS),
        ("bastion-fetch-metadata", double, _post((b"sec-fetch-site", b"same-origin")), PASS),
        ("bastion-origin", double, _post((b"origin", _ORIGIN.encode())), PASS),
        (
            "bastion-token",
            double,
            _post(
                (b"cookie", b"__Host-csrf=" + cookie_value.encode()),
                (b"x-csrf-token", mask_secret(secret).encode()),
            ),
            PASS,
        ),
    ]


async def _check(name: str, app: ASGIApp, template: Scope) -> None:
    status, _headers, body = await call_asgi(app, template, b"{}")
    if (status, body) != (200, b"ok"):
        raise RuntimeError(f"csrf case {name!r} answered {status} {body[:120]!r}")


@asynccontextmanager
async def csrf_cases(_options: Options) -> AsyncIterator[list[Case]]:
    cases = build_cases()
    for name, app, template, _ in cases:
        await _check(name, app, template)
    yield [
        async_case(name, partial(call_asgi, app, template, b"{}"), baseline=baseline)
        for name, app, template, baseline in cases
    ]


GROUP = Group(
    name="csrf",
    title=(
        "In-process `POST /transfer` (JSON body) or, for `-get`, a returning browser's "
        "`GET /page`, answered 200 `ok`; each CSRF middleware wraps the same app once; ratios "
        "against the pass-through layer. Targets: bastion-get within 3k instructions of "
        "pass-through; the overhead of bastion-fetch-metadata and bastion-token <= 0.3x "
        "starlette-csrf's."
    ),
    iterations=10_000,
    cases=csrf_cases,
)
