"""The stores' rate-limit capability: exact counts under threads, processes and tasks; Lua =
Python; one trip.

Limit 100 per 60 s on one key, 2000 attempts: exactly 100 admitted, for every algorithm, on
every store that supports that kind of concurrency. Memory and SQLite run on a FrozenClock;
the Redis store is given the same frozen clock (its ``clock=`` option) so that token refill
or a window boundary during the run cannot blur the count; the server clock has its own test.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import threading
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from bastion.core.clock import FrozenClock
from bastion.core.ratelimit import (
    MICROS,
    Rate,
    State,
    Strategy,
    decode_state,
    encode_state,
    micros,
    step,
)
from bastion.engine.ratelimit import RateLimiter
from bastion.errors import ConfigurationError, StoreError, StoreUnavailable
from bastion.stores import open_store
from bastion.stores.base import Store, SupportsRateLimit
from bastion.stores.keyspace import key_slot
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import LUA_SCRIPTS, RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from bastion.testing.redis_server import RedisServer

NOW = 1_700_000_123.25
RATE = Rate.per(100, 60)
ATTEMPTS = 2000
STRATEGIES = list(Strategy)


async def command_counts(admin: Redis) -> dict[str, int]:
    stats = await admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def close(store: Store) -> None:
    """Close ``store`` from synchronous code."""
    asyncio.run(store.aclose())


def sqlite_store(path: Path, **options: object) -> SQLiteStore:
    return SQLiteStore(path, clock=FrozenClock(NOW), **options)  # type: ignore[arg-type]


def redis_store(url: str, prefix: str | None = None, **options: object) -> RedisStore:
    return RedisStore.from_url(url, prefix=prefix, **options)  # type: ignore[arg-type]


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changed = {name: after[name] - before.get(name, 0) for name in after}
    return {name: n for name, n in changed.items() if n and name != "info"}


@pytest_asyncio.fixture
async def admin(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


# -- the same counts everywhere -----------------------------------------------------------------


def count_in_threads(backend: SupportsRateLimit, strategy: Strategy, key: str) -> int:
    barrier = threading.Barrier(8)
    admitted: list[int] = []

    def work() -> None:
        barrier.wait()
        mine = sum(backend.hit_sync(key, strategy, [RATE])[0].allowed for _ in range(ATTEMPTS // 8))
        admitted.append(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(admitted) == 8
    return sum(admitted)


@pytest.fixture(params=[None, 1e-6], ids=["default-switch", "switch-1us"])
def switch_interval(request: pytest.FixtureRequest) -> Iterator[None]:
    old = sys.getswitchinterval()
    if request.param is not None:
        sys.setswitchinterval(request.param)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


async def count_in_tasks(backend: SupportsRateLimit, strategy: Strategy, key: str) -> int:
    start = asyncio.Event()

    async def work() -> int:
        await start.wait()
        admitted = 0
        for _ in range(ATTEMPTS // 200):
            admitted += (await backend.hit(key, strategy, [RATE]))[0].allowed
        return admitted

    tasks = [asyncio.create_task(work()) for _ in range(200)]
    await asyncio.sleep(0)
    start.set()
    return sum(await asyncio.gather(*tasks))


def _process_worker(
    make: Callable[[], Store],
    strategy: Strategy,
    key: str,
    barrier: threading.Barrier,
    results: multiprocessing.Queue[int],
) -> None:
    backend = make()
    assert isinstance(backend, SupportsRateLimit)
    try:
        barrier.wait()
        results.put(sum(backend.hit_sync(key, strategy, [RATE])[0].allowed for _ in range(250)))
    finally:
        close(backend)


def count_in_processes(make: Callable[[], Store], strategy: Strategy, key: str) -> int:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(8)
    results: multiprocessing.Queue[int] = ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(make, strategy, key, barrier, results))
        for _ in range(8)
    ]
    for proc in procs:
        proc.start()
    counts = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    return sum(counts)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.usefixtures("switch_interval")
def test_memory_threads_exact(strategy: Strategy) -> None:
    backend = MemoryStore(clock=FrozenClock(NOW))
    assert count_in_threads(backend, strategy, "k") == 100


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.asyncio
async def test_memory_tasks_exact(strategy: Strategy) -> None:
    backend = MemoryStore(clock=FrozenClock(NOW))
    assert await count_in_tasks(backend, strategy, "k") == 100


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.usefixtures("switch_interval")
def test_sqlite_threads_exact(strategy: Strategy, tmp_path: Path) -> None:
    backend = sqlite_store(tmp_path / "rl.db")
    try:
        assert count_in_threads(backend, strategy, "k") == 100
    finally:
        close(backend)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sqlite_processes_exact(strategy: Strategy, tmp_path: Path) -> None:
    path = tmp_path / "rl.db"  # a fresh file: the workers also race to create it

    def make() -> Store:
        return sqlite_store(path)

    assert count_in_processes(make, strategy, "k") == 100


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.asyncio
async def test_sqlite_tasks_exact(strategy: Strategy, tmp_path: Path) -> None:
    backend = sqlite_store(tmp_path / "rl.db")
    try:
        assert await count_in_tasks(backend, strategy, "k") == 100
    finally:
        await backend.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.usefixtures("switch_interval")
def test_redis_threads_exact(strategy: Strategy, redis_url: str, redis_prefix: str) -> None:
    backend = redis_store(redis_url, redis_prefix, clock=FrozenClock(NOW))
    try:
        assert count_in_threads(backend, strategy, "k") == 100
    finally:
        close(backend)


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_redis_processes_exact(strategy: Strategy, redis_url: str, redis_prefix: str) -> None:
    def make() -> Store:
        return redis_store(redis_url, redis_prefix, clock=FrozenClock(NOW))

    assert count_in_processes(make, strategy, "k") == 100


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.asyncio
async def test_redis_tasks_exact(strategy: Strategy, redis_url: str, redis_prefix: str) -> None:
    backend = redis_store(redis_url, redis_prefix, clock=FrozenClock(NOW))
    try:
        assert await count_in_tasks(backend, strategy, "k") == 100
    finally:
        await backend.aclose()


# -- behaviour shared by the stores ---------------------------------------------------------


def backends(
    tmp_path: Path, redis_url: str, prefix: str, clock: FrozenClock
) -> list[MemoryStore | SQLiteStore | RedisStore]:
    return [
        MemoryStore(clock=clock),
        SQLiteStore(tmp_path / "rl.db", clock=clock),
        redis_store(redis_url, prefix, clock=clock),
    ]


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_backends_match_the_step_functions(
    strategy: Strategy, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    clock = FrozenClock(NOW)
    rates = [Rate.per(3, 1), Rate.per(5, 10)]
    every = backends(tmp_path, redis_url, redis_prefix, clock)
    states: list[State | None] = [None, None]
    try:
        for gap, cost in [(0, 1), (0, 2), (0.2, 1), (0.5, 1), (0.9, 2), (3, 1), (0, 1), (11, 1)]:
            clock.advance(gap)
            now = micros(clock.now())
            steps = [step(strategy, s, now, cost, r) for s, r in zip(states, rates, strict=True)]
            admitted = all(s.decision.allowed for s in steps)
            expected = [
                s.decision
                if admitted or not s.decision.allowed
                else step(strategy, states[i], now, 0, rates[i]).decision
                for i, s in enumerate(steps)
            ]
            if admitted:
                states = [s.state for s in steps]
            for backend in every:
                assert list(backend.hit_sync("user-1", strategy, rates, cost)) == expected, backend
    finally:
        for backend in every:
            close(backend)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_all_or_nothing_across_rates(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    clock = FrozenClock(NOW)
    rates = [Rate.per(10, 1), Rate.per(3, 60)]
    for backend in backends(tmp_path, redis_url, redis_prefix, clock):
        try:
            for _ in range(3):
                assert all(d.allowed for d in await backend.hit("k", Strategy.FIXED_WINDOW, rates))
            first, second = await backend.hit("k", Strategy.FIXED_WINDOW, rates)
            # the refusal of the daily-style limit does not charge the per-second one
            assert (first.allowed, first.remaining) == (True, 7)
            assert (second.allowed, second.remaining) == (False, 0)
        finally:
            await backend.aclose()


def test_memory_bounded_keys() -> None:
    backend = MemoryStore(max_entries=3, clock=FrozenClock(NOW))
    for i in range(10):
        backend.hit_sync(f"k{i}", Strategy.TOKEN_BUCKET, [RATE])
    assert backend.rate_limit_states == 3
    with pytest.raises(ConfigurationError, match="max_entries"):
        MemoryStore(max_entries=0)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_a_flood_of_new_keys_cannot_push_out_a_refused_client(strategy: Strategy) -> None:
    """Issue 11, item 5's class (state an anonymous client makes the server create): a client
    refused by its limit, then 10,000 one-hit keys (a new IPv6 /64 each) through a store of 100
    keys. Least-recently-used eviction dropped the refused client's state first (a refusal
    does not touch it), and the client got a fresh allowance; it must stay refused."""
    clock = FrozenClock(NOW)
    backend = MemoryStore(max_entries=100, clock=clock)
    rate = Rate.per(5, 3600)
    for _ in range(5):
        assert backend.hit_sync("attacker", strategy, [rate])[0].allowed
    assert not backend.hit_sync("attacker", strategy, [rate])[0].allowed
    for i in range(10_000):
        backend.hit_sync(f"2001:db8:{i:x}::/64", strategy, [rate])
        if i % 97 == 0:  # the attacker keeps trying meanwhile: every try is refused
            assert not backend.hit_sync("attacker", strategy, [rate])[0].allowed, i
    assert backend.rate_limit_states == 100
    assert not backend.hit_sync("attacker", strategy, [rate])[0].allowed


def test_a_full_memory_store_drops_an_expired_state_first() -> None:
    clock = FrozenClock(NOW)
    backend = MemoryStore(max_entries=2, clock=clock)
    short, long = Rate.per(1, 1), Rate.per(1, 3600)
    backend.hit_sync("old-long", Strategy.FIXED_WINDOW, [long])
    backend.hit_sync("short", Strategy.FIXED_WINDOW, [short])
    clock.advance(2)  # "short" has expired; "old-long" is older but live
    backend.hit_sync("new", Strategy.FIXED_WINDOW, [long])
    assert not backend.hit_sync("old-long", Strategy.FIXED_WINDOW, [long])[0].allowed


def test_sqlite_expired_rows_are_ignored_and_purged(tmp_path: Path) -> None:
    clock = FrozenClock(NOW)
    backend = SQLiteStore(tmp_path / "rl.db", clock=clock, purge_every=2)
    try:
        assert backend.hit_sync("a", Strategy.FIXED_WINDOW, [Rate.per(1, 1)])[0].allowed
        assert not backend.hit_sync("a", Strategy.FIXED_WINDOW, [Rate.per(1, 1)])[0].allowed
        clock.advance(2)
        assert backend.hit_sync("b", Strategy.FIXED_WINDOW, [Rate.per(1, 1)])[0].allowed
        assert backend.hit_sync("a", Strategy.FIXED_WINDOW, [Rate.per(1, 1)])[0].allowed
    finally:
        close(backend)
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(tmp_path / "rl.db") as conn:
        keys = sorted(row[0] for row in conn.execute("SELECT key FROM bastion_ratelimit"))
    conn.close()
    assert keys == [b"a:fixed_window:1/1000000", b"b:fixed_window:1/1000000"]


def test_sqlite_unavailable(tmp_path: Path) -> None:
    backend = SQLiteStore(tmp_path / "missing-dir" / "rl.db")
    with pytest.raises(StoreUnavailable, match="missing-dir"):
        backend.hit_sync("k", Strategy.FIXED_WINDOW, [RATE])
    close(backend)
    with pytest.raises(StoreError, match="is closed"):
        backend.hit_sync("k", Strategy.FIXED_WINDOW, [RATE])


# -- Redis specifics ----------------------------------------------------------------------------

_HARNESS = """
local st = nil
if ARGV[1] ~= '-' then
  st = {}
  for part in string.gmatch(ARGV[1], '[^,]+') do st[#st + 1] = tonumber(part) end
end
local new, expires, ok, remaining, reset, retry = step(st, tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5]))
local parts = {}
for j = 1, #new do parts[j] = string.format('%.0f', new[j]) end
local flag = 0
if ok then flag = 1 end
return {table.concat(parts, ','), string.format('%.0f', expires), flag,
  string.format('%.0f', remaining), string.format('%.0f', reset), string.format('%.0f', retry)}
"""


def _lua_step_function(strategy: Strategy) -> str:
    script = LUA_SCRIPTS[strategy]
    return script[: script.index("local now\n")] + _HARNESS


@pytest.fixture(scope="module")
def sync_admin(redis_url: str) -> Iterator[SyncRedis]:
    client = SyncRedis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.redis
@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 1000),
    period_us=st.sampled_from([1000, 999_999, 60 * MICROS, 86400 * MICROS]),
    hits=st.lists(st.tuples(st.integers(0, 10**8), st.integers(0, 40)), min_size=1, max_size=12),
)
def test_lua_step_is_the_python_step(
    strategy: Strategy,
    sync_admin: SyncRedis,
    limit: int,
    period_us: int,
    hits: list[tuple[int, int]],
) -> None:
    rate = Rate(limit, period_us)
    script = _lua_step_function(strategy)
    state: State | None = None
    now = micros(NOW)
    for gap, cost in hits:
        now += gap
        expected = step(strategy, state, now, cost, rate)
        arg = "-" if state is None else encode_state(state)
        raw = sync_admin.eval(script, 0, arg, now, cost, limit, period_us)
        text, expires, ok, remaining, reset, retry = (
            part.decode() if isinstance(part, bytes) else part for part in raw
        )
        d = expected.decision
        assert decode_state(text) == expected.state
        assert int(expires) == expected.expires_us
        assert bool(ok) is d.allowed
        assert max(0, int(remaining)) == d.remaining
        assert max(0, int(reset)) == round(d.reset_after * MICROS)
        if not d.allowed:
            assert max(0, int(retry)) == round(d.retry_after * MICROS)
        state = expected.state


@pytest.mark.redis
@pytest.mark.asyncio
async def test_one_round_trip_per_decision_with_server_clock(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    server = start_redis_server()
    admin = Redis.from_url(server.url)
    backend = redis_store(server.url)
    rates = [Rate.per(5, 60), Rate.per(50, 3600)]
    try:
        await backend.hit("warm", Strategy.TOKEN_BUCKET, rates)  # loads the script (NOSCRIPT)
        before = await command_counts(admin)
        for _ in range(7):
            decisions = await backend.hit("user-1", Strategy.TOKEN_BUCKET, rates)
        after = await command_counts(admin)
        # Per decision: one EVALSHA from the client; inside it TIME and a GET per key, and a
        # SET per key when admitted (5 of 7). Any other client command would show up here.
        assert delta(before, after) == {"evalsha": 7, "time": 7, "get": 14, "set": 10}
        assert [d.remaining for d in decisions] == [0, 45]
        assert not decisions[0].allowed
        assert 0 < decisions[0].retry_after <= 12
        keys = sorted(await admin.keys("*"))
        assert len(keys) == 4
        assert len({key_slot(key) for key in keys if b"user-1" in key}) == 1
        # the stored state carries the server's time (within a minute of its TIME)
        seconds, _ = await admin.time()
        level, updated = decode_state(await admin.get(keys[2])) or (0, 0)
        assert abs(updated / MICROS - seconds) < 60
        assert level > 0
    finally:
        await backend.aclose()
        await admin.aclose()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_script_reloaded_after_flush(redis_url: str, redis_prefix: str, admin: Redis) -> None:
    backend = redis_store(redis_url, redis_prefix)
    try:
        assert (await backend.hit("k", Strategy.SLIDING_LOG, [RATE]))[0].remaining == 99
        await admin.script_flush()
        assert (await backend.hit("k", Strategy.SLIDING_LOG, [RATE]))[0].remaining == 98
        await admin.script_flush()
        assert backend.hit_sync("k", Strategy.SLIDING_LOG, [RATE])[0].remaining == 97
    finally:
        await backend.aclose()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_redis_stopped_raises_unavailable(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    server = start_redis_server()
    backend = redis_store(server.url, socket_timeout=1, connect_timeout=1)
    try:
        assert (await backend.hit("k", Strategy.FIXED_WINDOW, [RATE]))[0].allowed
        assert backend.hit_sync("k", Strategy.FIXED_WINDOW, [RATE])[0].allowed
        server.stop()
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match="unavailable"):
                await backend.hit("k", Strategy.FIXED_WINDOW, [RATE])
            with pytest.raises(StoreUnavailable, match="unavailable"):
                backend.hit_sync("k", Strategy.FIXED_WINDOW, [RATE])
    finally:
        await backend.aclose()


def test_redis_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        redis_store("redis://localhost", prefix="a{b}")
    with pytest.raises(ConfigurationError, match="redis://"):
        redis_store("http://localhost")
    with pytest.raises(ConfigurationError, match="socket_timeout"):
        redis_store("redis://localhost", socket_timeout=0)


@pytest.mark.asyncio
async def test_open_store_opens_the_rate_limit_store(tmp_path: Path) -> None:
    """One opener: every URL open_store takes gives a store with the rate-limit capability."""
    clock = FrozenClock(NOW)
    memory = open_store("memory://", clock=clock, max_entries=5)
    assert isinstance(memory, SupportsRateLimit)
    assert memory.nonblocking is True
    sqlite = open_store(f"sqlite:///{tmp_path / 'rl.db'}", clock=clock)
    assert isinstance(sqlite, SupportsRateLimit)
    assert sqlite.nonblocking is False
    assert sqlite.hit_sync("k", Strategy.FIXED_WINDOW, [RATE])[0].remaining == 99
    await sqlite.aclose()
    assert (tmp_path / "rl.db").exists()
    redis_backend = open_store("redis://127.0.0.1:1/0", prefix="app:")
    assert isinstance(redis_backend, SupportsRateLimit)
    assert redis_backend.nonblocking is False
    with pytest.raises(StoreUnavailable):
        redis_backend.hit_sync("k", Strategy.FIXED_WINDOW, [RATE])
    await redis_backend.aclose()
    await memory.aclose()


@pytest.mark.asyncio
async def test_sqlite_counters_and_entries_share_one_file_and_one_close(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "one.db", clock=FrozenClock(NOW))
    await store.set("session:x", b"v")
    assert (await store.hit("k", Strategy.FIXED_WINDOW, [RATE]))[0].remaining == 99
    assert store.hit_sync("k", Strategy.FIXED_WINDOW, [RATE])[0].remaining == 98
    await store.aclose()
    import sqlite3  # noqa: PLC0415

    with sqlite3.connect(tmp_path / "one.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"bastion_kv", "bastion_ratelimit"} <= tables
    with pytest.raises(StoreError, match="is closed"):
        await store.hit("k", Strategy.FIXED_WINDOW, [RATE])


def test_a_store_without_the_capability_is_refused_by_name() -> None:
    """RateLimiter(store) takes a Store; one that cannot decide rate limits is a clear
    ConfigurationError naming what it lacks, not an AttributeError on the first request."""
    plain = KeyValueOnly(MemoryStore())  # a real Store, without hit/hit_sync
    with pytest.raises(ConfigurationError, match="lacks hit, hit_sync, nonblocking") as info:
        RateLimiter(plain)  # type: ignore[arg-type]
    assert info.value.setting == "store"
    with pytest.raises(ConfigurationError, match="SupportsRateLimit"):
        RateLimiter(MemoryStore(), fallback=plain)  # type: ignore[arg-type]
    # a counting wrapper has the capability exactly when the store it wraps has it
    counted = CountingStore(MemoryStore())
    RateLimiter(counted)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="lacks hit"):
        RateLimiter(CountingStore(plain))  # type: ignore[arg-type]


class KeyValueOnly:
    """The four key-value operations of a store and nothing else (a third-party store that
    has not implemented the rate-limit capability)."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner

    async def get(self, key: str) -> bytes | None:
        return await self._inner.get(key)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._inner.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return await self._inner.delete(key)

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        return await self._inner.compare_and_set(key, expected, value, ttl)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_redis_url_prefix_is_read_like_the_key_value_store(
    redis_url: str, redis_prefix: str
) -> None:
    """``?prefix=`` names the rate-limit keys as it names the others (and never reaches
    redis-py's socket); ``?transport=`` applies to the scripts too."""
    prefix = redis_prefix.rstrip(":") + "-url:"
    url = f"{redis_url}?prefix={prefix}&transport=resp"
    backend = open_store(url, clock=FrozenClock(NOW))
    assert isinstance(backend, RedisStore)
    try:
        assert backend.prefix == prefix
        assert backend.hit_sync("k", Strategy.FIXED_WINDOW, [RATE])[0].remaining == 99
        client = SyncRedis.from_url(redis_url)
        try:
            keys = client.keys(f"{prefix}*")
            assert keys == backend.rate_limit_keys("k", Strategy.FIXED_WINDOW, [RATE])
        finally:
            client.close()
    finally:
        close(backend)
    with pytest.raises(ConfigurationError, match="both in the URL and as prefix="):
        open_store(url, prefix="other:")
    with pytest.raises(ConfigurationError, match="'prefix' more than once"):
        redis_store(f"{redis_url}?prefix=a:&prefix=b:")
    with pytest.raises(ConfigurationError, match="brace"):
        redis_store(f"{redis_url}?prefix=%7Btag%7D:")


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"synchronous": "off"}, "synchronous"),
        ({"synchronous": ["full"]}, "synchronous"),  # unhashable: still a ConfigurationError
        ({"purge_every": -1}, "purge_every"),
        ({"path": ":memory:"}, "path"),
    ],
)
def test_sqlite_backend_settings_are_validated(
    tmp_path: Path, options: dict[str, object], setting: str
) -> None:
    arguments: dict[str, object] = {"path": tmp_path / "rl.db", **options}
    with pytest.raises(ConfigurationError) as info:
        SQLiteStore(**arguments)  # type: ignore[arg-type]
    assert info.value.setting == setting
