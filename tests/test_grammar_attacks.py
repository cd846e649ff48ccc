"""Attacks on the path grammar, CORS, rate limits and Vary through the front door.

Each test drives a real Starlette or Flask app (httpx's ASGITransport, werkzeug's test client)
and asserts the exact answer an attacker or a confused client gets.
"""

from __future__ import annotations

import asyncio
import enum
import re
from typing import Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion.asgi import RateLimitMiddleware
from bastion.asgi.ratelimit import header_key
from bastion.core.csrf import CSRFConfig
from bastion.core.headers.router import HeaderRouter
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.wsgi import RateLimitMiddleware as WSGIRateLimitMiddleware

UNAVAILABLE = '{"error": "rate_limit_store_unavailable", "detail": "Service Unavailable"}'
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every call is refused


def dead_store() -> RedisStore:
    return RedisStore.from_url(DEAD_REDIS, socket_timeout=0.5, connect_timeout=0.5)


async def ok(_request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.mark.asyncio
async def test_fail_closed_outage_503_says_when_to_retry_asgi() -> None:
    store = dead_store()
    limiter = RateLimiter(store)
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", ok)]), limiter, Rule("api", "5/minute", on_failure="closed")
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/", headers={"Accept": "application/json"})
    finally:
        await limiter.aclose()
        await store.aclose()
    assert (response.status_code, response.text) == (503, UNAVAILABLE)
    assert response.headers.get_list("retry-after") == ["5"]
    assert "ratelimit" not in response.headers


def test_fail_closed_outage_503_says_when_to_retry_flask() -> None:
    store = dead_store()
    limiter = RateLimiter(store)
    app = flask.Flask(__name__)
    app.add_url_rule("/", "ok", lambda: "ok")
    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, limiter, Rule("api", "5/minute", on_failure="closed")
    )
    try:
        response = app.test_client().get("/", headers={"Accept": "application/json"})
    finally:
        asyncio.run(limiter.aclose())
        asyncio.run(store.aclose())
    assert (response.status_code, response.get_data(as_text=True)) == (503, UNAVAILABLE)
    assert response.headers.getlist("Retry-After") == ["5"]
    assert "RateLimit" not in response.headers


# -- header_key and a repeated header --------------------------------------------------------------


@pytest.mark.asyncio
async def test_header_key_cannot_be_escaped_by_repeating_the_header() -> None:
    """Starlette's ``request.headers["x-api-key"]`` (and bastion.apikeys' own examples) read the
    first value: a second ``X-Api-Key`` with fresh junk gave each request a new counter while
    the app still authenticated the first, so one key had no limit."""
    seen: list[str] = []

    async def api(request: Any) -> PlainTextResponse:
        seen.append(request.headers["x-api-key"])
        return PlainTextResponse("ok")

    limiter = RateLimiter(MemoryStore())
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/api", api)]),
        limiter,
        Rule("per-key", "2/minute", key=header_key("x-api-key")),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        statuses = [
            (await client.get("/api", headers=[("x-api-key", "k1"), ("x-api-key", f"j{n}")]))
            for n in range(3)
        ]
        plain = await client.get("/api", headers={"x-api-key": "k1"})
        other = await client.get("/api", headers={"x-api-key": "k2"})
    await limiter.aclose()
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert seen == ["k1", "k1", "k2"]  # the app read the first value: the one it is keyed by
    assert plain.status_code == 429  # the same counter as the key sent alone
    assert other.status_code == 200


# -- a whole-number cost of another int type -------------------------------------------------------


class Weight(enum.IntEnum):
    HEAVY = 3


@pytest.mark.asyncio
async def test_an_int_enum_cost_is_charged_not_called() -> None:
    """``Rule(cost=Weight.HEAVY)`` passed the start-up check (it is an int) but the engine's
    ``type(cost) is int`` test then called it as a function: a TypeError, a 500 on every
    request the rule covered."""
    limiter = RateLimiter(MemoryStore())
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", ok)]), limiter, Rule("heavy", "7/minute", cost=Weight.HEAVY)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        statuses = [(await client.get("/")).status_code for _ in range(3)]
    await limiter.aclose()
    assert statuses == [200, 200, 429]  # 3 + 3 of 7, then 3 more is over
    assert type(Rule("r", "1/second", cost=Weight.HEAVY).cost) is int


def test_an_int_enum_cost_is_charged_under_flask() -> None:
    limiter = RateLimiter(MemoryStore())
    app = flask.Flask(__name__)
    app.add_url_rule("/", "ok", lambda: "ok")
    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, limiter, Rule("heavy", "7/minute", cost=Weight.HEAVY)
    )
    client = app.test_client()
    assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]


# -- patterns that could never match a server-decoded path -----------------------------------------


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        ("/caf%C3%A9", "'/café'"),
        ("/files/a%2Fb/*", "'/files/a/b/*'"),
        ("/login?next=/admin", "'/login'"),
        ("/docs#top", "'/docs'"),
    ],
)
def test_a_pattern_the_server_decoded_path_never_has_is_refused(pattern: str, hint: str) -> None:
    """Servers decode percent-escapes and cut the query and fragment before any layer reads
    the path: ``Rule(path="/caf%C3%A9")`` was accepted and then never applied (a rate limit
    that silently limited nothing). Each layer taking a pattern refuses it at start-up."""
    with pytest.raises(ConfigurationError, match=re.escape(hint)) as raised:
        Rule("r", "1/minute", path=pattern)
    assert raised.value.setting == "path"
    with pytest.raises(ConfigurationError) as exempt:
        CSRFConfig(exempt=(pattern,))
    assert exempt.value.setting == "exempt"
    with pytest.raises(ConfigurationError) as route:
        HeaderRouter(overrides={pattern: "relaxed"}, production=False)
    assert route.value.setting == "overrides"


@pytest.mark.asyncio
async def test_the_decoded_spelling_limits_what_the_escaped_one_never_did() -> None:
    limiter = RateLimiter(MemoryStore())
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/café", ok)]), limiter, Rule("cafe", "1/minute", path="/café")
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        statuses = [(await client.get("/caf%C3%A9")).status_code for _ in range(2)]
    await limiter.aclose()
    assert statuses == [200, 429]


# -- Rule(methods=) that could never match a request -------------------------------------------


@pytest.mark.parametrize("methods", [[], ["POST "], ["PO ST"], [""], ["*"], ["pŏst"]])
def test_rule_methods_no_request_can_have_are_refused(methods: list[str]) -> None:
    """Each of these was accepted and left the rule covering no request at all: an empty set,
    a name with stray whitespace (``"GET, POST ".split(",")``), an empty name, ``*`` read as a
    wildcard, a name that is no HTTP token."""
    with pytest.raises(ConfigurationError) as raised:
        Rule("r", "1/minute", methods=methods)
    assert raised.value.setting == "methods"


@pytest.mark.asyncio
async def test_rule_methods_from_a_generator_still_cover_the_method() -> None:
    """A generator was consumed by the type check, leaving an empty set: no POST was limited."""
    limiter = RateLimiter(MemoryStore())
    rule = Rule("login", "1/minute", methods=(m for m in ["POST"]))
    app = RateLimitMiddleware(Starlette(routes=[Route("/", ok, methods=["POST"])]), limiter, rule)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        statuses = [(await client.post("/")).status_code for _ in range(2)]
    await limiter.aclose()
    assert statuses == [200, 429]


@pytest.mark.parametrize("name", ["x-api-key ", "", "x-api-key:", "x api key"])
def test_header_key_of_a_name_no_header_can_have_is_refused(name: str) -> None:
    """``header_key("x-api-key ")`` matched no header, so it returned ``None`` for every
    request: ``None`` exempts, and the rule limited nobody."""
    with pytest.raises(ConfigurationError) as raised:
        header_key(name)
    assert raised.value.setting == "name"
