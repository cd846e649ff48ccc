"""Rate limits in real Starlette, FastAPI and Flask apps: 429s, headers, keys, outages."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute

from bastion.asgi import RateLimitMiddleware
from bastion.asgi.ratelimit import client_ip_key, header_key, path_key, request_view, user_key
from bastion.core.client import TrustedProxies
from bastion.core.clock import FrozenClock
from bastion.engine.ratelimit import RateLimiter, RateLimitResult, Rule
from bastion.integrations.ratelimit import RateLimit, flask_limit, limit
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.wsgi import RateLimitMiddleware as WSGIRateLimitMiddleware
from bastion.wsgi.ratelimit import request_view as environ_view

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from starlette.requests import Request

    from bastion.core.request import RequestView
    from bastion.testing.redis_server import RedisServer

NOW = 1_700_000_000.0  # 20 s into a minute: a fixed 60 s window resets in 40 s
CLIENT = ("203.0.113.7", 4000)

# bastion's refusals as these clients get them: httpx sends Accept: */* and werkzeug's test
# client no Accept, so the bodies are JSON (bastion.core.refusal)
LIMITED = '{"error": "rate_limited", "detail": "Too Many Requests"}'
UNAVAILABLE = '{"error": "rate_limit_store_unavailable", "detail": "Service Unavailable"}'


def memory_limiter() -> RateLimiter:
    return RateLimiter(MemoryStore(clock=FrozenClock(NOW)))


async def ok(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_app(limiter: RateLimiter, rules: Sequence[Rule], **options: Any) -> Starlette:
    return Starlette(
        routes=[
            StarletteRoute("/", ok),
            StarletteRoute("/api/items", ok, methods=["GET", "POST"]),
            StarletteRoute("/login", ok, methods=["POST"]),
        ],
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter, rules=rules, **options)],
    )


def client_for(app: object, client: tuple[str, int] = CLIENT) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.asyncio
async def test_starlette_middleware_429_exact() -> None:
    rule = Rule("site", "2/minute", strategy="fixed_window")
    app = starlette_app(memory_limiter(), [rule], legacy_headers=True)
    async with client_for(app) as client:
        first = await client.get("/")
        assert first.status_code == 200
        assert first.text == "ok"
        assert first.headers["ratelimit-policy"] == '"site";q=2;w=60'
        assert first.headers["ratelimit"] == '"site";r=1;t=40'
        assert first.headers["x-ratelimit-remaining"] == "1"
        assert "retry-after" not in first.headers
        assert (await client.get("/")).headers["ratelimit"] == '"site";r=0;t=40'
        refused = await client.get("/")
        assert refused.status_code == 429
        assert refused.text == LIMITED
        assert refused.headers["content-type"] == "application/json"
        assert refused.headers["retry-after"] == "40"
        assert refused.headers["ratelimit-policy"] == '"site";q=2;w=60'
        assert refused.headers["ratelimit"] == '"site";r=0;t=40'
        assert refused.headers["x-ratelimit-limit"] == "2"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["x-ratelimit-reset"] == "40"
    async with client_for(app, ("198.51.100.1", 1)) as other:
        assert (await other.get("/")).status_code == 200  # another client, another counter


@pytest.mark.asyncio
async def test_route_rules_global_and_per_route() -> None:
    rules = [
        Rule("site", "100/minute", strategy="fixed_window"),
        Rule("login", "1/minute", strategy="fixed_window", path="/login", methods={"POST"}),
        Rule(
            "api",
            "10/minute",
            strategy="token_bucket",
            path="/api/*",
            key=header_key("x-api-key"),
            cost=lambda r: 5 if r.method == "POST" else 1,
        ),
    ]
    app = starlette_app(memory_limiter(), rules)
    async with client_for(app) as client:
        assert (await client.post("/login")).status_code == 200
        refused = await client.post("/login")
        assert refused.status_code == 429
        assert refused.headers["ratelimit-policy"] == '"site";q=100;w=60, "login";q=1;w=60'
        assert refused.headers["ratelimit"] == '"site";r=98;t=40, "login";r=0;t=40'
        assert refused.headers["retry-after"] == "40"
        # no API key: the api route is exempt, only the site rule counts
        assert (await client.get("/api/items")).headers["ratelimit-policy"] == '"site";q=100;w=60'
        key = {"x-api-key": "secret-key-1"}
        assert (await client.post("/api/items", headers=key)).status_code == 200
        assert (await client.post("/api/items", headers=key)).status_code == 200
        third = await client.post("/api/items", headers=key)
        assert third.status_code == 429
        assert third.headers["retry-after"] == "30"  # 5 tokens at one per 6 s
        assert (await client.get("/api/items", headers={"x-api-key": "other"})).status_code == 200


@pytest.mark.asyncio
async def test_client_ip_through_trusted_proxy_only() -> None:
    rule = Rule("site", "1/minute")
    key = client_ip_key(TrustedProxies(["10.0.0.0/8"]))
    app = starlette_app(memory_limiter(), [rule], key=key)
    spoof = {"x-forwarded-for": "1.1.1.1"}
    async with client_for(app, ("10.0.0.5", 1)) as proxy:
        assert (await proxy.get("/", headers=spoof)).status_code == 200
        assert (await proxy.get("/", headers={"x-forwarded-for": "2.2.2.2"})).status_code == 200
        assert (await proxy.get("/", headers=spoof)).status_code == 429
    async with client_for(app, ("203.0.113.9", 1)) as direct:
        # a direct client cannot pick its key with the header
        assert (await direct.get("/", headers={"x-forwarded-for": "3.3.3.3"})).status_code == 200
        assert (await direct.get("/", headers={"x-forwarded-for": "4.4.4.4"})).status_code == 429
    async with (
        client_for(app, ("2001:db8::1", 1)) as v6a,
        client_for(app, ("2001:db8::2", 1)) as v6b,
    ):
        assert (await v6a.get("/")).status_code == 200
        assert (await v6b.get("/")).status_code == 429  # same /64


@pytest.mark.asyncio
async def test_app_headers_are_not_clobbered() -> None:
    async def custom(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok", headers={"RateLimit": "app-owned"})

    app = Starlette(
        routes=[StarletteRoute("/", custom)],
        middleware=[
            Middleware(RateLimitMiddleware, limiter=memory_limiter(), rules=Rule("s", "5/s"))
        ],
    )
    async with client_for(app) as client:
        response = await client.get("/")
    assert response.headers.get_list("ratelimit") == ["app-owned"]
    assert response.headers["ratelimit-policy"] == '"s";q=5;w=1'


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_stopped_mid_run_never_500(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    server = start_redis_server()
    backend = RedisStore.from_url(server.url, socket_timeout=1, connect_timeout=1)
    limiter = RateLimiter(backend)
    rules = [
        Rule("open", "2/minute", on_failure="open", path="/"),
        Rule("closed", "100/minute", on_failure="closed", path="/api/*"),
        Rule("local", "3/hour", on_failure="fallback", strategy="fixed_window", path="/login/*"),
    ]
    app = starlette_app(limiter, rules)
    try:
        async with client_for(app) as client:
            assert [(await client.get("/")).status_code for _ in range(3)] == [200, 200, 429]
            assert (await client.get("/api/items")).status_code == 200
            server.stop()
            statuses = [(await client.get("/")).status_code for _ in range(5)]
            assert statuses == [200] * 5  # fail open: admitted without headers
            assert "ratelimit" not in (await client.get("/")).headers
            closed = [(await client.get("/api/items")) for _ in range(5)]
            assert {(r.status_code, r.text) for r in closed} == {(503, UNAVAILABLE)}
            local = [(await client.post("/login")).status_code for _ in range(5)]
            assert local == [200, 200, 200, 429, 429]
            server.start()
            assert (await client.get("/")).status_code == 429  # shared counter again
    finally:
        await limiter.aclose()
        await backend.aclose()


# -- FastAPI ----------------------------------------------------------------------------------


def fastapi_app(limiter: RateLimiter) -> FastAPI:
    app = FastAPI()
    dependency = RateLimit(limiter, "2/minute", name="items", strategy="fixed_window")

    @app.get("/items")
    async def items(result: RateLimitResult | None = Depends(dependency)) -> dict[str, int]:  # noqa: B008
        return {"remaining": result.decisions[0].remaining if result else -1}

    @app.get("/hello/{name}")
    @limit(limiter, "1/minute", strategy="sliding_window")
    async def hello(name: str, loud: bool = False) -> dict[str, str]:  # no request parameter
        return {"hello": name.upper() if loud else name}

    return app


@pytest.mark.asyncio
async def test_fastapi_dependency_and_decorator() -> None:
    app = fastapi_app(memory_limiter())
    async with client_for(app) as client:
        first = await client.get("/items")
        assert first.json() == {"remaining": 1}
        assert first.headers["ratelimit"] == '"items";r=1;t=40'
        assert (await client.get("/items")).status_code == 200
        refused = await client.get("/items")
        assert refused.status_code == 429
        assert refused.text == LIMITED  # the middleware's body, not FastAPI's {"detail": ...}
        assert refused.headers["retry-after"] == "40"
        assert refused.headers["ratelimit"] == '"items";r=0;t=40'
        assert refused.headers["ratelimit-policy"] == '"items";q=2;w=60'

        hello = await client.get("/hello/ada", params={"loud": "true"})
        assert (hello.status_code, hello.json()) == (200, {"hello": "ADA"})
        again = await client.get("/hello/ada")
        assert again.status_code == 429
        assert again.headers["retry-after"] == "100"  # 40 s to the next window + 60 s in it
        assert again.headers["ratelimit-policy"] == '"hello";q=1;w=60'
    schema = app.openapi()
    params = [p["name"] for p in schema["paths"]["/hello/{name}"]["get"]["parameters"]]
    assert params == ["name", "loud"]  # the hidden request parameter stays out of the schema


@pytest.mark.asyncio
async def test_starlette_decorator_without_request_annotation(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "rl.db", clock=FrozenClock(NOW))
    limiter = RateLimiter(store)

    @limit(limiter, Rule("home", "1/minute"), legacy_headers=True)
    async def home(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse(f"hi {request.url.path}")

    app = Starlette(routes=[StarletteRoute("/", home)])
    try:
        async with client_for(app) as client:
            first = await client.get("/")
            assert (first.status_code, first.text) == (200, "hi /")
            assert first.headers["x-ratelimit-remaining"] == "0"
            refused = await client.get("/")
            assert (refused.status_code, refused.text) == (429, LIMITED)
            assert refused.headers["retry-after"] == "60"
    finally:
        await store.aclose()


# -- WSGI and Flask ---------------------------------------------------------------------------


def flask_app(limiter: RateLimiter) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.get("/")
    def index() -> str:
        return "ok"

    @app.get("/report")
    @flask_limit(limiter, "1/minute", strategy="fixed_window", legacy_headers=True)
    def report() -> str:  # no request parameter: flask.request is used
        return "report"

    return app


def test_flask_decorator() -> None:
    app = flask_app(memory_limiter())
    client = app.test_client()
    env = {"REMOTE_ADDR": CLIENT[0]}
    first = client.get("/report", environ_base=env)
    assert (first.status_code, first.text) == (200, "report")
    assert first.headers["RateLimit"] == '"report";r=0;t=40'
    assert first.headers["X-RateLimit-Limit"] == "1"
    refused = client.get("/report", environ_base=env)
    assert (refused.status_code, refused.text) == (429, LIMITED)
    assert refused.headers["Retry-After"] == "40"
    assert refused.headers["RateLimit-Policy"] == '"report";q=1;w=60'
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert client.get("/report", environ_base={"REMOTE_ADDR": "198.51.100.2"}).status_code == 200


def test_wsgi_middleware_with_flask(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "rl.db", clock=FrozenClock(NOW))
    limiter = RateLimiter(store)
    app = flask_app(memory_limiter())
    key = client_ip_key(TrustedProxies(["127.0.0.1"]))
    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, limiter, Rule("site", "2/minute", strategy="fixed_window"), key=key
    )
    client = app.test_client()
    proxied = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.1"}
    try:
        first = client.get("/", environ_base=proxied)
        assert (first.status_code, first.text) == (200, "ok")
        assert first.headers["RateLimit"] == '"site";r=1;t=40'
        assert client.get("/", environ_base=proxied).status_code == 200
        refused = client.get("/", environ_base=proxied)
        assert (refused.status_code, refused.text) == (429, LIMITED)
        assert refused.headers["Retry-After"] == "40"
        assert refused.headers["RateLimit"] == '"site";r=0;t=40'
        assert refused.headers["RateLimit-Policy"] == '"site";q=2;w=60'
        other = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "192.0.2.2"}
        assert client.get("/", environ_base=other).status_code == 200
    finally:
        asyncio.run(store.aclose())


@pytest.mark.redis
def test_wsgi_redis_stopped_never_500(start_redis_server: Callable[..., RedisServer]) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1, connect_timeout=1)
    limiter = RateLimiter(store)
    app = flask_app(memory_limiter())
    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, limiter, Rule("site", "100/minute", on_failure="closed")
    )
    client = app.test_client()
    try:
        assert client.get("/").status_code == 200
        server.stop()
        answers = {(r.status_code, r.text) for r in (client.get("/") for _ in range(4))}
        assert answers == {(503, UNAVAILABLE)}
        server.start()
        assert client.get("/").status_code == 200
    finally:
        asyncio.run(store.aclose())


# -- key functions ------------------------------------------------------------------------------


class _User:
    def __init__(self, identity: str, *, authenticated: bool = True) -> None:
        self.identity = identity
        self.is_authenticated = authenticated


def test_scope_key_functions() -> None:
    scope: dict[str, Any] = {
        "type": "http",
        "path": "/reports",
        "client": ("192.0.2.5", 1),
        "headers": [(b"x-api-key", b"k-123"), (b"x-tenant", b"acme")],
    }
    view = request_view(scope)
    assert client_ip_key()(view) == "192.0.2.5"
    assert client_ip_key()(request_view({**scope, "client": None})) == "peer:unknown"
    assert client_ip_key()(request_view({**scope, "client": ("testclient", 1)})) == (
        "peer:testclient"
    )
    hashed = header_key("X-API-Key")(view)
    assert hashed is not None
    assert len(hashed) == 32
    assert "k-123" not in hashed
    assert header_key("x-tenant", hash_value=False)(view) == "acme"
    assert header_key("x-missing")(view) is None
    assert path_key(view) == "path:/reports"
    assert user_key(view) is None
    assert user_key(request_view({**scope, "user": _User("ada")})) == "user:ada"
    assert user_key(request_view({**scope, "user": _User("ada", authenticated=False)})) is None


def test_environ_key_functions() -> None:
    environ = {"REMOTE_ADDR": "2001:db8::5", "PATH_INFO": "/x", "HTTP_X_API_KEY": "k-1"}
    assert client_ip_key()(environ_view(environ)) == "2001:db8::/64"
    assert client_ip_key()(environ_view({})) == "peer:unknown"
    assert header_key("x-api-key", hash_value=False)(environ_view(environ)) == "k-1"
    assert path_key(environ_view(environ)) == "path:/x"
    assert user_key(environ_view(environ)) is None
    assert user_key(environ_view({"REMOTE_USER": "ada"})) == "user:ada"


@pytest.mark.asyncio
async def test_path_key_is_shared_by_all_clients() -> None:
    app = starlette_app(memory_limiter(), [Rule("export", "1/minute", path="/api/*", key=path_key)])
    async with client_for(app) as first, client_for(app, ("198.51.100.9", 1)) as second:
        assert (await first.get("/api/items")).status_code == 200
        assert (await second.get("/api/items")).status_code == 429
        assert (await second.get("/")).status_code == 200  # not under /api


@pytest.mark.asyncio
async def test_an_app_that_reuses_its_start_message_gets_fresh_headers() -> None:
    """The middleware must not add its headers to the app's own message dict: a reused dict
    would carry the first response's RateLimit values into every later response."""
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain")],
    }
    body: dict[str, Any] = {"type": "http.response.body", "body": b"ok"}

    async def reusing_app(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send(body)

    app = RateLimitMiddleware(reusing_app, memory_limiter(), Rule("api", "5/minute"))
    async with client_for(app) as client:
        first = await client.get("/")
        second = await client.get("/")
    assert first.headers["ratelimit"] == '"api";r=4;t=12'
    assert second.headers["ratelimit"] == '"api";r=3;t=24'
    assert second.headers.get_list("ratelimit") == ['"api";r=3;t=24']
    assert start["headers"] == [(b"content-type", b"text/plain")]


@pytest.mark.asyncio
async def test_an_app_header_in_another_case_is_still_the_apps() -> None:
    """A raw ASGI app may send ``RateLimit`` with capitals: it is still the app's header."""

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"RateLimit", b"app-owned"), (b"content-type", b"text/plain")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    app = RateLimitMiddleware(raw, memory_limiter(), Rule("s", "5/s"))
    async with client_for(app) as client:
        response = await client.get("/")
    assert response.headers.get_list("ratelimit") == ["app-owned"]
    assert response.headers["ratelimit-policy"] == '"s";q=5;w=1'


def tenant_key(request: RequestView) -> str | None:
    """A key function written once, over the request view."""
    tenant = request.header("X-Tenant")
    return None if tenant is None else f"tenant:{tenant}:{request.method}:{request.path}"


def tenant_cost(request: RequestView) -> int:
    return 2 if request.headers.get("x-heavy") else 1


@pytest.mark.asyncio
async def test_one_key_function_works_under_asgi_wsgi_and_flask() -> None:
    rule = Rule("tenant", "2/minute", strategy="fixed_window", key=tenant_key, cost=tenant_cost)
    heavy = {"x-tenant": "acme", "x-heavy": "1"}
    starlette = starlette_app(memory_limiter(), [rule])
    async with client_for(starlette) as client:
        assert (await client.get("/", headers=heavy)).status_code == 200  # costs both
        refused = await client.get("/", headers={"x-tenant": "acme"})
        assert (refused.status_code, refused.text) == (429, LIMITED)
        assert (await client.get("/", headers={"x-tenant": "other"})).status_code == 200
        assert (await client.get("/")).status_code == 200  # no tenant: exempt

    wsgi_inner = flask.Flask(__name__)
    wsgi_inner.add_url_rule("/", "ok", lambda: "ok")
    wsgi_inner.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        wsgi_inner.wsgi_app, memory_limiter(), rule
    )
    flask_app = flask.Flask(__name__)

    @flask_app.get("/")
    @flask_limit(memory_limiter(), rule)
    def home() -> str:
        return "ok"

    for app in (wsgi_inner, flask_app):
        client = app.test_client()
        assert client.get("/", headers=heavy).status_code == 200
        refused_wsgi = client.get("/", headers={"X-Tenant": "acme"})
        assert (refused_wsgi.status_code, refused_wsgi.text) == (429, LIMITED)
        assert client.get("/", headers={"X-Tenant": "other"}).status_code == 200
        assert client.get("/").status_code == 200
