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

from bastion.asgi import csrf_token, protect
from bastion.asgi.csrf import CSRFMiddleware
from bastion.asgi.headers import SecurityHeadersMiddleware
from bastion.asgi.sessions import SessionMiddleware
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.headers import HeaderPolicy
from bastion.core.keys import KeyRing
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.errors import ConfigurationError
from bastion.flask import CSRF, Bastion
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


def limiter() -> RateLimiter:
    return RateLimiter(MemoryStore(clock=FrozenClock(NOW)))


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTPS)


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in response.headers
    assert response.headers["strict-transport-security"].startswith("max-age=")


@pytest.mark.asyncio
async def test_protect_order_and_headers_on_every_refusal(tmp_path: Path) -> None:
    app = protect(
        starlette_app(),
        store=SQLiteStore(tmp_path / "p.db"),
        rate_limit={"limiter": limiter(), "rules": [Rule("site", "5/minute")]},
        production=False,
    )
    assert isinstance(app, SecurityHeadersMiddleware)
    layers = []
    layer: Any = app
    while hasattr(layer, "app") or hasattr(layer, "_app"):
        layers.append(type(layer).__name__)
        layer = getattr(layer, "app", None) or layer._app
    assert layers == [
        "SecurityHeadersMiddleware",
        "RateLimitMiddleware",
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
        assert huge.status_code == 413
        assert huge.json()["reason"] == "body_too_large"
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
        csrf=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KeyRing.generate(),
        headers="api",
        production=False,
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
    assert protect(inner, csrf=False, headers=None) is inner
    only_sessions = protect(inner, store=MemoryStore(), csrf=False, headers=None)
    assert isinstance(only_sessions, SessionMiddleware)
    csrf_only = protect(
        inner,
        store=MemoryStore(),
        headers=None,
        production=False,
    )
    assert isinstance(csrf_only, SessionMiddleware)
    assert isinstance(csrf_only.app, CSRFMiddleware)
    with pytest.raises(ConfigurationError) as info:
        protect(inner, production=False)
    assert info.value.setting == "store"
    with pytest.raises(ConfigurationError) as info:
        protect(inner, csrf=False, sessions=object(), headers=None)  # type: ignore[arg-type]
    assert info.value.setting == "store"


def test_wsgi_protect_with_flask_extensions() -> None:
    flask_app = Flask(__name__)
    Bastion(flask_app, store=MemoryStore(), production=False)
    CSRF(flask_app, production=False)

    @flask_app.post("/incr")
    def incr() -> Any:
        session["n"] = session.get("n", 0) + 1
        return jsonify(n=session["n"])

    # Sessions and CSRF come from the Flask extensions; protect() adds headers and limits.
    flask_app.wsgi_app = wsgi_protect(  # type: ignore[method-assign]
        flask_app.wsgi_app,
        csrf=False,
        rate_limit={"limiter": limiter(), "rules": [Rule("site", "2/minute")]},
    )
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

    wrapped = wsgi_protect(app, store=MemoryStore(), production=False)
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
    """protect(production=True) must refuse an unsafe header policy even when ENV says nothing."""

    async def app(scope: object, receive: object, send: object) -> None:
        return None

    unsafe = HeaderPolicy.preset("strict").replace(nosniff=False)
    with pytest.raises(ConfigurationError) as caught:
        protect(app, headers=unsafe, csrf=False, production=True)  # type: ignore[arg-type]
    assert caught.value.setting == "nosniff"
