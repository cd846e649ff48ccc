"""Cross-origin pages read why they were limited: ``Retry-After``, ``RateLimit`` and
``RateLimit-Policy`` are in the CORS policy's default ``expose_headers``.

The headers describe the caller's own budget, which an allowed origin's page can already infer
from the 429 itself; without them a page cannot honour ``Retry-After`` and retries blindly.
A policy that lists its own ``expose_headers`` says exactly what is exposed (it replaces the
default; :data:`~bastion.core.cors.RATE_LIMIT_HEADERS` adds the three back). A disallowed
origin still gets no CORS header at all. Real apps (Starlette, a plain WSGI app) through
``protect()`` with a memory store and a FrozenClock.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import werkzeug.test
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import bastion.asgi
import bastion.wsgi
from bastion import Bastion
from bastion.core.clock import FrozenClock
from bastion.core.cors import RATE_LIMIT_HEADERS, CORSPolicy
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.keys import KeyRing
from bastion.engine.ratelimit import Rule
from bastion.stores.memory import MemoryStore

ORIGIN = "https://app.example"
EXPOSED = "retry-after, ratelimit, ratelimit-policy"


def config(policy: CORSPolicy) -> Bastion:
    clock = FrozenClock(1_700_000_000.0)
    return Bastion(
        store=MemoryStore(clock=clock),
        keyring=KeyRing.generate(),
        csrf=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        cors=policy,
        rate_limits=(Rule("api", "1/minute"),),
        clock=clock,
        environment="test",
    )


def starlette_app() -> Starlette:
    async def ok(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", ok)])


def wsgi_ok(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def twice(adapter: str, policy: CORSPolicy, origin: str) -> list[tuple[int, Any]]:
    headers = {"Origin": origin, "Accept": "application/json"}
    if adapter == "asgi":
        app = bastion.asgi.protect(starlette_app(), config(policy))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as c:
            answers = [await c.get("/", headers=headers) for _ in range(2)]
        return [(a.status_code, a.headers) for a in answers]
    client = werkzeug.test.Client(bastion.wsgi.protect(wsgi_ok, config(policy)))
    answers = [client.get("/", base_url="https://testserver", headers=headers) for _ in range(2)]
    return [(a.status_code, a.headers) for a in answers]


ADAPTERS = pytest.mark.parametrize("adapter", ["asgi", "wsgi"])


def test_the_default_list() -> None:
    assert RATE_LIMIT_HEADERS == ("retry-after", "ratelimit", "ratelimit-policy")
    assert CORSPolicy(allow_origins=(ORIGIN,)).expose_headers == RATE_LIMIT_HEADERS


@pytest.mark.asyncio
@ADAPTERS
async def test_a_429_is_readable_by_an_allowed_page(adapter: str) -> None:
    (first, first_headers), (status, headers) = await twice(
        adapter, CORSPolicy(allow_origins=(ORIGIN,)), ORIGIN
    )
    assert (first, first_headers["access-control-expose-headers"]) == (200, EXPOSED)
    assert first_headers["ratelimit"] == '"api";r=0;t=60'
    assert status == 429
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-expose-headers"] == EXPOSED
    assert headers["retry-after"] == "60"


@pytest.mark.asyncio
@ADAPTERS
async def test_a_disallowed_page_reads_nothing(adapter: str) -> None:
    answers = await twice(adapter, CORSPolicy(allow_origins=(ORIGIN,)), "https://evil.example")
    assert [status for status, _ in answers] == [200, 429]
    for _status, headers in answers:
        assert not [n for n, _v in headers.items() if n.lower().startswith("access-control-")]


@pytest.mark.asyncio
@ADAPTERS
async def test_an_explicit_list_replaces_the_default(adapter: str) -> None:
    own = CORSPolicy(allow_origins=(ORIGIN,), expose_headers=("X-Request-Id",))
    (_s, headers), _second = await twice(adapter, own, ORIGIN)
    assert headers["access-control-expose-headers"] == "x-request-id"
    both = CORSPolicy(allow_origins=(ORIGIN,), expose_headers=(*RATE_LIMIT_HEADERS, "X-Request-Id"))
    (_s, headers), _second = await twice(adapter, both, ORIGIN)
    assert headers["access-control-expose-headers"] == EXPOSED + ", x-request-id"
    none = CORSPolicy(allow_origins=(ORIGIN,), expose_headers=())
    (_s, headers), (status, limited) = await twice(adapter, none, ORIGIN)
    assert "access-control-expose-headers" not in headers
    assert (status, limited["access-control-allow-origin"]) == (429, ORIGIN)
