"""The Redis store's connections: bounded across threads and event loops, every command bounded
by a deadline, every reply by a size cap.

Real parts only: a private redis-server (so ``INFO clients`` counts this test's connections
alone), and, for a server that misbehaves on purpose, a tiny TCP server in a thread that speaks
just enough RESP (a test peer, not a store mock).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from redis import Redis as SyncRedis

from bastion.core.ratelimit import Rate, Strategy
from bastion.errors import (
    ConfigurationError,
    StoreConnectionError,
    StoreCorrupt,
    StoreError,
    StoreTimeout,
)
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bastion.testing.redis_server import RedisServer

    StartServer = Callable[..., RedisServer]

pytestmark = pytest.mark.redis


def open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def connected_clients(server: RedisServer) -> int:
    admin = SyncRedis(host=server.host, port=server.port)
    try:
        # The admin connection itself is one of them.
        return int(admin.info("clients")["connected_clients"]) - 1
    finally:
        admin.close()


@pytest.fixture
def server(start_redis_server: StartServer) -> RedisServer:
    return start_redis_server()


# -- 1. the sync side: one bounded pool shared by threads ----------------------------------------


@pytest.mark.parametrize("transport", ["resp", "redis-py"])
def test_short_lived_threads_do_not_leak_connections(server: RedisServer, transport: str) -> None:
    """300 threads that each make a few calls and end (a threaded WSGI server, anyio's worker
    threads) leave neither server connections nor descriptors behind."""
    store = RedisStore.from_url(server.url, transport=transport, max_connections=8)
    sync = store.sync
    sync.set("k", b"v")
    fds_before = open_fds()
    failures: list[BaseException] = []

    def request() -> None:
        try:
            for _ in range(3):
                if sync.get("k") != b"v":
                    raise AssertionError("lost the value")
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    try:
        for _ in range(30):  # 30 waves of 10 concurrent, short-lived threads
            threads = [threading.Thread(target=request) for _ in range(10)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert failures == []
        assert connected_clients(server) <= 8
        assert open_fds() <= fds_before + 8
    finally:
        asyncio.run(store.aclose())
    assert connected_clients(server) == 0


def test_a_full_pool_makes_callers_wait_within_the_timeout(server: RedisServer) -> None:
    """With every connection in use, a caller waits for one; if none frees up within the
    timeout it gets StoreTimeout (typed, bounded), never an unbounded wait."""
    store = RedisStore.from_url(server.url, transport="resp", max_connections=1, socket_timeout=0.5)
    sync = store.sync
    blocker = SyncRedis(host=server.host, port=server.port)
    try:
        sync.set("k", b"v")
        # A second thread holds the only connection in a command that blocks on the server.
        started = threading.Event()

        def hold() -> None:
            started.set()
            with contextlib.suppress(StoreError):
                sync.compare_and_set("k", b"v", b"w")

        blocker.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        holder = threading.Thread(target=hold)
        holder.start()
        started.wait()
        time.sleep(0.1)
        began = time.monotonic()
        with pytest.raises(StoreTimeout):
            sync.get("k")
        assert time.monotonic() - began < 1.5
        holder.join()
        time.sleep(max(0.0, began + 1.6 - time.monotonic()))  # the pause is over
        assert sync.get("k") in {b"v", b"w"}  # the pool recovered: a broken one was replaced
        assert connected_clients(server) <= 2  # the store's one, and the blocker
    finally:
        blocker.close()
        asyncio.run(store.aclose())


def test_an_idle_connection_the_server_dropped_is_replaced(server: RedisServer) -> None:
    """A connection closed by the server while idle (restart, CLIENT KILL, idle timeout) is
    noticed at check-out and replaced: the next call succeeds."""
    store = RedisStore.from_url(server.url, transport="resp", client_name="victim")
    admin = SyncRedis(host=server.host, port=server.port)
    try:
        store.sync.set("k", b"v")
        admin.client_kill_filter(skipme=True, _type="normal")
        time.sleep(0.05)
        assert store.sync.get("k") == b"v"
    finally:
        admin.close()
        asyncio.run(store.aclose())


# -- 3. the async side: connections belong to one event loop ---------------------------------


@pytest.mark.parametrize("transport", ["resp", "redis-py"])
def test_asyncio_run_per_call_always_works_and_leaks_nothing(
    server: RedisServer, transport: str
) -> None:
    """One ``asyncio.run()`` per request (Flask async views, asgiref, pytest-asyncio): every
    call from every fresh loop succeeds, and the closed loops' connections are closed."""
    store = RedisStore.from_url(server.url, transport=transport)

    async def request(i: int) -> bytes | None:
        await store.set(f"k{i}", b"v%d" % i)
        return await store.get(f"k{i}")

    try:
        asyncio.run(request(-1))
        fds_before = open_fds()
        results = [asyncio.run(request(i)) for i in range(50)]
        assert results == [b"v%d" % i for i in range(50)]
        assert open_fds() <= fds_before + 2
        assert connected_clients(server) <= 2
    finally:
        asyncio.run(store.aclose())
    assert connected_clients(server) == 0


def test_asyncio_run_per_call_works_for_the_rate_limit_store(server: RedisServer) -> None:
    backend = RedisStore.from_url(server.url)
    rate = Rate.per(1000, 60)
    try:
        remaining = [
            asyncio.run(backend.hit("k", Strategy.FIXED_WINDOW, [rate]))[0].remaining
            for _ in range(20)
        ]
        assert remaining == list(range(999, 979, -1))
        assert connected_clients(server) <= 2
    finally:
        asyncio.run(backend.aclose())


def test_two_event_loops_in_two_threads_do_not_break_each_other(server: RedisServer) -> None:
    store = RedisStore.from_url(server.url, transport="resp")
    failures: list[BaseException] = []
    results: list[int] = []

    def worker(name: str) -> None:
        async def run() -> int:
            done = 0
            for i in range(200):
                await store.set(f"{name}:{i}", name.encode())
                if await store.get(f"{name}:{i}") != name.encode():
                    raise AssertionError("read another loop's reply")
                done += 1
            return done

        try:
            results.append(asyncio.run(run()))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        assert results == [200, 200]
    finally:
        asyncio.run(store.aclose())


def test_cancelling_the_caller_that_opens_the_connection_fails_no_one_else(
    server: RedisServer,
) -> None:
    async def scenario() -> None:
        store = RedisStore.from_url(server.url, transport="resp", max_connections=1)
        try:
            await store.set("k", b"v")
            await store.aclose()  # start from no connection at all
            store = RedisStore.from_url(server.url, transport="resp", max_connections=1)
            opener = asyncio.create_task(store.get("k"))
            waiters = [asyncio.create_task(store.get("k")) for _ in range(5)]
            await asyncio.sleep(0)  # the opener is connecting, the others wait for it
            opener.cancel()
            results = await asyncio.gather(opener, *waiters, return_exceptions=True)
            assert isinstance(results[0], asyncio.CancelledError)
            assert results[1:] == [b"v"] * 5
            assert await store.get("k") == b"v"
        finally:
            await store.aclose()

    asyncio.run(scenario())


# -- 4. a deadline for the whole command, however slowly the reply comes -----------------------


class TricklingServer:
    """A TCP peer that answers every command with ``reply``, ``chunk`` bytes at a time, one
    chunk every ``pause`` seconds. A test peer speaking RESP, not a store."""

    def __init__(self, reply: bytes, *, chunk: int = 1, pause: float = 0.3) -> None:
        self.reply = reply
        self.chunk = chunk
        self.pause = pause
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.port = self._listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> TricklingServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            while not self._stop.is_set():
                try:
                    if not conn.recv(65536):
                        return
                except TimeoutError:
                    continue
                except OSError:
                    return
                for start in range(0, len(self.reply), self.chunk):
                    if self._stop.wait(self.pause):
                        return
                    try:
                        conn.sendall(self.reply[start : start + self.chunk])
                    except OSError:
                        return


@pytest.fixture
def trickling() -> Iterator[TricklingServer]:
    # "$5\r\nhello\r\n": 11 bytes, 0.3 s apart: 3.3 s in all, each byte well within 1 s.
    with TricklingServer(b"$5\r\nhello\r\n") as peer:
        yield peer


def test_sync_get_is_bounded_by_the_timeout_not_per_read(trickling: TricklingServer) -> None:
    store = RedisStore.from_url(trickling.url, transport="resp", socket_timeout=1)
    try:
        began = time.monotonic()
        with pytest.raises(StoreTimeout):
            store.sync.get("k")
        assert time.monotonic() - began < 2.5
    finally:
        asyncio.run(store.aclose())


def test_async_get_is_bounded_by_the_timeout(trickling: TricklingServer) -> None:
    async def scenario() -> float:
        store = RedisStore.from_url(trickling.url, transport="resp", socket_timeout=1)
        try:
            began = time.monotonic()
            with pytest.raises(StoreTimeout):
                await store.get("k")
            return time.monotonic() - began
        finally:
            await store.aclose()

    assert asyncio.run(scenario()) < 2.5


def test_rate_limit_decisions_are_bounded_by_the_timeout_too(trickling: TricklingServer) -> None:
    backend = RedisStore.from_url(trickling.url, socket_timeout=1)
    rate = Rate.per(10, 60)
    try:
        began = time.monotonic()
        with pytest.raises(StoreTimeout):
            backend.hit_sync("k", Strategy.FIXED_WINDOW, [rate])
        assert time.monotonic() - began < 2.5

        async def hit() -> None:
            await backend.hit("k", Strategy.FIXED_WINDOW, [rate])

        began = time.monotonic()
        with pytest.raises(StoreTimeout):
            asyncio.run(hit())
        assert time.monotonic() - began < 2.5
    finally:
        asyncio.run(backend.aclose())


# -- 5. a size cap on replies -------------------------------------------------------------------


@pytest.mark.parametrize("side", ["sync", "async"])
def test_an_oversized_reply_is_refused_with_a_typed_error(side: str) -> None:
    """A broken or hostile server announcing a 600 MB value: the store stops reading at
    max_reply_bytes and raises StoreCorrupt instead of buffering it."""
    garbage = b"$600000000\r\n" + b"x" * (4 * 1024 * 1024)
    with TricklingServer(garbage, chunk=256 * 1024, pause=0.0) as peer:
        store = RedisStore.from_url(peer.url, transport="resp", max_reply_bytes=1024 * 1024)
        try:
            if side == "sync":
                with pytest.raises(StoreCorrupt, match="max_reply_bytes"):
                    store.sync.get("k")
            else:

                async def get() -> None:
                    await store.get("k")

                with pytest.raises(StoreCorrupt, match="max_reply_bytes"):
                    asyncio.run(get())
        finally:
            asyncio.run(store.aclose())


def test_reply_cap_on_a_real_server_and_its_configuration(server: RedisServer) -> None:
    store = RedisStore.from_url(
        f"{server.url}?max_reply_bytes=1048576", transport="resp", prefix="cap:"
    )
    try:
        store.sync.set("big", b"x" * (2 * 1024 * 1024))
        store.sync.set("small", b"s")
        with pytest.raises(StoreCorrupt):
            store.sync.get("big")
        assert store.sync.get("small") == b"s"  # the oversized reply's connection was dropped
    finally:
        asyncio.run(store.aclose())
    for bad in (0, 10, -1, True, "64"):
        with pytest.raises(ConfigurationError, match="max_reply_bytes") as info:
            RedisStore.from_url(server.url, max_reply_bytes=bad)
        assert info.value.setting == "max_reply_bytes"
    with pytest.raises(ConfigurationError, match="max_reply_bytes"):
        RedisStore.from_url(f"{server.url}?max_reply_bytes=lots")


def test_a_refused_connection_is_a_typed_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", transport="resp")
    try:
        with pytest.raises(StoreConnectionError):
            store.sync.get("k")

        async def get() -> None:
            await store.get("k")

        with pytest.raises(StoreConnectionError):
            asyncio.run(get())
    finally:
        asyncio.run(store.aclose())


# -- 5. TTLs and key prefixes ----------------------------------------------------------------------

BAD_TTLS = [10**400, -(10**400), float("nan"), float("inf"), -1, 0, True, "5"]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_a_bad_ttl_is_a_store_error_on_every_store(
    kind: str, tmp_path: Path, server: RedisServer
) -> None:
    if kind == "memory":
        store: MemoryStore | SQLiteStore | RedisStore = MemoryStore()
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "s.db")
    else:
        store = RedisStore.from_url(server.url)

    async def run() -> None:
        for ttl in BAD_TTLS:
            with pytest.raises(StoreError, match="ttl"):
                await store.set("k", b"v", ttl=ttl)  # type: ignore[arg-type]
            with pytest.raises(StoreError, match="ttl"):
                await store.compare_and_set("k", None, b"v", ttl=ttl)  # type: ignore[arg-type]
            with pytest.raises(StoreError, match="ttl"):
                store.sync.set("k", b"v", ttl=ttl)  # type: ignore[arg-type]
        assert await store.get("k") is None
        await store.aclose()

    asyncio.run(run())


def test_prefixes_never_share_a_key(server: RedisServer) -> None:
    """Prefix ``a`` + key ``:b`` used to be the same Redis key as prefix ``a:`` + key ``b``."""
    pairs = [("a", ":b"), ("a:", "b"), ("a:b", "c"), ("a:b:", "c"), ("a", "b:c"), ("a%3A", "b")]
    stores = [RedisStore.from_url(server.url, prefix=prefix) for prefix, _ in pairs]
    try:
        full = {store.full_key(key) for store, (_, key) in zip(stores, pairs, strict=True)}
        # "a:b" and "a:b:" name one namespace (a trailing ':' is optional): one key for both.
        assert len(full) == len(pairs) - 1
        first, second = stores[0], stores[1]
        first.sync.set(":b", b"first")
        second.sync.set("b", b"second")
        assert first.sync.get(":b") == b"first"
        assert second.sync.get("b") == b"second"
        stores.append(RedisStore.from_url(server.url, prefix="app:"))
        assert stores[-1].full_key("k") == b"app:k"  # the usual layout is unchanged
        with pytest.raises(ConfigurationError, match="namespace"):
            RedisStore.from_url(server.url, prefix=":")
    finally:
        for store in stores:
            asyncio.run(store.aclose())
