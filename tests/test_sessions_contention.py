"""Many concurrent writers on one session: every change kept, no untyped failure.

40 requests share one cookie and each sets its own key, truly concurrently (``asyncio.gather``
over SQLite's worker thread and Redis's network, and 40 threads on the sync side). The
compare-and-set loop backs off with jitter between attempts; if contention still outlasts it,
the save raises ``StoreBusy`` (a ``StoreUnavailable``: the adapters answer 503 with
``Retry-After``), never a bare ``StoreError``, and nothing unacknowledged is claimed saved.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from bastion.core.clock import FrozenClock
from bastion.engine.sessions import SessionEngine
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from session_flows import COOKIE, cookie_value

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from bastion.stores.base import Store

WRITERS = 40


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest_asyncio.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock
) -> AsyncIterator[Store]:
    made: Store
    if request.param == "sqlite":
        made = SQLiteStore(tmp_path / "sessions.db", clock=clock)
    else:
        made = RedisStore.from_url(
            request.getfixturevalue("redis_url"),
            prefix=request.getfixturevalue("redis_prefix"),
            clock=clock,
        )
    yield made
    await made.aclose()


@pytest.mark.asyncio
async def test_forty_concurrent_writers_all_keep_their_key(
    store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(store, clock=clock)
    first = engine.open(None, lazy=False)
    first["start"] = True
    cookie = cookie_value(await engine.save(first))

    async def writer(index: int) -> None:
        session = engine.open(f"{COOKIE}={cookie}", lazy=False)
        await engine.load(session)
        session[f"k{index}"] = index
        await engine.save(session)

    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    after = engine.open(f"{COOKIE}={cookie}", lazy=False)
    await engine.load(after)
    assert dict(after) == {"start": True} | {f"k{i}": i for i in range(WRITERS)}


@pytest.mark.asyncio
async def test_forty_threads_on_the_sync_side_all_keep_their_key(
    store: Store, clock: FrozenClock
) -> None:
    engine = SessionEngine(store, clock=clock)
    first = engine.open(None)
    first["start"] = True
    cookie = cookie_value(engine.save_sync(first))
    failures: list[BaseException] = []
    barrier = threading.Barrier(WRITERS)

    def writer(index: int) -> None:
        try:
            session = engine.open(f"{COOKIE}={cookie}")
            engine.load_sync(session)
            session[f"k{index}"] = index
            barrier.wait(timeout=30)
            engine.save_sync(session)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    after = engine.open(f"{COOKIE}={cookie}")
    engine.load_sync(after)
    assert dict(after) == {"start": True} | {f"k{i}": i for i in range(WRITERS)}


class Contender:
    """A real store with a competing writer: once armed, every compare-and-set of a session
    record is preceded by another write of that record, so the caller's CAS always loses."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.armed = False
        self.rounds = 0

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self.inner.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await self.inner.delete(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        if self.armed and key.startswith("session:") and expected is not None:
            self.rounds += 1
            current = await self.inner.get(key)
            if current is not None:
                # The competitor rewrites the record with a different idle clock, as a
                # parallel request's touch would.
                competing = current.replace(b'"s":', b'"s": ', 1)
                await self.inner.set(key, competing, ttl)
        return await self.inner.compare_and_set(key, expected, value, ttl)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_contention_that_outlasts_the_backoff_is_a_503_with_retry_after() -> None:
    import warnings  # noqa: PLC0415 (this test only)

    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.exceptions import StarletteDeprecationWarning  # noqa: PLC0415
    from starlette.middleware import Middleware  # noqa: PLC0415
    from starlette.requests import Request  # noqa: PLC0415, TC002
    from starlette.responses import JSONResponse  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    from bastion.asgi.sessions import SessionMiddleware  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StarletteDeprecationWarning)
        from starlette.testclient import TestClient  # noqa: PLC0415

    async def put(request: Request) -> JSONResponse:
        request.session[request.query_params["key"]] = 1
        return JSONResponse({"ok": True})

    store = Contender(MemoryStore())
    app = Starlette(
        routes=[Route("/put", put, methods=["POST"])],
        middleware=[Middleware(SessionMiddleware, store=store, production=False)],
    )
    with TestClient(app, base_url="https://localhost") as client:
        assert client.post("/put", params={"key": "a"}).status_code == 200
        store.armed = True
        response = client.post("/put", params={"key": "b"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert store.rounds == 1 + 32  # the first write, then every backed-off retry
        store.armed = False
        cookie = client.cookies[COOKIE]
        session = SessionEngine(store.inner).open(f"{COOKIE}={cookie}")
        SessionEngine(store.inner).load_sync(session)
        assert dict(session) == {"a": 1}  # the refused change was not kept, nor claimed
