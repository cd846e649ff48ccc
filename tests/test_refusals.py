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
from bastion.stores.memory import MemoryStore
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


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.mark.parametrize(
    ("accept", "content_type", "json_wanted"),
    [
        (None, None, True),  # no Accept: anything is accepted
        ("", None, True),
        ("*/*", None, True),  # httpx, requests, curl, fetch()
        ("application/*", None, True),
        ("text/plain", None, False),
        ("text/plain", "application/json", True),  # it sent JSON: a program
        ("text/html", "application/merge-patch+json; charset=utf-8", True),
        ("text/html", "application/x-www-form-urlencoded", False),
        ("application/json", None, True),
        ("application/problem+json, */*;q=0.1", True, True),
        ("text/html,application/json;q=0.9", None, False),  # a browser: HTML first
        ("application/json, text/html;q=0.9", None, True),  # a program: JSON first
        ("application/json;q=0.5, text/html;q=0.9", None, False),
        ("application/vnd.api+json, text/html", None, True),  # as good as HTML: JSON named
        ("*/*, text/html;q=0.1", None, False),  # HTML asked for, JSON only by wildcard
        (BROWSER["Accept"], None, False),
        ("application/xhtml+xml, */*", None, False),
        ("text/html;q=0, */*", None, True),  # HTML refused outright
        ("text/html;q=0.000, application/json", None, True),
        ("text/html;q=bogus, */*", None, False),  # a malformed quality counts as 1
        ("APPLICATION/JSON", None, True),
        ("image/png", None, False),
    ],
)
def test_one_rule_for_json(accept: str | None, content_type: Any, *, json_wanted: bool) -> None:
    sent = content_type if isinstance(content_type, str) else None
    assert wants_json(accept, sent) is json_wanted
    media_type, body = refusal_body(RATE_LIMITED, accept=accept, content_type=sent)
    if json_wanted:
        assert media_type == b"application/json"
        assert json.loads(body) == {"error": "rate_limited", "detail": "Too Many Requests"}
    else:
        assert media_type == b"text/plain; charset=utf-8"
        assert body == b"Too Many Requests"


def test_accept_is_read_for_at_most_64_ranges() -> None:
    assert wants_json(", ".join(["*/*"] + ["image/png"] * 63 + ["text/html"])) is True
    assert wants_json(", ".join(["image/png"] * 64 + ["*/*"])) is False


def test_json_detail_is_stripped_of_the_text_bodys_newline() -> None:
    _, body = refusal_body(SESSION_STORE_UNAVAILABLE, accept="application/json")
    assert json.loads(body)["detail"].endswith("try again shortly.")
    assert refusal_body(Refusal("x", "y\n"), accept="text/html") == (
        b"text/plain; charset=utf-8",
        b"y\n",
    )


def limiter_for(backend: Any = None) -> RateLimiter:
    clock = FrozenClock(1_700_000_000.0)
    return RateLimiter(backend if backend is not None else MemoryStore(clock=clock))


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
        text = await client.get("/", headers=BROWSER)
        assert text.status_code == 429
        assert text.text == "Too Many Requests"
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        api = await client.get("/")  # httpx's default Accept: */*
    check_json(api, 429, "rate_limited")
    assert api.headers["retry-after"] == "60"  # the headers do not change with the body


@pytest.mark.asyncio
async def test_asgi_fail_closed_503_is_json_for_an_api_client() -> None:
    import httpx  # noqa: PLC0415

    backend = RedisStore.from_url("redis://127.0.0.1:1/0", socket_timeout=1, connect_timeout=1)
    rule = Rule("api", "10/minute", on_failure="closed")
    app = starlette_limited(limiter_for(backend), rule)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/", headers=JSON_ACCEPT)
    finally:
        await backend.aclose()
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
    text = client.get("/", headers=BROWSER)
    assert (text.status_code, text.text) == (429, "Too Many Requests")
    check_json(client.get("/"), 429, "rate_limited")  # werkzeug sends no Accept


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
            text = await client.get("/read", headers=BROWSER)
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
        text = await client.get("/", headers=BROWSER)
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
    text = client.get("/", headers=BROWSER)
    assert (text.status_code, text.text) == (429, "Too Many Requests")
    assert text.headers["Content-Type"].startswith("text/plain")


# -- the CSRF refusal follows the same rule ----------------------------------------------------


def csrf_starlette() -> Starlette:
    from bastion.asgi import protect  # noqa: PLC0415
    from bastion.config import Bastion  # noqa: PLC0415
    from bastion.core.environment import Environment  # noqa: PLC0415
    from bastion.core.keys import KeyRing  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415

    async def transfer(_request: Any) -> PlainTextResponse:
        return PlainTextResponse("moved")

    inner = Starlette(routes=[Route("/transfer", transfer, methods=["POST"])])
    return protect(  # type: ignore[return-value]
        inner,
        Bastion(
            store=MemoryStore(),
            keyring=KeyRing.from_secrets(["r" * 43]),
            sessions=CONFIG,
            environment=Environment.TEST,
        ),
    )


@pytest.mark.asyncio
async def test_the_guides_csrf_test_passes_with_httpx_defaults() -> None:
    """The guide: a tokenless JSON POST through httpx (``Accept: */*``) reads ``detail``."""
    import httpx  # noqa: PLC0415

    transport = httpx.ASGITransport(app=csrf_starlette())
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post("/transfer", json={"amount": 100})
        form = await client.post("/transfer", data={"amount": "100"}, headers=BROWSER)
        sent_json = await client.post("/transfer", json={"amount": 1}, headers=BROWSER)
    check_json(response, 403, "csrf_failed")
    assert "CSRF" in response.json()["detail"]
    assert response.json()["reason"] == "token_missing"
    # A browser's form post gets the HTML page; a JSON body gets JSON whatever Accept says.
    assert (form.status_code, form.headers["content-type"]) == (403, "text/html; charset=utf-8")
    check_json(sent_json, 403, "csrf_failed")


def test_the_flask_csrf_refusal_is_json_for_a_json_body() -> None:
    from bastion.config import Bastion  # noqa: PLC0415
    from bastion.core.keys import KeyRing  # noqa: PLC0415
    from bastion.flask import protect  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415

    app = Flask(__name__)
    app.add_url_rule("/transfer", "transfer", lambda: "moved", methods=["POST"])
    # Sessions and CSRF only, as before protect() (headers=None: no headers layer).
    keyring = KeyRing.from_secrets(["f" * 43])
    protect(app, Bastion(store=MemoryStore(), keyring=keyring, sessions=CONFIG, headers=None))
    client = app.test_client()
    refused = client.post("/transfer", json={"amount": 1}, headers=BROWSER)
    check_json(refused, 403, "csrf_failed")
    assert "CSRF" in refused.get_json()["detail"]
    page = client.post("/transfer", data={"amount": "1"}, headers=BROWSER)
    assert (page.status_code, page.headers["Content-Type"]) == (403, "text/html; charset=utf-8")


@pytest.mark.asyncio
async def test_a_429_for_a_json_body_is_json() -> None:
    import httpx  # noqa: PLC0415

    app = starlette_limited(limiter_for(), Rule("api", "1/minute"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/")
        refused = await client.request("GET", "/", json={"q": 1}, headers=BROWSER)
    check_json(refused, 429, "rate_limited")
