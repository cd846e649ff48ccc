"""The synchronous side of every store (``store.sync``) passes the full store contract.

:class:`~bastion.testing.sync_store.SyncSideAsStore` presents ``store.sync`` through the async
protocol, so the shipped contract suite runs against the sync side unchanged: memory directly,
SQLite on per-thread connections, Redis through its blocking client.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from bastion.core.clock import FrozenClock
from bastion.errors import ConfigurationError, StoreError, StoreUnavailable
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.store_contract import AdvanceTime, StoreContract
from bastion.testing.sync_store import SyncSideAsStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from bastion.testing.redis_server import RedisServer


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def advance_time(clock: FrozenClock) -> AdvanceTime:
    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    return advance


def redis_advance(redis_url: str, redis_prefix: str) -> AdvanceTime:
    """Move the server's time forward for the test's keys by shortening their TTLs."""

    async def advance(seconds: float) -> None:
        admin = Redis.from_url(redis_url)
        try:
            ms = int(seconds * 1000) + 1
            async for key in admin.scan_iter(match=redis_prefix + "*"):
                remaining = await admin.pttl(key)
                if remaining < 0:
                    continue
                if remaining <= ms:
                    await admin.delete(key)
                else:
                    await admin.pexpire(key, remaining - ms)
        finally:
            await admin.aclose()

    return advance


class TestMemorySyncSide(StoreContract):
    @pytest_asyncio.fixture
    async def store(self, clock: FrozenClock) -> AsyncIterator[SyncSideAsStore]:
        store = SyncSideAsStore(MemoryStore(clock=clock))
        yield store
        await store.aclose()


class TestSQLiteSyncSide(StoreContract):
    @pytest_asyncio.fixture
    async def store(self, clock: FrozenClock, tmp_path: Path) -> AsyncIterator[SyncSideAsStore]:
        store = SyncSideAsStore(SQLiteStore(tmp_path / "sync.db", clock=clock))
        yield store
        await store.aclose()


@pytest.mark.redis
class TestRedisSyncSide(StoreContract):
    @pytest_asyncio.fixture
    async def store(self, redis_url: str, redis_prefix: str) -> AsyncIterator[SyncSideAsStore]:
        store = SyncSideAsStore(RedisStore.from_url(redis_url, prefix=redis_prefix))
        yield store
        await store.aclose()

    @pytest.fixture
    def advance_time(self, redis_url: str, redis_prefix: str) -> AdvanceTime:
        return redis_advance(redis_url, redis_prefix)


@pytest.mark.redis
class TestRedisSyncSideOverRedisPy(TestRedisSyncSide):
    """The same contract with ``transport="redis-py"`` (the default is the lean RESP one)."""

    @pytest_asyncio.fixture
    async def store(self, redis_url: str, redis_prefix: str) -> AsyncIterator[SyncSideAsStore]:
        made = RedisStore.from_url(redis_url, prefix=redis_prefix, transport="redis-py")
        store = SyncSideAsStore(made)
        yield store
        await store.aclose()


@pytest.mark.redis
class TestRedisAsyncSideOverRedisPy(StoreContract):
    """The async side with ``transport="redis-py"``, so both transports keep the contract."""

    @pytest_asyncio.fixture
    async def store(self, redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
        store = RedisStore.from_url(redis_url, prefix=redis_prefix, transport="redis-py")
        yield store
        await store.aclose()

    @pytest.fixture
    def advance_time(self, redis_url: str, redis_prefix: str) -> AdvanceTime:
        return redis_advance(redis_url, redis_prefix)


@pytest.mark.redis
def test_transport_choices_are_validated(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="'auto', 'resp' or 'redis-py'") as caught:
        RedisStore.from_url(redis_url, transport="fast")
    assert caught.value.setting == "transport"
    with pytest.raises(ConfigurationError, match="TLS"):
        RedisStore.from_url("rediss://127.0.0.1:6390/0", transport="resp")
    with pytest.raises(ConfigurationError, match="both in the URL"):
        RedisStore.from_url(redis_url + "?transport=resp", transport="resp")
    tls = RedisStore.from_url("rediss://127.0.0.1:6390/0")  # auto: redis-py for TLS
    assert tls._resp is None
    assert RedisStore.from_url(redis_url + "?transport=redis-py")._resp is None
    assert RedisStore.from_url(redis_url)._resp is not None


@pytest.mark.asyncio
async def test_sync_and_async_sides_share_one_sqlite_file(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "shared.db")
    try:
        store.sync.set("k", b"from sync")
        assert await store.get("k") == b"from sync"
        await store.set("k", b"from async")
        seen: list[bytes | None] = []
        thread = threading.Thread(target=lambda: seen.append(store.sync.get("k")))
        thread.start()
        thread.join()
        assert seen == [b"from async"]
        assert store.sync.compare_and_set("k", b"from async", b"swapped")
        assert not store.sync.compare_and_set("k", b"from async", b"again")
    finally:
        store.sync.close()
        await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        store.sync.get("k")


def test_sqlite_sync_side_uses_one_connection_per_thread(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "threads.db")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(50):
                store.sync.set(f"t{n}:{i}", b"v")
                while True:
                    current = store.sync.get("counter")
                    nxt = str(int(current or b"0") + 1).encode()
                    if store.sync.compare_and_set("counter", current, nxt):
                        break
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.sync.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.sync.get("counter") == b"200"
    store.sync.close()


@pytest.mark.redis
def test_redis_sync_side_reports_an_outage(start_redis_server: Callable[..., RedisServer]) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    store.sync.set("k", b"v")
    assert store.sync.get("k") == b"v"
    server.close()
    with pytest.raises(StoreUnavailable, match="unavailable \\(get\\)"):
        store.sync.get("k")
    store.sync.close()


@pytest.mark.redis
def test_redis_sync_side_is_rebuilt_after_fork(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    store.sync.set("parent", b"1")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            ok = store.sync.get("parent") == b"1"
            store.sync.set("child", b"2")
            os.write(write, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.read(read, 2) == b"ok"
    os.close(read)
    assert status == 0
    assert store.sync.get("child") == b"2"
    store.sync.delete("parent")
    store.sync.delete("child")
    store.sync.close()
