"""Attacks on sessions found by an adversarial review, each with the exact refusal.

Store TTLs that move with a FrozenClock are those of the memory and SQLite stores (Redis keeps
its own time), so the expiry attacks run on those two.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from flask import Flask, jsonify
from flask import session as flask_session

from bastion.config import Bastion
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.sessions import SessionConfig
from bastion.engine.flows import Flow, Get
from bastion.engine.sessions import SessionEngine, index_key
from bastion.flask import protect
from bastion.stores.memory import MemoryStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.sync_store import CountingStore
from session_flows import COOKIE, cookie_value, login, request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from bastion.stores.base import Store

HOUR = 3600.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def ttl_store(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[Store]:
    opened: Store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "bastion.db", clock=clock)
    )
    yield opened
    await opened.aclose()


# Browser sessions that outlive "remember me" ones: a short remember-me, a long working day.
LONG_BROWSER = SessionConfig(
    idle_timeout=6 * HOUR,
    absolute_lifetime=12 * HOUR,
    persistent_idle_timeout=0.5 * HOUR,
    persistent_absolute_lifetime=1 * HOUR,
    renew_every=None,
)


@pytest.mark.asyncio
async def test_a_revoked_session_stays_revoked_when_browser_sessions_outlive_persistent_ones(
    ttl_store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(ttl_store, config=LONG_BROWSER, clock=clock)
    cookie = await login(engine, "alice")
    clock.advance(1.5 * HOUR)  # past the 1-hour persistent lifetime; the session is live
    assert (await request(engine, cookie)).user_id == "alice"
    await ttl_store.delete(index_key("alice"))  # a session the registry does not list
    await engine.revoke_all("alice")  # the password changed
    assert (await request(engine, cookie)).user_id is None
    # Still within the session's own 12-hour life (and 6-hour idle timeout): the
    # revocation must hold until the record itself is dead.
    for _ in range(4):
        clock.advance(1 * HOUR)
        later = await request(engine, cookie)
        assert later.user_id is None
        assert later._state.rejected == "revoked"


@pytest.mark.asyncio
async def test_the_registry_lists_a_browser_session_for_its_whole_life(
    ttl_store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(ttl_store, config=LONG_BROWSER, clock=clock)
    cookie = await login(engine, "alice")
    clock.advance(2 * HOUR)
    assert (await request(engine, cookie)).user_id == "alice"  # live, and touched
    listed = await engine.list_sessions("alice")
    assert len(listed) == 1
    assert await engine.revoke_all("alice") == 1


# -- anonymous traffic: Flask's per-request idioms on an empty session ----------------------

HTTPS = "https://localhost"
WRITES = ("set", "compare_and_set", "delete")


def flask_app(store: Store) -> Any:
    app = Flask(__name__)
    protect(app, Bastion(store=store, csrf=None, headers=None, environment=Environment.TEST))

    @app.before_request
    def every_request() -> None:
        # Two idioms of Flask apps, run on every request, a bot's included.
        flask_session.permanent = True
        flask_session.modified = True

    @app.get("/")
    def home() -> Any:
        return jsonify(user=flask_session.get("user"))

    @app.post("/cart")
    def cart() -> Any:
        flask_session["cart"] = ["book"]
        return jsonify(ok=True)

    return app


@pytest.fixture(params=["memory", "sqlite"])
def counted(request: pytest.FixtureRequest, tmp_path: Path) -> CountingStore:
    if request.param == "memory":
        return CountingStore(MemoryStore())
    return CountingStore(SQLiteStore(tmp_path / "sessions.db"))


def test_flask_permanent_and_modified_on_an_empty_session_write_nothing(
    counted: CountingStore,
) -> None:
    client = flask_app(counted).test_client()
    for _ in range(25):
        client.delete_cookie(COOKIE, domain="localhost")
        response = client.get("/", base_url=HTTPS)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers  # as Flask: no cookie for an empty session
    assert sum(counted.calls[name] for name in WRITES) == 0
    # The first real write still creates the session, persistent as the app asked.
    response = client.post("/cart", base_url=HTTPS)
    assert response.status_code == 200
    assert "Max-Age=" in response.headers["Set-Cookie"]
    assert counted.calls["compare_and_set"] == 1


# -- "log out other devices" racing a renewal of the caller's own session -------------------


@pytest.mark.asyncio
async def test_log_out_other_devices_keeps_the_callers_session_renewed_by_a_parallel_request(
    any_store: Store, clock: FrozenClock
) -> None:
    config = SessionConfig(renew_every=600, renew_grace=30)
    engine = SessionEngine(any_store, config=config, clock=clock)
    mine = await login(engine, "alice")
    other = await login(engine, "alice")
    clock.advance(601)
    caller = await request(engine, mine)  # the "log out other devices" POST, loaded first
    parallel = await request(engine, mine)  # another tab of the same browser, same cookie
    parallel["seen"] = True
    renewed = cookie_value(await engine.save(parallel))  # the renewal lands first
    assert renewed != mine
    assert await engine.revoke_others("alice", caller.handle) == 1  # the other device only
    assert (await request(engine, renewed)).user_id == "alice"  # the browser's new cookie
    assert (await request(engine, mine)).user_id == "alice"  # the old one, within its grace
    assert (await request(engine, other)).user_id is None
    assert len(await engine.list_sessions("alice")) == 1


def login_sync(engine: SessionEngine, user: str) -> str:
    session = engine.open(None)
    session.login(user)
    return cookie_value(engine.save_sync(session))


def test_a_login_after_the_revocation_is_not_deleted_by_it(
    any_store: Store, clock: FrozenClock
) -> None:
    """The listed sessions a revocation deletes are those its epoch ended, never one made (or
    re-stamped) under the new epoch while it ran."""
    engine = SessionEngine(any_store, config=SessionConfig(), clock=clock)
    old = login_sync(engine, "alice")
    fresh: list[str] = []

    def revocation() -> Flow[int]:
        # The revocation, with a login (the new password, on the phone) landing once the
        # epoch is raised and before the registry is read.
        flow = engine.revoke_flow("alice", lambda index: list(index.entries), everywhere=True)
        result: Any = None
        try:
            while True:
                step = flow.send(result)
                if not fresh and isinstance(step, Get) and step.key == index_key("alice"):
                    clock.advance(1)
                    fresh.append(login_sync(engine, "alice"))
                result = yield step
        except StopIteration as stop:
            return int(stop.value)

    assert engine.run_sync(revocation()) == 1  # the old session only
    assert engine.load_sync(s := engine.open(f"{COOKIE}={fresh[0]}")) is None
    assert s.user_id == "alice"
    gone = engine.open(f"{COOKIE}={old}")
    assert gone.user_id is None


# -- the absolute lifetime: regenerate() moves the ID, not the login's deadline -------------


@pytest.mark.asyncio
async def test_regenerate_does_not_restart_the_absolute_lifetime_of_a_login(
    any_store: Store, clock: FrozenClock
) -> None:
    config = SessionConfig(idle_timeout=HOUR, absolute_lifetime=4 * HOUR, renew_every=None)
    engine = SessionEngine(any_store, config=config, clock=clock)
    cookie = await login(engine, "alice")
    for _ in range(7):  # a step-up (or role switch) every 50 minutes
        clock.advance(50 * 60)
        session = await request(engine, cookie)
        if session.user_id is None:
            break
        session.regenerate()
        cookie = cookie_value(await engine.save(session))
    # Past four hours after the login, the session has ended, however often it moved.
    later = await request(engine, cookie)
    assert later.user_id is None
    assert later._state.rejected in {"absolute_expired", "unknown"}  # "unknown": the store's TTL
