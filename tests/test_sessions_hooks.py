"""App hooks of the session engine, and handing a programmatic session to a client.

``user_loader`` (``request.session.user``, once per request), ``session_filter`` (refuse
sessions at load), ``SessionEngine.update`` (an admin change to another session's data,
CAS-safe against that session's own requests) and ``cookie_value`` / ``set_cookie_header`` for
a session made with ``create()``. Real Starlette and Flask apps, real stores.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, jsonify
from flask import session as flask_session
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.asgi.sessions import SessionMiddleware, get_session, session_engine
from bastion.config import Bastion
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.core.sessions import SessionConfig
from bastion.engine.sessions import SessionEngine
from bastion.errors import BadToken, ConfigurationError
from bastion.flask import protect
from bastion.stores.memory import MemoryStore
from test_sessions_revocation import PausingStore

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client from httpx to httpx2 at import time;
    # the dev environment pins httpx. Only that import-time notice is silenced.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.core.sessions import SessionRecord
    from bastion.stores.base import Store

HTTPS = "https://localhost"
COOKIE = "__Host-session"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


class Users:
    """The app's user table, counting loads."""

    def __init__(self) -> None:
        self.rows = {"alice": {"name": "Alice"}, "bob": {"name": "Bob"}}
        self.disabled: set[str] = set()
        self.loads = 0

    def load(self, user_id: str) -> dict[str, str] | None:
        self.loads += 1
        return self.rows.get(user_id)

    def allowed(self, record: SessionRecord) -> bool:
        return record.user_id not in self.disabled


async def do_login(request: Request) -> JSONResponse:
    get_session(request).login(request.query_params["user"])
    return JSONResponse({"ok": True})


async def me(request: Request) -> JSONResponse:
    session: Any = request.session
    first, second = session.user, session.user  # one load per request
    assert first is second
    return JSONResponse({"user": first, "data": dict(session)})


async def put(request: Request) -> JSONResponse:
    request.session[request.query_params["key"]] = request.query_params["value"]
    return JSONResponse({"ok": True})


async def admin_flag(request: Request) -> JSONResponse:
    engine = session_engine(request)
    [info] = await engine.list_sessions(request.query_params["user"])

    def flag(data: dict[str, Any]) -> None:
        data["notice"] = "password expires soon"

    return JSONResponse({"updated": await engine.update(info.handle, flag)})


def starlette_app(store: Store, users: Users) -> Starlette:
    return Starlette(
        routes=[
            Route("/login", do_login, methods=["POST"]),
            Route("/me", me),
            Route("/put", put, methods=["POST"]),
            Route("/admin/flag", admin_flag, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                production=False,
                user_loader=users.load,
                session_filter=users.allowed,
            )
        ],
    )


def test_user_loader_runs_once_per_request_and_the_filter_ends_a_disabled_user() -> None:
    users = Users()
    with TestClient(starlette_app(MemoryStore(), users), base_url=HTTPS) as client:
        assert client.get("/me").json() == {"user": None, "data": {}}
        assert users.loads == 0  # nobody logged in: nothing to load
        client.post("/login", params={"user": "alice"})
        assert client.get("/me").json()["user"] == {"name": "Alice"}
        assert users.loads == 1
        users.disabled.add("alice")
        response = client.get("/me")
        assert response.json() == {"user": None, "data": {}}
        assert response.headers["set-cookie"].startswith(f"{COOKIE}=; Max-Age=0")
        users.disabled.clear()
        assert client.get("/me").json()["user"] is None  # the cookie was dropped for good


def test_an_admin_update_reaches_another_session_and_keeps_its_own_writes() -> None:
    users = Users()
    app = starlette_app(MemoryStore(), users)
    with (
        TestClient(app, base_url=HTTPS) as alice,
        TestClient(app, base_url=HTTPS) as admin,
    ):
        alice.post("/login", params={"user": "alice"})
        alice.post("/put", params={"key": "theme", "value": "dark"})
        assert admin.post("/admin/flag", params={"user": "alice"}).json() == {"updated": True}
        alice.post("/put", params={"key": "lang", "value": "fr"})
        assert alice.get("/me").json()["data"] == {
            "theme": "dark",
            "notice": "password expires soon",
            "lang": "fr",
        }


@pytest.mark.asyncio
async def test_an_admin_update_is_cas_safe_against_a_concurrent_request(
    any_store: Store, clock: FrozenClock
) -> None:
    store = PausingStore(any_store)
    engine = SessionEngine(store, clock=clock)  # type: ignore[arg-type]
    session_id = await engine.create({"cart": []}, user_id="alice")
    handle = (await engine.list_sessions("alice"))[0].handle
    header = f"{COOKIE}={engine.cookie_value(session_id)}"
    busy = engine.open(header, lazy=False)
    await engine.load(busy)
    # The admin's write pauses just before its compare-and-set; the session's own request
    # saves in between, so the admin's first attempt loses and must re-apply its change.
    store.pause(lambda op, key: op == "compare_and_set" and key == "session:" + handle)

    def flag(data: dict[str, Any]) -> None:
        data["notice"] = "hello"

    admin = asyncio.create_task(engine.update(handle, flag))
    await store.reached.wait()
    busy["cart"] = ["book"]
    await engine.save(busy)
    store.release.set()
    assert await admin is True
    after = engine.open(header, lazy=False)
    await engine.load(after)
    assert dict(after) == {"cart": ["book"], "notice": "hello"}
    assert after.user_id == "alice"


@pytest.mark.asyncio
async def test_an_admin_update_of_a_gone_session_says_so(clock: FrozenClock) -> None:
    engine = SessionEngine(MemoryStore(clock=clock), clock=clock)
    session_id = await engine.create({"a": 1}, user_id="alice")
    handle = (await engine.list_sessions("alice"))[0].handle
    await engine.destroy(session_id)
    assert await engine.update(handle, lambda data: data.clear()) is False


def test_an_async_user_loader_needs_load_user() -> None:
    async def load(user_id: str) -> str:
        return user_id.upper()

    engine = SessionEngine(MemoryStore(), user_loader=load)

    async def run() -> None:
        session_id = await engine.create({}, user_id="alice")
        session = engine.open(f"{COOKIE}={session_id}", lazy=False)
        await engine.load(session)
        with pytest.raises(ConfigurationError, match="load_user"):
            _ = session.user
        assert await session.load_user() == "ALICE"
        assert session.user == "ALICE"

    asyncio.run(run())


@pytest.mark.parametrize("signed", [False, True])
def test_a_created_session_handed_to_a_client_is_logged_in(signed: bool) -> None:
    users = Users()
    found: list[SessionEngine] = []

    async def grab(request: Request) -> JSONResponse:
        found.append(session_engine(request))  # as an admin tool or a magic-link view would
        return JSONResponse({})

    app = Starlette(
        routes=[Route("/me", me), Route("/grab", grab)],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=MemoryStore(),
                keyring=KeyRing.generate(),
                config=SessionConfig(signed=signed, persistent=True),
                production=False,
                user_loader=users.load,
            )
        ],
    )
    with TestClient(app, base_url=HTTPS) as client:
        client.get("/grab")
        engine = found[0]
        session_id = asyncio.run(engine.create({"via": "magic link"}, user_id="bob"))
        value = engine.cookie_value(session_id)
        assert (value != session_id) is signed
        header = engine.set_cookie_header_sync(session_id)
        assert header.startswith(f"{COOKIE}={value};")
        assert "Max-Age=" in header
        assert "Secure" in header
        assert "HttpOnly" in header
        client.cookies.clear()
        response = client.get("/me", headers={"cookie": f"{COOKIE}={value}"})
        assert response.json() == {"user": {"name": "Bob"}, "data": {"via": "magic link"}}
        with pytest.raises(BadToken):
            engine.cookie_value("not an id")
        asyncio.run(engine.destroy(session_id))
        with pytest.raises(BadToken):
            engine.set_cookie_header_sync(session_id)


def test_flask_user_loader_and_filter() -> None:
    users = Users()
    app = Flask(__name__)
    config = Bastion(
        store=MemoryStore(),
        csrf=None,
        headers=None,
        environment=Environment.TEST,
        user_loader=users.load,
        session_filter=users.allowed,
    )
    protect(app, config)

    @app.post("/login")
    def flask_login() -> Any:
        from bastion.flask import session  # noqa: PLC0415

        session.login("bob")
        return jsonify(ok=True)

    @app.get("/me")
    def flask_me() -> Any:
        return jsonify(user=flask_session.user)  # type: ignore[attr-defined]

    client = app.test_client()
    client.post("/login", base_url=HTTPS)
    assert client.get("/me", base_url=HTTPS).json == {"user": {"name": "Bob"}}
    users.disabled.add("bob")
    assert client.get("/me", base_url=HTTPS).json == {"user": None}
