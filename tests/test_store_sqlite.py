"""SQLiteStore on real files: the contract suite, plus schema, WAL, purge and error mapping."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import sys
import threading
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from bastion.core.clock import FrozenClock
from bastion.errors import ConfigurationError, StoreCorrupt, StoreError, StoreUnavailable
from bastion.stores import open_store
from bastion.stores.sqlite import SCHEMA_VERSION, SQLiteStore
from bastion.testing.store_contract import SharedStoreContract

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from bastion.testing.store_contract import AdvanceTime


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bastion.db"


@pytest_asyncio.fixture
async def store(db_path: Path, clock: FrozenClock) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(db_path, clock=clock)
    yield store
    await store.aclose()


@pytest.fixture
def advance_time(clock: FrozenClock) -> AdvanceTime:
    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    return advance


@pytest.fixture
def store_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"  # db_path is absolute: four slashes in all


class TestSQLiteStoreContract(SharedStoreContract):
    """SQLite files are shared by the processes of one host."""


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.asyncio
async def test_file_is_in_wal_mode_with_a_schema_version(store: SQLiteStore) -> None:
    await store.set("k", b"v")
    assert _query(store.path, "PRAGMA journal_mode") == [("wal",)]
    assert _query(store.path, "SELECT id, version FROM bastion_schema") == [(1, SCHEMA_VERSION)]
    assert _query(store.path, "SELECT key, value, expires_at FROM bastion_kv") == [
        (b"k", b"v", None)
    ]


@pytest.mark.asyncio
async def test_expiry_index_is_used_by_the_purge(store: SQLiteStore) -> None:
    await store.set("k", b"v")
    plan = _query(
        store.path,
        "EXPLAIN QUERY PLAN SELECT key FROM bastion_kv WHERE expires_at <= 1 LIMIT 10",
    )
    assert any("bastion_kv_expires_at" in str(row[-1]) for row in plan), plan


@pytest.mark.asyncio
async def test_synchronous_full_by_default(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    try:
        await store.set("k", b"v")
        level = await store._run("test", lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert level == 2  # FULL
    finally:
        await store.aclose()
    normal = SQLiteStore(db_path, synchronous="normal")
    try:
        level = await normal._run("test", lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert level == 1  # NORMAL
    finally:
        await normal.aclose()


@pytest.mark.asyncio
async def test_newer_schema_is_refused(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    await store.set("k", b"v")
    await store.aclose()
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("UPDATE bastion_schema SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    newer = SQLiteStore(db_path)
    try:
        with pytest.raises(StoreError, match="schema version 2") as info:
            await newer.get("k")
        assert str(db_path) in str(info.value)
        assert not isinstance(info.value, StoreUnavailable)
    finally:
        await newer.aclose()
    # The refusal changed nothing.
    assert _query(db_path, "SELECT version FROM bastion_schema") == [(SCHEMA_VERSION + 1,)]


@pytest.mark.asyncio
async def test_purge_expired_deletes_expired_rows(store: SQLiteStore, clock: FrozenClock) -> None:
    for i in range(1100):
        await store.set(f"temp{i}", b"v", ttl=10)
    await store.set("long", b"v", ttl=1000)
    await store.set("permanent", b"v")
    clock.advance(10)
    assert await store.purge_expired() == 1100
    assert await store.purge_expired() == 0
    assert _query(store.path, "SELECT key FROM bastion_kv ORDER BY key") == [
        (b"long",),
        (b"permanent",),
    ]


@pytest.mark.asyncio
async def test_writes_purge_expired_rows_opportunistically(
    db_path: Path, clock: FrozenClock
) -> None:
    store = SQLiteStore(db_path, clock=clock, purge_every=10)
    try:
        for i in range(9):
            await store.set(f"temp{i}", b"v", ttl=5)
        clock.advance(5)
        assert _query(db_path, "SELECT count(*) FROM bastion_kv") == [(9,)]
        await store.set("tenth-write", b"v")
        assert _query(db_path, "SELECT key FROM bastion_kv") == [(b"tenth-write",)]
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_two_stores_on_one_file_see_each_others_writes(db_path: Path) -> None:
    first, second = SQLiteStore(db_path), SQLiteStore(db_path)
    try:
        await first.set("k", b"from first")
        assert await second.get("k") == b"from first"
        assert await second.compare_and_set("k", b"from first", b"from second") is True
        assert await first.get("k") == b"from second"
        assert await first.compare_and_set("k", b"from first", b"stale") is False
        assert await second.delete("k") is True
        assert await first.get("k") is None
    finally:
        await first.aclose()
        await second.aclose()


@pytest.mark.asyncio
async def test_many_stores_opening_a_fresh_file_at_once(db_path: Path) -> None:
    stores = [SQLiteStore(db_path) for _ in range(6)]
    try:
        outcomes = await asyncio.gather(*(s.compare_and_set("k", None, b"v") for s in stores))
        assert sorted(outcomes) == [False] * 5 + [True]
    finally:
        for s in stores:
            await s.aclose()
    assert _query(db_path, "SELECT version FROM bastion_schema") == [(SCHEMA_VERSION,)]


@pytest.mark.asyncio
async def test_acknowledged_data_survives_reopening(db_path: Path, clock: FrozenClock) -> None:
    store = SQLiteStore(db_path, clock=clock)
    await store.set("plain", b"v1")
    await store.set("with-ttl", b"v2", ttl=100)
    assert await store.compare_and_set("cas", None, b"v3") is True
    await store.aclose()
    reopened = SQLiteStore(db_path, clock=clock)
    try:
        assert await reopened.get("plain") == b"v1"
        assert await reopened.get("with-ttl") == b"v2"
        assert await reopened.get("cas") == b"v3"
        clock.advance(100)
        assert await reopened.get("with-ttl") is None
    finally:
        await reopened.aclose()


@pytest.mark.asyncio
async def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database\n" * 200)
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="not a usable SQLite database") as info:
            await store.get("k")
        assert str(path) in str(info.value)
        # A store fault, answered like every other one (503), typed so it can be told apart.
        assert isinstance(info.value, StoreCorrupt)
    finally:
        await store.aclose()
    assert path.read_bytes() == b"this is not a database\n" * 200


@pytest.mark.asyncio
async def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "bastion.db"
    store = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="directory exists") as info:
            await store.set("k", b"v")
        assert str(path) in str(info.value)
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_a_held_write_lock_becomes_unavailable_within_the_timeout(db_path: Path) -> None:
    store = SQLiteStore(db_path, timeout=0.2)
    await store.set("k", b"v")
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="locked") as info:
            await store.set("k", b"w")
        assert str(db_path) in str(info.value)
        assert "timeout=0.2" in str(info.value)
        assert await store.get("k") == b"v"  # WAL: readers do not wait for the writer
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await store.set("k", b"w")  # the store recovers once the lock is released
    assert await store.get("k") == b"w"
    await store.aclose()


@pytest.mark.asyncio
async def test_aclose_stops_the_worker_thread_and_refuses_later_calls(db_path: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    store = SQLiteStore(db_path)
    await store.set("k", b"v")
    workers = [t for t in threading.enumerate() if t.ident not in before]
    assert [t.name.startswith("bastion-sqlite") for t in workers] == [True]
    await store.aclose()
    await store.aclose()  # idempotent
    assert not workers[0].is_alive()
    with pytest.raises(StoreError, match="closed"):
        await store.get("k")


def _new_workers(before: set[int | None]) -> list[str]:
    return [t.name for t in threading.enumerate() if t.ident not in before]


@pytest.mark.asyncio
async def test_reads_run_inline_and_writes_on_the_worker_thread(db_path: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    store = SQLiteStore(db_path)
    try:
        assert await store.get("k") is None
        assert _new_workers(before) == []  # a read needs no thread hop
        await store.set("k", b"v")
        assert [name.startswith("bastion-sqlite") for name in _new_workers(before)] == [True]
        assert await store.get("k") == b"v"  # read-your-writes across the two connections
        await store.compare_and_set("k", b"v", b"w")
        assert await store.get("k") == b"w"
    finally:
        await store.aclose()


@pytest.mark.asyncio
async def test_inline_reads_can_be_turned_off_by_url(db_path: Path) -> None:
    before = {t.ident for t in threading.enumerate()}
    store = open_store(f"sqlite:///{db_path}?inline_reads=false")
    try:
        assert await store.get("k") is None
        assert [name.startswith("bastion-sqlite") for name in _new_workers(before)] == [True]
    finally:
        await store.aclose()
    with pytest.raises(ConfigurationError, match="inline_reads='maybe'") as info:
        open_store(f"sqlite:///{db_path}?inline_reads=maybe")
    assert info.value.setting == "inline_reads"


@pytest.mark.asyncio
async def test_aclose_lets_in_flight_calls_finish(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    writes = [asyncio.ensure_future(store.set(f"k{i}", b"v")) for i in range(20)]
    await asyncio.sleep(0)  # let the writes reach the worker's queue
    await store.aclose()
    await asyncio.gather(*writes)
    assert _query(db_path, "SELECT count(*) FROM bastion_kv") == [(20,)]


@pytest.mark.asyncio
async def test_store_is_usable_from_another_event_loop_thread(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    try:
        await store.set("k", b"from the main loop")
        other = await asyncio.to_thread(asyncio.run, store.get("k"))
        assert other == b"from the main loop"
    finally:
        await store.aclose()


def _use_after_fork(store: SQLiteStore) -> None:
    async def child() -> None:
        if await store.get("k") != b"from the parent":
            raise SystemExit(2)
        await store.set("k", b"from the child")
        # The parent's worker connection and its main thread's read connection: kept, never
        # used or closed here.
        if len(store._inherited) + len(store._threads._inherited) != 2:
            raise SystemExit(3)
        await store.aclose()

    asyncio.run(child())


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX only")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_opens_its_own_connection(db_path: Path) -> None:
    """gunicorn --preload: the app used the store, then the worker processes were forked."""
    store = SQLiteStore(db_path)
    asyncio.run(store.set("k", b"from the parent"))
    assert asyncio.run(store.get("k")) == b"from the parent"  # an inline read: its own connection
    child = multiprocessing.get_context("fork").Process(target=_use_after_fork, args=(store,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert asyncio.run(store.get("k")) == b"from the child"  # the parent's worker still works
    asyncio.run(store.aclose())


def test_repr_names_the_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = SQLiteStore("relative.db")
    assert store.path == tmp_path / "relative.db"
    assert repr(store) == f"SQLiteStore({str(tmp_path / 'relative.db')!r})"


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"synchronous": "off"}, "synchronous"),
        ({"purge_every": -1}, "purge_every"),
        ({"purge_every": 1.5}, "purge_every"),
        ({"inline_reads": "yes"}, "inline_reads"),
    ],
)
def test_settings_are_validated(tmp_path: Path, kwargs: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError, match=setting) as info:
        SQLiteStore(tmp_path / "x.db", **kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


@pytest.mark.parametrize("path", ["", ":memory:"])
def test_path_is_validated(path: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        SQLiteStore(path)
    assert info.value.setting == "path"
