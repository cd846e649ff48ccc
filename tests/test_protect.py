"""protect(): the documented middleware order on real Starlette, FastAPI and Flask apps.

Every refusal bastion produces (CSRF 403 and 413, rate-limit 429) must carry the security
headers, which proves the headers layer is outermost; CSRF must see the session, which proves
the session layer is outside CSRF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from flask import Flask, jsonify, session
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.test import Client

import bastion.flask
from bastion.asgi import csrf_token, protect
from bastion.asgi.csrf import CSRFMiddleware
from bastion.asgi.headers import SecurityHeadersMiddleware
from bastion.asgi.limits import RequestLimitsMiddleware
from bastion.asgi.sessions import SessionMiddleware
from bastion.config import Bastion
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.environment import Environment
from bastion.core.headers import HeaderPolicy
from bastion.core.keys import KeyRing
from bastion.core.sessions import SessionConfig
from bastion.engine.ratelimit import Rule
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.csrf import afetch_token, browser_headers
from bastion.wsgi import protect as wsgi_protect

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request

HTTPS = "https://testserver"
JSON = {"Accept": "application/json"}
NOW = 1_700_000_000.0


def starlette_app() -> Starlette:
    async def token(request: Request) -> JSONResponse:
        return JSONResponse({"csrf_token": csrf_token(request)})

    async def incr(request: Request) -> JSONResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"n": request.session["n"]})

    return Starlette(routes=[Route("/token", token), Route("/incr", incr, methods=["POST"])])


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTPS)


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in response.headers
    assert response.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.asyncio
async def test_protect_order_and_headers_on_every_refusal(tmp_path: Path) -> None:
    clock = FrozenClock(NOW)  # the rate limits' clock (runtime.limiter runs on config.clock)
    config = Bastion(
        store=SQLiteStore(tmp_path / "p.db", clock=clock),
        rate_limits=(Rule("site", "5/minute"),),
        clock=clock,
        environment=Environment.TEST,
    )
    # A Runtime: protect() returns the bare stack (a Bastion adds the lifespan closer).
    app = protect(starlette_app(), config.build())
    assert isinstance(app, SecurityHeadersMiddleware)
    layers = []
    layer: Any = app
    while hasattr(layer, "app") or hasattr(layer, "_app"):
        layers.append(type(layer).__name__)
        layer = getattr(layer, "app", None) or layer._app
    assert layers == [
        "SecurityHeadersMiddleware",
        "RateLimitMiddleware",
        "RequestLimitsMiddleware",
        "SessionMiddleware",
        "CSRFMiddleware",
    ]
    async with client(app) as http:
        token = await afetch_token(http, "/token")
        ok = await http.post("/incr", headers={"X-CSRF-Token": token})
        assert ok.json() == {"n": 1}
        assert_security_headers(ok)
        forged = await http.post("/incr", headers={"Sec-Fetch-Site": "cross-site", **JSON})
        assert forged.status_code == 403
        assert forged.json()["reason"] == "cross_site"
        assert_security_headers(forged)
        huge = await http.post(
            "/incr",
            content=b"a=" + b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "application/x-www-form-urlencoded", **JSON},
        )
        assert huge.status_code == 413  # the request limits, before CSRF reads the form
        assert huge.json()["error"] == "body_too_large"
        assert_security_headers(huge)
        same_origin = await http.post("/incr", headers=browser_headers(HTTPS))
        assert same_origin.json() == {"n": 2}
        limited = await http.get("/token")
        assert limited.status_code == 429
        assert_security_headers(limited)


@pytest.mark.asyncio
async def test_protect_fastapi_double_submit_without_sessions() -> None:
    api = FastAPI()

    @api.get("/token")
    async def token(request: FastAPIRequest) -> dict[str, str]:
        return {"csrf_token": csrf_token(request)}

    @api.post("/act")
    async def act() -> dict[str, bool]:
        return {"done": True}

    app = protect(
        api,
        Bastion(
            csrf=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
            keyring=KeyRing.generate(),
            headers="api",  # type: ignore[arg-type]
            environment=Environment.TEST,
        ),
    )
    async with client(app) as http:
        token = await afetch_token(http, "/token")
        done = await http.post("/act", headers={"X-CSRF-Token": token})
        assert done.json() == {"done": True}
        refused = await http.post("/act", headers=JSON)
        assert refused.status_code == 403
        assert refused.json()["reason"] == "token_missing"
        assert refused.headers["x-content-type-options"] == "nosniff"


def test_protect_layers_are_optional_and_misconfigurations_named() -> None:
    inner = starlette_app()
    # Runtimes: protect() returns the bare stack (a Bastion adds the lifespan closer).
    assert protect(inner, Bastion(csrf=None, headers=None, limits=None).build()) is inner
    only_limits = protect(inner, Bastion(csrf=None, headers=None).build())  # on by default
    assert isinstance(only_limits, RequestLimitsMiddleware)
    assert only_limits._app is inner
    only_sessions = protect(
        inner, Bastion(store=MemoryStore(), csrf=None, headers=None, limits=None).build()
    )
    assert isinstance(only_sessions, SessionMiddleware)
    csrf_only = protect(
        inner,
        Bastion(
            store=MemoryStore(), headers=None, limits=None, environment=Environment.TEST
        ).build(),
    )
    assert isinstance(csrf_only, SessionMiddleware)
    assert isinstance(csrf_only.app, CSRFMiddleware)
    with pytest.raises(ConfigurationError) as info:
        protect(inner, Bastion(environment=Environment.TEST))
    assert info.value.setting == "store"
    with pytest.raises(ConfigurationError) as info:
        protect(inner, Bastion(csrf=None, sessions=SessionConfig(), headers=None))
    assert info.value.setting == "store"


def test_flask_protect_sessions_csrf_headers_and_limits() -> None:
    flask_app = Flask(__name__)
    clock = FrozenClock(NOW)  # the rate limits' clock (runtime.limiter runs on config.clock)
    # Sessions and CSRF are Flask's session interface and extension; headers and limits wrap
    # app.wsgi_app.
    bastion.flask.protect(
        flask_app,
        Bastion(
            store=MemoryStore(clock=clock),
            rate_limits=(Rule("site", "2/minute"),),
            clock=clock,
            environment=Environment.TEST,
        ),
    )

    @flask_app.post("/incr")
    def incr() -> Any:
        session["n"] = session.get("n", 0) + 1
        return jsonify(n=session["n"])

    http = flask_app.test_client()
    forged = http.post("/incr", base_url=HTTPS, headers={"Sec-Fetch-Site": "cross-site", **JSON})
    assert forged.status_code == 403
    assert forged.get_json()["reason"] == "cross_site"
    assert forged.headers["X-Content-Type-Options"] == "nosniff"
    ok = http.post("/incr", base_url=HTTPS, headers=browser_headers("https://localhost"))
    assert ok.get_json() == {"n": 1}
    limited = http.post("/incr", base_url=HTTPS, headers=browser_headers("https://localhost"))
    assert limited.status_code == 429
    assert limited.headers["X-Content-Type-Options"] == "nosniff"


def test_wsgi_protect_plain_app() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["bastion.session"]["seen"] = True
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = wsgi_protect(app, Bastion(store=MemoryStore(), environment=Environment.TEST))
    http = Client(wrapped)
    ok = http.post("/", base_url=HTTPS, headers=browser_headers("https://localhost"))
    assert ok.status_code == 200
    assert ok.headers["X-Content-Type-Options"] == "nosniff"
    assert ok.headers["Set-Cookie"].startswith("__Host-session=")
    forged = http.post("/", base_url=HTTPS, headers={"Origin": "https://evil.example", **JSON})
    assert forged.status_code == 403
    assert forged.get_json()["reason"] == "origin_mismatch"
    assert forged.headers["X-Content-Type-Options"] == "nosniff"


def test_protect_passes_production_to_the_headers_layer() -> None:
    """protect() under Environment.PRODUCTION must refuse an unsafe header policy even when ENV
    says nothing."""

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    unsafe = HeaderPolicy.preset("strict").replace(nosniff=False)
    with pytest.raises(ConfigurationError) as caught:
        protect(
            app,  # type: ignore[arg-type]
            Bastion(
                headers=unsafe,
                csrf=None,
                keyring=KeyRing.generate(),  # production refuses a throwaway ring first
                environment=Environment.PRODUCTION,
            ),
        )
    assert caught.value.setting == "nosniff"


def test_bastion_middleware_is_exported_by_bastion_asgi() -> None:
    import bastion.asgi  # noqa: PLC0415
    from bastion.asgi.protect import BastionMiddleware  # noqa: PLC0415

    assert getattr(bastion.asgi, "BastionMiddleware", None) is BastionMiddleware


@pytest.mark.asyncio
async def test_bastion_middleware_runtime_is_the_one_serving_requests() -> None:
    from bastion.asgi.protect import BastionMiddleware  # noqa: PLC0415

    async def sign_in(request: Request) -> JSONResponse:
        request.session.login("alice")  # type: ignore[attr-defined]
        return JSONResponse({"ok": True})

    inner = Starlette(routes=[Route("/login", sign_in, methods=["POST"])])
    config = Bastion(
        store="memory://", keyring=KeyRing.generate(), csrf=None, environment=Environment.TEST
    )
    app = BastionMiddleware(inner, config=config)
    async with client(app) as http:
        assert (await http.post("/login")).json() == {"ok": True}
    assert app.runtime.sessions is not None
    assert len(await app.runtime.sessions.list_sessions("alice")) == 1
