"""The bodies of the responses bastion sends itself (429, 503): text, or JSON when asked.

Real apps (Starlette, Flask, a plain WSGI app) and real stores (memory; a real redis-server
stopped mid-test for the outages; a Redis URL on a closed port for the fail-closed limiter).
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion.asgi import RateLimitMiddleware, SessionMiddleware
from bastion.core.clock import FrozenClock
from bastion.core.refusal import (
    RATE_LIMITED,
    SESSION_STORE_UNAVAILABLE,
    Refusal,
    refusal_body,
    wants_json,
)
from bastion.core.sessions import SessionConfig
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.stores.ratelimit import MemoryRateLimitStore
from bastion.stores.ratelimit.redis import RedisRateLimitStore
from bastion.stores.redis import RedisStore
from bastion.wsgi import RateLimitMiddleware as WSGIRateLimitMiddleware
from bastion.wsgi import SessionMiddleware as WSGISessionMiddleware
from bastion.wsgi.sessions import get_session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    import httpx

    from bastion.testing.redis_server import RedisServer

JSON_ACCEPT = {"Accept": "application/json"}
CONFIG = SessionConfig(cookie_name="session", secure=False, development=True)


@pytest.mark.parametrize(
    ("accept", "json_wanted"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("application/json", True),
        ("application/problem+json, */*;q=0.1", True),
        ("text/html,application/json;q=0.9", False),  # a browser: HTML first
        ("APPLICATION/JSON", True),
    ],
)
def test_json_is_sent_only_to_clients_that_ask_for_it(
    accept: str | None, *, json_wanted: bool
) -> None:
    assert wants_json(accept) is json_wanted
    content_type, body = refusal_body(RATE_LIMITED, accept=accept)
    if json_wanted:
        assert content_type == b"application/json"
        assert json.loads(body) == {"error": "rate_limited", "detail": "Too Many Requests"}
    else:
        assert content_type == b"text/plain; charset=utf-8"
        assert body == b"Too Many Requests"


def test_json_detail_is_stripped_of_the_text_bodys_newline() -> None:
    _, body = refusal_body(SESSION_STORE_UNAVAILABLE, accept="application/json")
    assert json.loads(body)["detail"].endswith("try again shortly.")
    assert refusal_body(Refusal("x", "y\n"), accept=None) == (b"text/plain; charset=utf-8", b"y\n")


def limiter_for(backend: Any = None) -> RateLimiter:
    clock = FrozenClock(1_700_000_000.0)
    return RateLimiter(backend if backend is not None else MemoryRateLimitStore(clock=clock))


async def ok(_request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_limited(limiter: RateLimiter, rule: Rule) -> Starlette:
    return Starlette(
        routes=[Route("/", ok)],
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter, rules=[rule])],
    )


def check_json(response: httpx.Response | Any, status: int, error: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.content if hasattr(response, "content") else response.get_data()
    assert int(response.headers["content-length"]) == len(body)
    assert json.loads(body)["error"] == error


@pytest.mark.asyncio
async def test_asgi_429_is_json_for_an_api_client_and_text_otherwise() -> None:
    import httpx  # noqa: PLC0415

    app = starlette_limited(limiter_for(), Rule("api", "1/minute"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/")).text == "ok"
        text = await client.get("/")
        assert text.status_code == 429
        assert text.text == "Too Many Requests"
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        api = await client.get("/", headers=JSON_ACCEPT)
    check_json(api, 429, "rate_limited")
    assert api.headers["retry-after"] == "60"  # the headers do not change with the body


@pytest.mark.asyncio
async def test_asgi_fail_closed_503_is_json_for_an_api_client() -> None:
    import httpx  # noqa: PLC0415

    backend = RedisRateLimitStore("redis://127.0.0.1:1/0", socket_timeout=1, connect_timeout=1)
    rule = Rule("api", "10/minute", on_failure="closed")
    app = starlette_limited(limiter_for(backend), rule)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/", headers=JSON_ACCEPT)
    finally:
        backend.close()
    check_json(response, 503, "rate_limit_store_unavailable")


def test_wsgi_429_is_json_for_an_api_client_and_text_otherwise() -> None:
    app = Flask(__name__)

    @app.get("/")
    def home() -> str:
        return "ok"

    app.wsgi_app = WSGIRateLimitMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, limiter_for(), Rule("api", "1/minute")
    )
    client = app.test_client()
    assert client.get("/").text == "ok"
    text = client.get("/")
    assert (text.status_code, text.text) == (429, "Too Many Requests")
    check_json(client.get("/", headers=JSON_ACCEPT), 429, "rate_limited")


@pytest.mark.redis
@pytest.mark.asyncio
async def test_asgi_session_outage_503_is_json_for_an_api_client(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    import httpx  # noqa: PLC0415

    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)

    async def read(request: Any) -> PlainTextResponse:
        return PlainTextResponse(str(request.session.get("n")))

    async def incr(request: Any) -> PlainTextResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/read", read), Route("/incr", incr, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, store=store, config=CONFIG, production=False)],
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            assert (await client.post("/incr")).text == "ok"
            server.stop()
            response = await client.get("/read", headers=JSON_ACCEPT)
            check_json(response, 503, "session_store_unavailable")
            text = await client.get("/read")
            assert text.text.startswith("Service unavailable: the session store")
    finally:
        await store.aclose()


@pytest.mark.redis
def test_wsgi_session_save_outage_503_is_json_for_an_api_client(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    """A plain WSGI app: the store goes away between the read and the save. The response is the
    503 (the body matches its Content-Length), never the app's 200."""
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        session = get_session(environ)
        session["n"] = session.get("n", 0) + 1
        if environ.get("QUERY_STRING") == "stop":
            server.stop()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = WSGISessionMiddleware(app, store=store, config=CONFIG, production=False)

    def call(
        query: str, cookie: str | None, accept: str | None
    ) -> tuple[str, dict[str, str], bytes]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/",
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
        }
        if cookie is not None:
            environ["HTTP_COOKIE"] = cookie
        if accept is not None:
            environ["HTTP_ACCEPT"] = accept
        seen: list[Any] = []
        body = b"".join(wrapped(environ, lambda s, h, e=None: seen.append((s, dict(h)))))
        return seen[0][0], seen[0][1], body

    status, headers, _ = call("", None, None)
    assert status == "200 OK"
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    status, headers, body = call("stop", cookie, "application/json")
    assert status == "503 Service Unavailable"
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    assert json.loads(body)["error"] == "session_store_unavailable"
    store.sync.close()


@pytest.mark.asyncio
async def test_the_starlette_decorator_refuses_in_json_when_asked() -> None:
    import httpx  # noqa: PLC0415

    from bastion.integrations.ratelimit import limit  # noqa: PLC0415

    limiter = limiter_for()

    @limit(limiter, "1/minute")
    async def endpoint(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/")).text == "ok"
        api = await client.get("/", headers=JSON_ACCEPT)
        text = await client.get("/")
    check_json(api, 429, "rate_limited")
    assert (text.status_code, text.text) == (429, "Too Many Requests")
    assert text.headers["content-type"].startswith("text/plain")


def test_the_flask_decorator_refuses_in_json_when_asked() -> None:
    from bastion.integrations.ratelimit import flask_limit  # noqa: PLC0415

    app = Flask(__name__)

    @app.get("/")
    @flask_limit(limiter_for(), "1/minute")
    def home() -> str:
        return "ok"

    client = app.test_client()
    assert client.get("/").text == "ok"
    check_json(client.get("/", headers=JSON_ACCEPT), 429, "rate_limited")
    text = client.get("/")
    assert (text.status_code, text.text) == (429, "Too Many Requests")
    assert text.headers["Content-Type"].startswith("text/plain")
