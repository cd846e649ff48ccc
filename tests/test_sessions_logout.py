"""``session.clear()`` is a logout, and a logout (or a rotation) survives a 5xx response.

Real Starlette and Flask apps over real memory and SQLite stores, through their test clients.
"""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client from httpx to httpx2 at import time;
    # the dev environment pins httpx. Only that import-time notice is silenced.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion.asgi.sessions import SessionMiddleware, get_session
from bastion.config import Bastion
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.sessions import record_key, session_handle
from bastion.flask import protect
from bastion.flask import session as bastion_session
from bastion.stores.memory import MemoryStore
from bastion.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from starlette.requests import Request

    from bastion.stores.base import Store

HTTPS = "https://localhost"
COOKIE = "__Host-session"


def cookie_of(response: Any) -> str | None:
    header = response.headers.get("set-cookie")
    if header is None:
        return None
    match = re.match(rf"{re.escape(COOKIE)}=([^;]*)", header)
    return None if match is None else match.group(1)


def stored(store: Store, cookie: str) -> bytes | None:
    sync = store.sync  # type: ignore[attr-defined]
    value: bytes | None = sync.get(record_key(session_handle(cookie)))
    return value


async def do_login(request: Request) -> JSONResponse:
    get_session(request).login("alice")
    return JSONResponse({"ok": True})


async def whoami(request: Request) -> JSONResponse:
    session = request.session
    return JSONResponse({"user": session.user_id, "data": dict(session)})  # type: ignore[attr-defined]


async def put(request: Request) -> JSONResponse:
    request.session["cart"] = ["book"]
    return JSONResponse({"ok": True})


async def clear(request: Request) -> PlainTextResponse:
    request.session.clear()
    return PlainTextResponse("cleared")


async def clear_then_set(request: Request) -> PlainTextResponse:
    request.session.clear()
    request.session["flash"] = "bye"
    return PlainTextResponse("cleared")


async def logout_then_fail(request: Request) -> PlainTextResponse:
    get_session(request).logout()
    request.session["flash"] = "never saved"
    return PlainTextResponse("boom", status_code=500)


async def login_then_fail(request: Request) -> PlainTextResponse:
    get_session(request).login("alice")
    request.session["after"] = "never saved"
    return PlainTextResponse("boom", status_code=503)


async def regenerate_then_fail(request: Request) -> PlainTextResponse:
    get_session(request).regenerate()
    raise RuntimeError("the view failed after regenerate()")


ROUTES = [
    Route("/login", do_login, methods=["POST"]),
    Route("/whoami", whoami),
    Route("/put", put, methods=["POST"]),
    Route("/clear", clear, methods=["POST"]),
    Route("/clear-then-set", clear_then_set, methods=["POST"]),
    Route("/logout-fail", logout_then_fail, methods=["POST"]),
    Route("/login-fail", login_then_fail, methods=["POST"]),
    Route("/regenerate-fail", regenerate_then_fail, methods=["POST"]),
]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(tmp_path / "sessions.db")


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(SessionMiddleware, store=store, clock=FrozenClock(), production=False)
        ],
    )
    with TestClient(app, base_url=HTTPS, raise_server_exceptions=False) as test_client:
        yield test_client


def logged_in(client: TestClient) -> str:
    response = client.post("/login")
    cookie = cookie_of(response)
    assert cookie
    return cookie


def whoami(client: TestClient, cookie: str) -> dict[str, Any]:  # type: ignore[no-redef]
    client.cookies.clear()
    response = client.get("/whoami", headers={"cookie": f"{COOKIE}={cookie}"})
    result: dict[str, Any] = response.json()
    return result


def test_session_clear_logs_out(client: TestClient, store: Store) -> None:
    cookie = logged_in(client)
    response = client.post("/clear")
    assert response.headers["set-cookie"].startswith(f"{COOKIE}=; Max-Age=0")
    assert response.headers["clear-site-data"] == '"cookies"'
    assert stored(store, cookie) is None  # ID, user binding and CSRF secret: all gone
    assert whoami(client, cookie) == {"user": None, "data": {}}


def test_clear_then_set_is_a_new_anonymous_session_under_a_new_id(
    client: TestClient, store: Store
) -> None:
    cookie = logged_in(client)
    response = client.post("/clear-then-set")
    fresh = cookie_of(response)
    assert fresh
    assert fresh != cookie
    assert "clear-site-data" not in response.headers
    assert stored(store, cookie) is None
    assert whoami(client, fresh) == {"user": None, "data": {"flash": "bye"}}


def test_logout_survives_a_5xx(client: TestClient, store: Store) -> None:
    cookie = logged_in(client)
    response = client.post("/logout-fail")
    assert response.status_code == 500
    assert response.headers["set-cookie"].startswith(f"{COOKIE}=; Max-Age=0")
    assert stored(store, cookie) is None
    assert whoami(client, cookie)["user"] is None


def test_login_on_a_5xx_binds_nobody_but_the_old_id_dies(client: TestClient, store: Store) -> None:
    before = cookie_of(client.post("/put"))
    assert before
    response = client.post("/login-fail")
    assert response.status_code == 503
    moved = cookie_of(response)
    assert moved
    assert moved != before
    assert stored(store, before) is not None  # a dead tombstone: the old ID leads nowhere
    assert whoami(client, before) == {"user": None, "data": {}}
    # The loaded session under its new ID: not logged in, the failing request's data not saved.
    assert whoami(client, moved) == {"user": None, "data": {"cart": ["book"]}}


def test_regenerate_on_a_5xx_still_kills_the_old_id(client: TestClient) -> None:
    cookie = logged_in(client)
    response = client.post("/regenerate-fail")
    assert response.status_code == 500
    assert whoami(client, cookie)["user"] is None


# -- Flask ---------------------------------------------------------------------------------------


@pytest.fixture
def flask_client(store: Store) -> Any:
    app = Flask(__name__)
    protect(app, Bastion(store=store, csrf=None, headers=None, environment=Environment.TEST))

    @app.post("/login")
    def flask_login() -> Any:
        # Flask's own idiom: clear, then set the user.
        flask_session.clear()
        flask_session["user_id"] = "alice"
        return jsonify(ok=True)

    @app.post("/login-bound")
    def flask_login_bound() -> Any:
        bastion_session.login("alice")
        return jsonify(ok=True)

    @app.post("/logout")
    def flask_logout_view() -> Any:
        flask_session.clear()
        return jsonify(ok=True)

    @app.post("/logout-fail")
    def flask_logout_fail() -> Any:
        bastion_session.logout()
        return "boom", 500

    @app.get("/whoami")
    def flask_whoami() -> Any:
        return jsonify(user=flask_session.user_id, data=dict(flask_session))  # type: ignore[attr-defined]

    return app.test_client()


def flask_cookie(response: Any) -> str | None:
    return cookie_of(response)


def test_flask_session_clear_logs_out_and_clear_then_set_rotates(
    flask_client: Any, store: Store
) -> None:
    bound = flask_cookie(flask_client.post("/login-bound", base_url=HTTPS))
    assert bound
    response = flask_client.post("/login", base_url=HTTPS)
    fresh = flask_cookie(response)
    assert fresh
    assert fresh != bound
    assert stored(store, bound) is None
    response = flask_client.post("/logout", base_url=HTTPS)
    assert response.headers["Set-Cookie"].startswith(f"{COOKIE}=; Max-Age=0")
    assert stored(store, fresh) is None


def test_flask_logout_survives_a_5xx(flask_client: Any, store: Store) -> None:
    cookie = flask_cookie(flask_client.post("/login-bound", base_url=HTTPS))
    assert cookie
    response = flask_client.post("/logout-fail", base_url=HTTPS)
    assert response.status_code == 500
    assert response.headers["Set-Cookie"].startswith(f"{COOKIE}=; Max-Age=0")
    assert stored(store, cookie) is None
