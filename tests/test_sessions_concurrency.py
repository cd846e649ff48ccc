"""Concurrent requests on one session, and the per-user registry, on memory, SQLite and Redis.

Requests are simulated with the engine directly: each is a Session opened from the same cookie,
loaded, changed, and saved in a chosen interleaving (and with ``asyncio.gather`` for true
concurrency), against real stores.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from bastion.core.clock import FrozenClock
from bastion.core.sessions import SessionConfig, record_key, session_handle
from bastion.engine.sessions import SessionEngine
from bastion.stores.memory import MemoryStore
from bastion.stores.postgres import PostgresStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from scaled_redis import scaled_url
from session_flows import COOKIE, cookie_value, request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from bastion.stores.base import Store


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


REDIS = pytest.mark.redis
SHARED = ["redis", "redis-cluster", "redis-sentinel"]


@pytest_asyncio.fixture(
    params=[
        "memory",
        "sqlite",
        "postgres",
        *(pytest.param(name, marks=REDIS) for name in SHARED),
    ]
)
async def store(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[Store]:
    made: Store
    if request.param == "memory":
        made = MemoryStore(clock=clock)
    elif request.param == "sqlite":
        made = SQLiteStore(tmp_path / "sessions.db", clock=clock)
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        made = PostgresStore.from_url(url, prefix=request.getfixturevalue("redis_prefix"))
    else:
        url = scaled_url(request, request.param)
        made = RedisStore.from_url(url, prefix=request.getfixturevalue("redis_prefix"))
    yield made
    await made.aclose()


@pytest.fixture
def engine(store: Store, clock: FrozenClock) -> SessionEngine:
    return SessionEngine(store, config=SessionConfig(renew_every=600, renew_grace=30), clock=clock)


async def new_session(engine: SessionEngine, **data: object) -> str:
    session = await request(engine, None)
    session.update(data)
    return cookie_value(await engine.save(session))


@pytest.mark.asyncio
async def test_changes_to_different_keys_both_survive(engine: SessionEngine) -> None:
    cookie = await new_session(engine, base=0)
    first = await request(engine, cookie)
    second = await request(engine, cookie)
    first["a"] = 1
    second["b"] = 2
    del second["base"]
    await engine.save(first)
    await engine.save(second)
    after = await request(engine, cookie)
    assert dict(after) == {"a": 1, "b": 2}


@pytest.mark.asyncio
async def test_many_truly_concurrent_writers_lose_nothing(engine: SessionEngine) -> None:
    cookie = await new_session(engine, start=True)
    sessions = [await request(engine, cookie) for _ in range(8)]
    for index, session in enumerate(sessions):
        session[f"k{index}"] = index
    await asyncio.gather(*(engine.save(session) for session in sessions))
    after = await request(engine, cookie)
    assert dict(after) == {"start": True} | {f"k{i}": i for i in range(8)}


@pytest.mark.asyncio
async def test_logout_during_a_slow_request_stays_logged_out(
    engine: SessionEngine, store: Store
) -> None:
    cookie = await new_session(engine, cart=["book"])
    slow = await request(engine, cookie)
    quitting = await request(engine, cookie)
    quitting.logout()
    await engine.save(quitting)
    slow["cart"] = ["book", "pen"]
    result = await engine.save(slow)
    assert result.set_cookie is not None
    assert result.set_cookie.startswith(f"{COOKIE}=; Max-Age=0")
    assert await store.get(record_key(session_handle(cookie))) is None
    again = await request(engine, cookie)
    assert again.is_new
    assert dict(again) == {}


@pytest.mark.asyncio
async def test_revocation_during_a_slow_request_is_not_undone(engine: SessionEngine) -> None:
    cookie = await new_session(engine, visits=1)
    signed_in = await request(engine, cookie)
    signed_in.login("carol")
    cookie = cookie_value(await engine.save(signed_in))
    slow = await request(engine, cookie)
    assert await engine.revoke_all("carol") == 1
    slow["late"] = True
    await engine.save(slow)
    assert (await request(engine, cookie)).user_id is None


@pytest.mark.asyncio
async def test_renewal_during_parallel_requests_logs_nobody_out(
    engine: SessionEngine, clock: FrozenClock
) -> None:
    cookie = await new_session(engine, n=0)
    clock.advance(601)  # renewal is due
    first = await request(engine, cookie)
    second = await request(engine, cookie)
    first["a"] = 1
    second["b"] = 2
    renewed = await engine.save(first)
    new_cookie = cookie_value(renewed)
    assert new_cookie != cookie
    # The parallel request loses the renewal race: it writes into the winner's record and sets
    # no cookie of its own.
    loser = await engine.save(second)
    assert loser.set_cookie is None
    current = await request(engine, new_cookie)
    assert dict(current) == {"n": 0, "a": 1, "b": 2}
    # A request still sent with the old cookie within the grace window is not logged out.
    late = await request(engine, cookie)
    assert dict(late) == {"n": 0, "a": 1, "b": 2}
    clock.advance(31)
    assert (await request(engine, cookie)).is_new


@pytest.mark.asyncio
async def test_concurrent_renewals_elect_one_winner(
    engine: SessionEngine, clock: FrozenClock
) -> None:
    cookie = await new_session(engine, n=0)
    clock.advance(601)
    sessions = [await request(engine, cookie) for _ in range(4)]
    for index, session in enumerate(sessions):
        session[f"k{index}"] = index
    results = await asyncio.gather(*(engine.save(session) for session in sessions))
    winners = [r for r in results if r.set_cookie is not None]
    assert len(winners) == 1
    current = await request(engine, cookie_value(winners[0]))
    assert dict(current) == {"n": 0, "k0": 0, "k1": 1, "k2": 2, "k3": 3}


@pytest.mark.asyncio
async def test_login_kills_the_old_id_even_for_in_flight_requests(engine: SessionEngine) -> None:
    cookie = await new_session(engine, step=1)
    in_flight = await request(engine, cookie)
    signing_in = await request(engine, cookie)
    signing_in.login("dave")
    new_cookie = cookie_value(await engine.save(signing_in))
    in_flight["step"] = 2
    result = await engine.save(in_flight)
    assert result.set_cookie is not None
    assert result.set_cookie.startswith(f"{COOKIE}=; Max-Age=0")
    assert (await request(engine, cookie)).is_new
    assert (await request(engine, new_cookie)).user_id == "dave"


# -- the per-user registry ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_registry_lists_revokes_one_others_and_all(
    engine: SessionEngine, clock: FrozenClock
) -> None:
    cookies = []
    for device in ("laptop", "phone", "tablet"):
        session = await request(engine, None, client_ip="203.0.113.9", user_agent=device)
        session.login("erin")
        cookies.append(cookie_value(await engine.save(session)))
        clock.advance(5)
    listed = await engine.list_sessions("erin", current=session_handle(cookies[0]))
    assert [info.user_agent for info in listed] == ["laptop", "phone", "tablet"]
    assert [info.current for info in listed] == [True, False, False]
    assert {info.ip for info in listed} == {"203.0.113.9"}
    assert all(info.handle == session_handle(c) for info, c in zip(listed, cookies, strict=True))

    # Last seen moves with use.
    clock.advance(120)
    used = await request(engine, cookies[1])
    used["x"] = 1
    await engine.save(used)
    listed = await engine.list_sessions("erin")
    assert listed[1].last_seen == clock.now()
    assert listed[0].last_seen < clock.now()

    assert await engine.revoke("erin", session_handle(cookies[2]))
    assert not await engine.revoke("erin", session_handle(cookies[2]))
    assert (await request(engine, cookies[2])).is_new
    assert len(await engine.list_sessions("erin")) == 2

    assert await engine.revoke_others("erin", session_handle(cookies[0])) == 1
    assert (await request(engine, cookies[1])).is_new
    assert (await request(engine, cookies[0])).user_id == "erin"

    assert await engine.revoke_all("erin") == 1
    assert await engine.list_sessions("erin") == []
    assert (await request(engine, cookies[0])).is_new


@pytest.mark.asyncio
async def test_registry_follows_logout_and_renewal(
    engine: SessionEngine, clock: FrozenClock
) -> None:
    session = await request(engine, None)
    session.login("finn")
    cookie = cookie_value(await engine.save(session))
    clock.advance(601)
    renewing = await request(engine, cookie)
    renewing["touched"] = True
    renewed = cookie_value(await engine.save(renewing))
    listed = await engine.list_sessions("finn")
    assert [info.handle for info in listed] == [session_handle(renewed)]
    leaving = await request(engine, renewed)
    leaving.logout()
    await engine.save(leaving)
    assert await engine.list_sessions("finn") == []


@pytest.mark.asyncio
async def test_registry_is_per_user_and_ignores_other_users(engine: SessionEngine) -> None:
    made = await engine.create({"k": 1}, user_id="gail")
    other = await engine.create({"k": 2}, user_id="hank")
    assert [i.handle for i in await engine.list_sessions("gail")] == [session_handle(made)]
    assert await engine.revoke("gail", session_handle(other)) is False
    assert (await request(engine, other)).user_id == "hank"
    assert await engine.destroy(made)
    assert await engine.list_sessions("gail") == []
