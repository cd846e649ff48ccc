"""Group ``stores``: each bastion store's get, set and compare_and_set against the raw operation.

Baselines, measured in the same run and the same event loop:

* memory: a plain ``dict`` lookup, assignment, and compare-then-assign, called synchronously.
* sqlite: the same SQL statement on a file with the store's settings (WAL, ``synchronous =
  FULL``, autocommit, 5 s busy timeout), executed directly on the calling thread; and the same
  statement sent to a one-thread executor with ``run_in_executor``, as the store does for
  writes (reads run inline), so the table separates the cost of the thread hop from the cost of
  the store itself.
* redis: ``redis.asyncio`` ``GET``, ``SET ... PX`` and a minimal compare-and-set Lua script sent
  with ``EVALSHA``, on the same server as the store.

Every write carries a one-hour TTL (sessions always expire) and a 100-byte value. Each
compare_and_set succeeds: it swaps the stored value for itself, so every iteration takes the
full write path. The Redis server is started here (on a free port, AOF fsync relaxed to the
``everysec`` default so that disk flushes do not dominate) unless ``--redis-url`` names one, in
which case its settings are left alone and only keys under ``bastion-bench:`` are touched.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Final

from redis.asyncio import Redis

from bastion.stores import open_store
from bastion.testing.redis_server import RedisServer
from bench.group import Group
from bench.measure import async_case, sync_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from bastion.stores import Store
    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP", "RawSQLite", "store_cases"]

VALUE: Final = bytes(range(100))
TTL: Final = 3600.0
TTL_MS: Final = 3_600_000
GET_KEY: Final = "get"
SET_KEY: Final = "set"
CAS_KEY: Final = "cas"
OPS: Final = ("get", "set", "cas")
RAW_GET_KEY: Final = GET_KEY.encode()  # the store keeps keys as UTF-8 blobs too
RAW_SET_KEY: Final = SET_KEY.encode()
RAW_CAS_KEY: Final = CAS_KEY.encode()
BASTION_REDIS_PREFIX: Final = "bastion-bench:"
RAW_REDIS_PREFIX: Final = "bastion-bench-raw:"
MEMORY_WEIGHT: Final = 20  # dict operations take nanoseconds: longer batches for those cases

SQL_TABLE: Final = """
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, expires_at REAL
) WITHOUT ROWID"""
SQL_GET: Final = "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"
SQL_SET: Final = """
INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"""
SQL_CAS: Final = """
UPDATE kv SET value = ?, expires_at = ?
WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)"""

# KEYS[1] key; ARGV[1] expected, ARGV[2] new value, ARGV[3] TTL in ms.
REDIS_CAS_LUA: Final = """\
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"stores bench set-up check failed: {what}")


class RawSQLite:
    """The store's three statements on one connection with the store's settings, nothing else.

    Like the store, each operation reads the wall clock once for expiry and is one autocommit
    statement. The connection belongs to the thread that created it.
    """

    __slots__ = ("_conn",)

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        (mode,) = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
        _expect(str(mode).lower() == "wal", f"{path} refused WAL mode")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute(SQL_TABLE)
        self._conn.execute(SQL_SET, (RAW_GET_KEY, VALUE, time.time() + TTL))
        self._conn.execute(SQL_SET, (RAW_CAS_KEY, VALUE, time.time() + TTL))

    def get(self) -> bytes | None:
        rows = self._conn.execute(SQL_GET, (RAW_GET_KEY, time.time())).fetchall()
        return bytes(rows[0][0]) if rows else None

    def set(self) -> None:
        self._conn.execute(SQL_SET, (RAW_SET_KEY, VALUE, time.time() + TTL))

    def cas(self) -> bool:
        now = time.time()
        cursor = self._conn.execute(SQL_CAS, (VALUE, now + TTL, RAW_CAS_KEY, VALUE, now))
        return cursor.rowcount == 1

    def close(self) -> None:
        self._conn.close()


async def _seed_and_check(label: str, store: Store) -> None:
    await store.set(GET_KEY, VALUE, TTL)
    await store.set(CAS_KEY, VALUE, TTL)
    _expect(await store.get(GET_KEY) == VALUE, f"bastion {label} get did not return the value")
    _expect(
        await store.compare_and_set(CAS_KEY, VALUE, VALUE, TTL),
        f"bastion {label} compare_and_set did not win",
    )


def _bastion_ops(store: Store) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "get": partial(store.get, GET_KEY),
        "set": partial(store.set, SET_KEY, VALUE, TTL),
        "cas": partial(store.compare_and_set, CAS_KEY, VALUE, VALUE, TTL),
    }


async def _memory_cases(stack: AsyncExitStack) -> list[Case]:
    store = open_store("memory://")
    stack.push_async_callback(store.aclose)
    await _seed_and_check("memory", store)
    data: dict[str, bytes] = {GET_KEY: VALUE, CAS_KEY: VALUE}

    def dict_cas() -> bool:
        if data.get(CAS_KEY) == VALUE:
            data[CAS_KEY] = VALUE
            return True
        return False

    _expect(dict_cas(), "dict compare-and-set did not win")
    raw_ops: dict[str, Callable[[], object]] = {
        "get": partial(data.get, GET_KEY),
        "set": partial(data.__setitem__, SET_KEY, VALUE),
        "cas": dict_cas,
    }
    ours = _bastion_ops(store)
    cases: list[Case] = []
    for op in OPS:
        base = f"memory {op}: dict"
        cases += [
            sync_case(base, raw_ops[op], weight=MEMORY_WEIGHT),
            async_case(f"memory {op}: bastion", ours[op], baseline=base, weight=MEMORY_WEIGHT),
        ]
    return cases


async def _sqlite_cases(stack: AsyncExitStack, directory: Path) -> list[Case]:
    loop = asyncio.get_running_loop()
    direct = RawSQLite(directory / "raw-direct.db")
    stack.callback(direct.close)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-sqlite")
    stack.callback(executor.shutdown, wait=True)
    threaded = await loop.run_in_executor(executor, RawSQLite, directory / "raw-thread.db")
    stack.push_async_callback(partial(loop.run_in_executor, executor, threaded.close))
    store = open_store(f"sqlite:///{directory / 'bastion.db'}")
    stack.push_async_callback(store.aclose)
    await _seed_and_check("sqlite", store)
    _expect(direct.get() == VALUE and direct.cas(), "raw sqlite3 get/cas (direct)")
    _expect(await loop.run_in_executor(executor, threaded.cas), "raw sqlite3 cas (thread)")

    ours = _bastion_ops(store)
    cases: list[Case] = []
    for op in OPS:
        base = f"sqlite {op}: sqlite3"
        thread_op = partial(loop.run_in_executor, executor, getattr(threaded, op))
        cases += [
            sync_case(base, getattr(direct, op)),
            async_case(f"sqlite {op}: sqlite3 + thread", thread_op, baseline=base),
            async_case(f"sqlite {op}: bastion", ours[op], baseline=base),
        ]
    return cases


async def _redis_cases(stack: AsyncExitStack, redis_url: str | None) -> list[Case]:
    if redis_url is None:
        server = stack.enter_context(RedisServer())
        url = server.url
    else:
        url = redis_url
    client = Redis.from_url(url)
    stack.push_async_callback(client.aclose)
    if redis_url is None:
        # Our own throwaway server: fsync once a second (Redis's default AOF policy), not on
        # every write, so the figures measure the client path rather than the disk.
        await client.config_set("appendfsync", "everysec")
    raw_keys = {op: f"{RAW_REDIS_PREFIX}{op}".encode() for op in OPS}
    store = open_store(url, prefix=BASTION_REDIS_PREFIX)
    stack.push_async_callback(store.aclose)
    ours_keys = [f"{BASTION_REDIS_PREFIX}{key}" for key in (GET_KEY, SET_KEY, CAS_KEY)]
    stack.push_async_callback(client.delete, *raw_keys.values(), *ours_keys)

    await client.set(raw_keys["get"], VALUE, px=TTL_MS)
    await client.set(raw_keys["cas"], VALUE, px=TTL_MS)
    cas_script = client.register_script(REDIS_CAS_LUA)
    cas_args: list[bytes | int] = [VALUE, VALUE, TTL_MS]
    _expect(await client.get(raw_keys["get"]) == VALUE, "raw redis GET")
    _expect(await cas_script(keys=[raw_keys["cas"]], args=cas_args) == 1, "raw redis Lua CAS")
    await _seed_and_check("redis", store)

    raw_ops: dict[str, tuple[str, Callable[[], Awaitable[object]]]] = {
        "get": ("redis-py GET", partial(client.get, raw_keys["get"])),
        "set": ("redis-py SET", partial(client.set, raw_keys["set"], VALUE, px=TTL_MS)),
        "cas": ("redis-py Lua", partial(cas_script, keys=[raw_keys["cas"]], args=cas_args)),
    }
    ours = _bastion_ops(store)
    cases: list[Case] = []
    for op in OPS:
        label, raw_op = raw_ops[op]
        base = f"redis {op}: {label}"
        cases += [
            async_case(base, raw_op),
            async_case(f"redis {op}: bastion", ours[op], baseline=base),
        ]
    return cases


@asynccontextmanager
async def store_cases(options: Options) -> AsyncIterator[list[Case]]:
    """Memory, SQLite and Redis cases; everything they opened is closed on exit."""
    async with AsyncExitStack() as stack:
        directory = Path(stack.enter_context(TemporaryDirectory(prefix="bastion-bench-")))
        cases = await _memory_cases(stack)
        cases += await _sqlite_cases(stack, directory)
        cases += await _redis_cases(stack, options.redis_url)
        yield cases


GROUP = Group(
    name="stores",
    title=(
        "Store operations (cas = compare_and_set, always winning), 100-byte values, 1 h TTL. "
        "Each row is divided by the raw operation of the same kind: a dict, the same SQL on "
        "sqlite3 with the store's pragmas (WAL, synchronous=FULL), redis-py on the same server. "
        f"memory rows run {MEMORY_WEIGHT}x the batch size."
    ),
    iterations=1000,
    cases=store_cases,
)
