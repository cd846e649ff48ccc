"""FastAPI session dependencies (SessionDep, UserIdDep) in real FastAPI apps on real stores, and
the inline save path of the memory store under a real Starlette app."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.asgi import SessionMiddleware
from bastion.asgi.sessions import get_session
from bastion.core.clock import FrozenClock
from bastion.core.sessions import record_key, session_handle
from bastion.engine.flows import drive_sync
from bastion.engine.second_factor import begin_second_factor
from bastion.engine.sessions import SaveResult, SessionEngine
from bastion.errors import ConfigurationError
from bastion.integrations.sessions import SessionDep, UserIdDep  # noqa: TC001 (FastAPI reads them)
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.sync_store import CountingStore

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client to httpx2 at import time.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from starlette.requests import Request

    from bastion.stores.base import Store

HTTPS = "https://testserver"
COOKIE = "__Host-session"
NOBODY: dict[str, Any] = {
    "user_id": None,
    "persistent": None,
    "client_ip": None,
    "user_agent": None,
}


def fastapi_app(store: Store, clock: FrozenClock | None = None) -> FastAPI:
    app = FastAPI()
    app.add_middleware(
        SessionMiddleware, store=store, clock=clock or FrozenClock(), production=False
    )

    @app.post("/cart")
    async def add(item: str, session: SessionDep) -> dict[str, Any]:
        loaded_before_touch = session.loaded
        session["cart"] = [*session.get("cart", []), item]
        return {"cart": session["cart"], "loaded_before_touch": loaded_before_touch}

    @app.get("/cart")
    async def show(session: SessionDep) -> dict[str, Any]:
        return {"cart": session.get("cart", [])}

    @app.get("/me")
    async def me(user_id: UserIdDep) -> dict[str, str]:
        return {"user": user_id}

    @app.post("/login")
    async def do_login(session: SessionDep) -> dict[str, bool]:
        session.login("alice")
        return {"ok": True}

    @app.post("/password")
    async def password(session: SessionDep) -> dict[str, bool]:
        begin_second_factor(session, "alice")
        return {"pending": True}

    return app


def test_session_dep_loads_before_the_handler_and_saves_changes() -> None:
    store = CountingStore(MemoryStore())
    with TestClient(fastapi_app(store), base_url=HTTPS) as client:
        first = client.post("/cart", params={"item": "apple"}).json()
        assert first == {"cart": ["apple"], "loaded_before_touch": True}
        second = client.post("/cart", params={"item": "pear"}).json()
        assert second == {"cart": ["apple", "pear"], "loaded_before_touch": True}
        store.reset()
        assert client.get("/cart").json() == {"cart": ["apple", "pear"]}
        assert dict(store.calls) == {"get": 1}  # the dependency's one awaited read


def test_user_id_dep_refuses_anonymous_and_pending_sessions_with_401() -> None:
    with TestClient(fastapi_app(MemoryStore()), base_url=HTTPS) as client:
        refused = client.get("/me")
        assert refused.status_code == 401
        assert refused.json() == {"detail": "Not logged in"}
        assert refused.headers["www-authenticate"] == "Session"
        client.post("/password")  # password ok, second factor pending: grants nothing
        pending = client.get("/me")
        assert pending.status_code == 401
        client.post("/login")
        assert client.get("/me").json() == {"user": "alice"}


def test_session_dep_on_sqlite(tmp_path: Path) -> None:
    clock = FrozenClock()
    store = CountingStore(SQLiteStore(tmp_path / "s.db", clock=clock))
    with TestClient(fastapi_app(store, clock), base_url=HTTPS) as client:
        client.post("/cart", params={"item": "fig"})
        store.reset()
        assert client.get("/cart").json() == {"cart": ["fig"]}
        assert dict(store.calls) == {"get": 1}
        client.portal.call(store.aclose)  # type: ignore[union-attr]


@pytest.mark.redis
def test_session_dep_on_redis(redis_url: str, redis_prefix: str) -> None:
    store = CountingStore(RedisStore.from_url(redis_url, prefix=redis_prefix))
    with TestClient(fastapi_app(store), base_url=HTTPS) as client:
        client.post("/cart", params={"item": "kiwi"})
        store.reset()
        assert client.get("/cart").json() == {"cart": ["kiwi"]}
        assert dict(store.calls) == {"get": 1}  # preloaded once; the dependency adds nothing
        client.portal.call(store.aclose)  # type: ignore[union-attr]


def test_session_dep_without_the_middleware_is_a_clear_error() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(session: SessionDep) -> dict[str, int]:
        return {"n": len(session)}

    with TestClient(app, base_url=HTTPS) as client, pytest.raises(ConfigurationError) as info:
        client.get("/")
    assert "SessionMiddleware" in str(info.value)


# -- the memory store's inline path (no coroutine per store call) --------------------------------


async def incr(request: Request) -> JSONResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JSONResponse({"n": request.session["n"]})


async def read(request: Request) -> JSONResponse:
    return JSONResponse({"n": request.session.get("n"), "user": request.session.user_id})


async def do_login(request: Request) -> JSONResponse:
    get_session(request).login("bob")
    return JSONResponse({"ok": True})


async def do_logout(request: Request) -> JSONResponse:
    get_session(request).logout()
    return JSONResponse({"ok": True})


async def handle(request: Request) -> JSONResponse:
    return JSONResponse({"handle": request.session.handle})


@pytest.fixture
def inline_client() -> Iterator[tuple[TestClient, MemoryStore]]:
    store = MemoryStore()
    app = Starlette(
        routes=[
            Route("/incr", incr, methods=["POST"]),
            Route("/read", read),
            Route("/login", do_login, methods=["POST"]),
            Route("/logout", do_logout, methods=["POST"]),
        ],
        middleware=[Middleware(SessionMiddleware, store=store, production=False)],
    )
    with TestClient(app, base_url=HTTPS) as client:
        yield client, store


def stored(store: MemoryStore, session_id: str) -> bytes | None:
    return store.sync.get(record_key(session_handle(session_id)))


def test_only_a_never_blocking_sync_side_runs_inline(tmp_path: Path) -> None:
    def inline(store: Store) -> bool:
        return SessionMiddleware(incr, store=store, production=False).engine.inline

    assert inline(MemoryStore())
    assert not inline(CountingStore(MemoryStore()))  # its sync side says nonblocking=False
    assert not inline(SQLiteStore(tmp_path / "s.db"))  # writes can wait on a file lock


def test_inline_saves_behave_like_awaited_ones(
    inline_client: tuple[TestClient, MemoryStore],
) -> None:
    client, store = inline_client
    assert client.post("/incr").json() == {"n": 1}
    first = client.cookies[COOKIE]
    assert client.post("/incr").json() == {"n": 2}
    assert client.get("/read").json() == {"n": 2, "user": None}
    raw = stored(store, first)
    assert raw is not None
    assert raw.endswith(b',"d":{"n":2}}')
    client.post("/login")
    second = client.cookies[COOKIE]
    assert second != first
    assert b'"t":null' in (stored(store, first) or b"")  # the old ID is a dead tombstone
    assert client.get("/read").json() == {"n": 2, "user": "bob"}
    logged_out = client.post("/logout")
    assert "Max-Age=0" in logged_out.headers["set-cookie"]
    assert stored(store, second) is None


# -- the engine's direct paths and its flows agree ----------------------------------------------


def memory_engine() -> tuple[SessionEngine, FrozenClock]:
    clock = FrozenClock()
    return SessionEngine(MemoryStore(clock=clock), clock=clock), clock


def test_save_flow_driven_directly_merges_after_a_lost_race() -> None:
    engine, _clock = memory_engine()
    sync = engine.sync_store
    assert sync is not None
    session_id = drive_sync(engine.create_flow({"a": 0, "b": 0}, **NOBODY), sync)
    first = engine.open(None, cookies={COOKIE: session_id})
    second = engine.open(None, cookies={COOKIE: session_id})
    first["a"] = 1
    second["b"] = 2
    assert drive_sync(engine.save_flow(first), sync) == SaveResult(vary=True)
    assert drive_sync(engine.save_flow(second), sync) == SaveResult(vary=True)  # lost, merged
    again = engine.open(None, cookies={COOKIE: session_id})
    assert dict(again) == {"a": 1, "b": 2}


def test_direct_load_and_the_load_flow_follow_a_renewal_alike() -> None:
    engine, clock = memory_engine()
    sync = engine.sync_store
    assert sync is not None
    old_id = drive_sync(engine.create_flow({"n": 1}, **NOBODY), sync)
    clock.advance(engine.config.renew_every or 0.0)
    renewing = engine.open(None, cookies={COOKIE: old_id})
    renewing["n"] = 2
    result = engine.save_sync(renewing)
    assert result.set_cookie is not None
    assert renewing.id != old_id
    direct = engine.open(None, cookies={COOKIE: old_id}, lazy=False)
    engine.load_sync(direct)
    by_flow = engine.open(None, cookies={COOKIE: old_id}, lazy=False)
    drive_sync(engine.load_flow(by_flow), sync)
    assert dict(direct) == dict(by_flow) == {"n": 2}
    assert direct.handle == by_flow.handle == renewing.handle  # both read the successor record
    clock.advance(engine.config.renew_grace)
    late = engine.open(None, cookies={COOKIE: old_id})
    assert len(late) == 0
    assert late.is_new  # past the grace window the old ID is refused
