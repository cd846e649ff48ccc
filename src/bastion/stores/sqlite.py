"""SQLite store: the embedded default, shared by every worker process on one host.

Layout: one table ``bastion_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, expires_at REAL)``
``WITHOUT ROWID``, a partial index on ``expires_at`` for purging, and a one-row table
``bastion_schema`` holding the schema version. Keys are stored as their UTF-8 bytes, so any
text (NUL included) round-trips; ``expires_at`` is absolute Unix time from the store's clock,
and a row is live while ``expires_at`` is ``NULL`` or later than now.

Concurrency. The file is put in WAL mode (readers never wait for the writer). Every operation
is one SQL statement in autocommit mode, hence one atomic transaction; SQLite serialises the
writers of all processes with a file lock, and a writer that finds the lock taken retries until
its deadline, ``timeout`` seconds after the call began, then raises
:class:`~bastion.errors.StoreBusy` (a :class:`~bastion.errors.StoreUnavailable`). The deadline
covers the whole wait: a write queued behind others on the worker thread gets what is left of
its timeout, never a fresh one, so writes queued behind a lock held elsewhere all fail within
``timeout`` rather than after 1, 2, 3 ... timeouts. Every SQLite fault is classified once, in
:mod:`bastion.stores.faults`, for the key-value side and the rate-limit counters alike (a read-only
file is :class:`~bastion.errors.StoreReadOnly`, a full disk :class:`~bastion.errors.StoreFull`,
a corrupt file :class:`~bastion.errors.StoreCorrupt`: all answer 503, never 500).
``compare_and_set`` is a conditional ``UPDATE`` (or an ``INSERT ... ON CONFLICT DO UPDATE ...
WHERE`` the old row has expired) whose change count says whether it won. The schema is created
or migrated inside ``BEGIN IMMEDIATE``, so processes opening a fresh file at the same moment
take turns; a file written by a newer bastion is refused rather than guessed at.

Event loop. ``sqlite3`` blocks, so every write (``set``, ``delete``, ``compare_and_set``, the
purge) runs on one worker thread owned by the store, started on first use, with one connection
that only that thread touches; coroutines await the result. A write may wait for another
process's write lock and, with ``synchronous="full"``, for an ``fsync``: neither may hold up the
event loop. A read (``get``) is one indexed ``SELECT`` that in WAL mode never waits for a
writer, a few microseconds from the page cache, against about 90 microseconds for the hop to the
worker thread and back; so ``get`` runs inline, on the calling thread's own connection (the one
the sync side uses), unless the store is opened with ``inline_reads=False``. A read sees every
write acknowledged before it (each write commits before its coroutine resumes). The price: in
the rare states where a WAL reader must wait (another process recovering the WAL index after a
crash), that wait, bounded by ``timeout``, happens on the event loop; ``inline_reads=False``
sends reads to the worker thread too. :meth:`SQLiteStore.aclose` closes the worker's connection
and the calling thread's, and stops the thread. A process forked after the store was used gets
a fresh thread and connections on its next call; connections inherited from the parent are kept
referenced and never touched, since SQLite forbids using or closing a connection across
``fork``.

Sync side. ``store.sync`` (:class:`SQLiteSyncStore`) runs the same statements directly on the
calling thread, on a connection of that thread's own (created on first use, closed when the
thread ends, replaced after a fork; see :class:`ThreadConnections`), for WSGI workers and
threads that have no event loop. A read is a few microseconds in WAL mode; a write may wait
up to ``timeout`` for another writer's lock, so do not write through the sync side from an
event loop thread.

Durability. ``synchronous="full"`` (the default) syncs the write-ahead log on every commit:
an acknowledged write survives an application crash, an OS crash and a power cut. This is the
default because the stored facts are security decisions (a logout, a revoked token, a spent
refresh token) that must not come back after a crash. ``synchronous="normal"`` skips that sync:
it survives application crashes, but an OS crash or power cut can roll back the last
transactions, which can resurrect a revoked session. Choose it only when that is acceptable.

Rate limits. ``hit``/``hit_sync`` (:class:`~bastion.stores.base.SupportsRateLimit`) decide in
a table of their own in the same file, one ``BEGIN IMMEDIATE`` transaction per decision, on
counter connections opened with ``synchronous=NORMAL``: see :mod:`bastion.stores._sqlite_ratelimit`
for the layout and why. ``hit`` runs on the worker thread, ``hit_sync`` on the calling thread.

Expired rows. Reads ignore them; :meth:`SQLiteStore.purge_expired` deletes them, and every
``purge_every`` writes one batch is deleted opportunistically. There is no timer thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypeVar

from bastion.core.clock import system_clock
from bastion.errors import ConfigurationError, StoreError
from bastion.stores._sqlite_connect import (
    ThreadConnections,
    bound_lock_wait,
    check_settings,
    open_connection,
)
from bastion.stores._sqlite_ratelimit import SQLiteCounters
from bastion.stores.base import check_key, check_keys, check_ttl, check_value
from bastion.stores.faults import sqlite_fault

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.core.clock import Clock
    from bastion.core.ratelimit import Decision, Rate, Strategy
    from bastion.stores.base import SyncStore

__all__ = [
    "SCHEMA_VERSION",
    "SQLiteStore",
    "SQLiteSyncStore",
    "ThreadConnections",
    "bound_lock_wait",
    "check_settings",
    "open_connection",
]

SCHEMA_VERSION: Final = 1
"""The schema this code reads and writes. A file with a higher version is refused."""

_PURGE_BATCH: Final = 1000
"""Rows deleted per purge statement: bounds how long one purge holds the write lock."""

_T = TypeVar("_T")

logger = logging.getLogger("bastion.stores.sqlite")

_SQL_CREATE_SCHEMA_TABLE: Final = """
CREATE TABLE IF NOT EXISTS bastion_schema (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
)"""
_SQL_SCHEMA_VERSION: Final = "SELECT version FROM bastion_schema WHERE id = 1"
_SQL_SET_SCHEMA_VERSION: Final = """
INSERT INTO bastion_schema (id, version) VALUES (1, ?)
ON CONFLICT (id) DO UPDATE SET version = excluded.version"""
_SQL_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    # version reached -> statements that reach it from the version before
    1: (
        """
        CREATE TABLE bastion_kv (
            key BLOB PRIMARY KEY,
            value BLOB NOT NULL,
            expires_at REAL
        ) WITHOUT ROWID""",
        """
        CREATE INDEX bastion_kv_expires_at ON bastion_kv (expires_at)
        WHERE expires_at IS NOT NULL""",
    ),
}

_SQL_GET: Final = """
SELECT value FROM bastion_kv
WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)"""
_SQL_GET_MANY: Final = """
SELECT key, value FROM bastion_kv
WHERE key IN ({marks}) AND (expires_at IS NULL OR expires_at > ?)"""
_SQL_SET: Final = """
INSERT INTO bastion_kv (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"""
_SQL_DELETE: Final = "DELETE FROM bastion_kv WHERE key = ? RETURNING expires_at"
_SQL_CREATE_IF_ABSENT: Final = """
INSERT INTO bastion_kv (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
WHERE bastion_kv.expires_at IS NOT NULL AND bastion_kv.expires_at <= ?"""
_SQL_SWAP: Final = """
UPDATE bastion_kv SET value = ?, expires_at = ?
WHERE key = ? AND value = ? AND (expires_at IS NULL OR expires_at > ?)"""
_SQL_PURGE: Final = """
DELETE FROM bastion_kv WHERE key IN (
    SELECT key FROM bastion_kv WHERE expires_at <= ? LIMIT ?
)"""


class SQLiteStore:
    """A :class:`~bastion.stores.base.Store` in one SQLite file. See the module docstring.

    ``path`` is the database file (created if missing; its directory must exist). A relative
    path is resolved against the working directory once, here. ``timeout`` (seconds) bounds
    each operation's wait for another connection's write lock, time queued included.
    ``synchronous`` is ``"full"`` or ``"normal"`` (see *Durability*). ``purge_every`` is the
    number of writes between two opportunistic purges of expired rows (``0`` turns them off).
    ``inline_reads`` (default ``True``) runs ``get`` on the calling thread rather than the
    worker thread (see *Event loop*).
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_conn",
        "_counters",
        "_executor",
        "_inherited",
        "_inline_reads",
        "_lock",
        "_path",
        "_pid",
        "_purge_every",
        "_synchronous",
        "_threads",
        "_timeout",
        "_writes",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = system_clock,
        timeout: float = 5.0,
        synchronous: Literal["full", "normal"] = "full",
        purge_every: int = 1000,
        inline_reads: bool = True,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigurationError(
                f"SQLite store path must be a non-empty file path, got {path!r}", setting="path"
            )
        if os.fspath(path) == ":memory:":
            raise ConfigurationError(
                "SQLite store path ':memory:' is not shared between connections; "
                "use memory:// (MemoryStore) for an in-process store",
                setting="path",
            )
        check_settings(timeout=timeout, synchronous=synchronous, purge_every=purge_every)
        if not isinstance(inline_reads, bool):
            raise ConfigurationError(
                f"inline_reads must be True or False, got {inline_reads!r}",
                setting="inline_reads",
            )
        self._inline_reads = inline_reads
        self._path = Path(path).absolute()
        self._clock = clock
        self._timeout = float(timeout)
        self._synchronous: Literal["full", "normal"] = synchronous
        self._purge_every = purge_every
        self._lock = threading.Lock()  # guards _closed, _executor and _pid
        self._closed = False
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0
        # Touched only by the worker thread:
        self._conn: sqlite3.Connection | None = None
        self._writes = 0
        self._inherited: list[sqlite3.Connection] = []
        # The sync side (and inline reads): one connection per calling thread, closed when the
        # thread ends.
        self._threads = ThreadConnections(self._connect)
        # The rate-limit counters: connections of their own (see _sqlite_ratelimit on why).
        self._counters = SQLiteCounters(
            self._path, clock=clock, timeout=self._timeout, purge_every=purge_every
        )

    nonblocking: Final = False
    """Writes can wait on another process's file lock: never call the sync side on a loop."""

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self._path)!r})"

    # -- the Store protocol ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        if self._inline_reads:
            return self._run_sync(*self._op_get(key))
        return await self._run(*self._op_get(key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The live value of each of ``keys``, read by one ``SELECT`` (one snapshot), inline
        like :meth:`get` (:class:`~bastion.stores.base.SupportsGetMany`)."""
        if self._inline_reads:
            return self._run_sync(*self._op_get_many(keys))
        return await self._run(*self._op_get_many(keys))

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._run(*self._op_set(key, value, ttl))

    async def delete(self, key: str) -> bool:
        return await self._run(*self._op_delete(key))

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        return await self._run(*self._op_compare_and_set(key, expected, value, ttl))

    @property
    def sync(self) -> SQLiteSyncStore:
        """The synchronous side: the same file, one connection per calling thread."""
        return SQLiteSyncStore(self)

    # -- rate limits (SupportsRateLimit; see bastion.stores._sqlite_ratelimit) -----------------

    def hit_sync(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        """Decide ``rates`` for ``key`` in one transaction on the calling thread."""
        return self._counters.decide(key, strategy, rates, cost, time.monotonic() + self._timeout)

    async def hit(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int = 1
    ) -> tuple[Decision, ...]:
        """Decide ``rates`` for ``key`` in one transaction on the store's worker thread."""
        executor = self._worker()
        # The timeout counts from now: time queued behind other operations counts too.
        deadline = time.monotonic() + self._timeout
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                executor, self._counters.decide, key, strategy, rates, cost, deadline
            )
        except RuntimeError as exc:
            if "shutdown" in str(exc):  # aclose() won a race with this call
                raise StoreError(f"{self!r} is closed; open a new store") from None
            raise

    # -- operations: validated up front, run later on some thread's connection ---------------

    def _op_get(self, key: str) -> tuple[str, Callable[[sqlite3.Connection], bytes | None]]:
        raw_key = check_key(key)
        now = self._clock.now()

        def op(conn: sqlite3.Connection) -> bytes | None:
            rows = conn.execute(_SQL_GET, (raw_key, now)).fetchall()
            return bytes(rows[0][0]) if rows else None

        return "reading a key", op

    def _op_get_many(
        self, keys: Sequence[str]
    ) -> tuple[str, Callable[[sqlite3.Connection], list[bytes | None]]]:
        raw_keys = check_keys(keys)
        now = self._clock.now()
        distinct = list(dict.fromkeys(raw_keys))
        sql = _SQL_GET_MANY.format(marks=", ".join("?" * len(distinct)))

        def op(conn: sqlite3.Connection) -> list[bytes | None]:
            rows = conn.execute(sql, (*distinct, now)).fetchall()
            values = {bytes(key): bytes(value) for key, value in rows}
            return [values.get(key) for key in raw_keys]

        return "reading keys", op

    def _op_set(
        self, key: str, value: bytes, ttl: float | None
    ) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        raw_key = check_key(key)
        value = check_value(value)
        ttl = check_ttl(ttl)
        now = self._clock.now()
        expires_at = None if ttl is None else now + ttl

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(_SQL_SET, (raw_key, value, expires_at))
            self._after_write(conn, now)

        return "writing a key", op

    def _op_delete(self, key: str) -> tuple[str, Callable[[sqlite3.Connection], bool]]:
        raw_key = check_key(key)
        now = self._clock.now()

        def op(conn: sqlite3.Connection) -> bool:
            # fetchall() runs the statement to completion, which commits it.
            rows = conn.execute(_SQL_DELETE, (raw_key,)).fetchall()
            return bool(rows) and (rows[0][0] is None or rows[0][0] > now)

        return "deleting a key", op

    def _op_compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None
    ) -> tuple[str, Callable[[sqlite3.Connection], bool]]:
        raw_key = check_key(key)
        if expected is not None:
            expected = check_value(expected)
        value = check_value(value)
        ttl = check_ttl(ttl)
        now = self._clock.now()
        expires_at = None if ttl is None else now + ttl

        def op(conn: sqlite3.Connection) -> bool:
            if expected is None:
                cursor = conn.execute(_SQL_CREATE_IF_ABSENT, (raw_key, value, expires_at, now))
            else:
                cursor = conn.execute(_SQL_SWAP, (value, expires_at, raw_key, expected, now))
            won = cursor.rowcount == 1
            if won:
                self._after_write(conn, now)
            return won

        return "comparing and setting a key", op

    # -- SupportsTransaction ---------------------------------------------------------------------

    async def transaction(self, work: Callable[[SyncStore], _T]) -> _T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction on the worker thread
        (:class:`~bastion.stores.base.SupportsTransaction`)."""
        return await self._run("running a transaction", functools.partial(self._transact, work))

    def transaction_sync(self, work: Callable[[SyncStore], _T]) -> _T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction on the calling thread's
        connection."""
        return self._run_sync("running a transaction", functools.partial(self._transact, work))

    def _transact(self, work: Callable[[SyncStore], _T], conn: sqlite3.Connection) -> _T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(_TransactionView(self, conn))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _run_sync(self, action: str, op: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``op`` on the calling thread's own connection (the sync side)."""
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed; open a new store")
        try:
            return op(self._threads.get())
        except sqlite3.Error as exc:
            raise self._translate(exc, action) from exc

    def _close_thread_connection(self) -> None:
        self._threads.close_current()

    async def purge_expired(self) -> int:
        """Delete every expired row and say how many went.

        Deletes in batches of a thousand rows, one transaction each, so that the write lock is
        released between batches and other processes are not held up by a large purge.
        """
        total = 0
        while True:
            now = self._clock.now()
            batch = functools.partial(_purge_batch, now=now)
            deleted = await self._run("purging expired keys", batch)
            total += deleted
            if deleted < _PURGE_BATCH:
                return total

    async def aclose(self) -> None:
        """Close the worker's connection and the calling thread's, and stop the worker thread.
        Calling it again does nothing.

        Operations already awaiting finish first; later calls raise
        :class:`~bastion.errors.StoreError`. Connections that other threads opened through the
        sync side are closed too (and would close anyway when those threads end).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
            forked = self._pid != os.getpid()
        self._threads.close_all()
        if executor is None or forked:
            self._counters.close()
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_connection)
        finally:
            # The queue is empty (the close ran last), so this join returns at once.
            executor.shutdown(wait=True)
            # After the worker thread: a decision queued on it finished on its connection.
            self._counters.close()

    # -- worker plumbing ------------------------------------------------------------------------

    def _worker(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise StoreError(f"{self!r} is closed; open a new store")
            pid = os.getpid()
            if self._executor is None or self._pid != pid:
                if self._executor is not None:
                    # Forked: the parent's thread does not exist here and its connection must
                    # be neither used nor closed in this process. Keep it referenced so that
                    # garbage collection does not close it either.
                    if self._conn is not None:
                        self._inherited.append(self._conn)
                    self._conn = None
                    self._writes = 0
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="bastion-sqlite"
                )
                self._pid = pid
            return self._executor

    async def _run(self, action: str, op: Callable[[sqlite3.Connection], _T]) -> _T:
        executor = self._worker()
        loop = asyncio.get_running_loop()
        # The timeout counts from now, so time spent queued behind other writes counts too.
        deadline = time.monotonic() + self._timeout
        try:
            return await loop.run_in_executor(executor, self._call, action, op, deadline)
        except RuntimeError as exc:
            if "shutdown" in str(exc):  # aclose() won a race with this call
                raise StoreError(f"{self!r} is closed; open a new store") from None
            raise

    def _call(self, action: str, op: Callable[[sqlite3.Connection], _T], deadline: float) -> _T:
        """Run ``op`` on the worker thread's connection by ``deadline``, translating errors."""
        try:
            if self._conn is None:
                self._conn = self._connect(deadline)
            bound_lock_wait(self._conn, deadline)
            return op(self._conn)
        except sqlite3.Error as exc:
            raise self._translate(exc, action) from exc

    def _connect(self, deadline: float | None = None) -> sqlite3.Connection:
        if deadline is None:
            deadline = time.monotonic() + self._timeout
        conn = open_connection(self._path, deadline=deadline, synchronous=self._synchronous)
        try:
            self._migrate(conn)
            # Later statements on this connection wait up to the whole timeout for a lock.
            conn.execute(f"PRAGMA busy_timeout = {math.ceil(self._timeout * 1000)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # A file already at this version needs no write lock: a connection opened while another
        # process writes (an inline read on the event loop, a WSGI thread's first read) must not
        # wait for that writer.
        try:
            rows = conn.execute(_SQL_SCHEMA_VERSION).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            rows = []  # a fresh file
        if rows:
            self._check_version(int(rows[0][0]))
            if int(rows[0][0]) == SCHEMA_VERSION:
                return
        # IMMEDIATE takes the write lock up front: of several processes opening a fresh file at
        # once, one creates the schema and the others wait, then find it done.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_SQL_CREATE_SCHEMA_TABLE)
            rows = conn.execute(_SQL_SCHEMA_VERSION).fetchall()
            version = int(rows[0][0]) if rows else 0
            self._check_version(version)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _SQL_MIGRATIONS[target]:
                    conn.execute(statement)
            if version != SCHEMA_VERSION:
                conn.execute(_SQL_SET_SCHEMA_VERSION, (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"SQLite store {str(self._path)!r} has schema version {version}, newer than "
                f"the version {SCHEMA_VERSION} this bastion knows; upgrade bastion, or point "
                "the store at another file"
            )

    def _after_write(self, conn: sqlite3.Connection, now: float) -> None:
        """Count a committed write; every ``purge_every`` writes, purge one batch.

        The write is already committed, so a failed purge must not fail it: it is logged.
        """
        if not self._purge_every:
            return
        self._writes += 1
        if self._writes < self._purge_every:
            return
        self._writes = 0
        try:
            _purge_batch(conn, now)
        except sqlite3.Error as exc:
            logger.warning(
                "opportunistic purge of expired keys in SQLite store %r failed: %s",
                str(self._path),
                exc,
            )

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise self._translate(exc, "closing") from exc

    def _translate(self, exc: sqlite3.Error, action: str) -> StoreError:
        where = f"SQLite store {str(self._path)!r}"
        return sqlite_fault(exc, where, action, self._timeout, self._path)


def _purge_batch(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute(_SQL_PURGE, (now, _PURGE_BATCH)).rowcount


class _TransactionView:
    """The :class:`~bastion.stores.base.SyncStore` a transaction's ``work`` receives: each
    operation runs on the transaction's connection, inside it."""

    __slots__ = ("_conn", "_store")

    local: Final = True
    nonblocking: Final = False

    def __init__(self, store: SQLiteStore, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn

    def _do(self, action: str, op: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return op(self._conn)
        except sqlite3.Error as exc:
            raise self._store._translate(exc, action) from exc

    def get(self, key: str) -> bytes | None:
        return self._do(*self._store._op_get(key))

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._do(*self._store._op_set(key, value, ttl))

    def delete(self, key: str) -> bool:
        return self._do(*self._store._op_delete(key))

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        return self._do(*self._store._op_compare_and_set(key, expected, value, ttl))

    def compare_and_set_read(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None, read: str
    ) -> tuple[bool, bytes | None, bytes | None]:
        won = self.compare_and_set(key, expected, value, ttl)
        return won, value if won else self.get(key), self.get(read)

    def close(self) -> None:
        """Nothing to release: the transaction's connection belongs to the store."""

    def __repr__(self) -> str:
        return f"SQLiteStore.transaction({str(self._store.path)!r})"


class SQLiteSyncStore:
    """The synchronous side of a :class:`SQLiteStore` (``store.sync``).

    Each calling thread gets its own connection to the same file, so threads never share a
    ``sqlite3.Connection``. :meth:`close` closes the calling thread's connection; connections of
    other threads close when those threads end.
    """

    __slots__ = ("_store",)

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    @property
    def local(self) -> bool:
        return True

    nonblocking: Final = False
    """A write may wait up to ``timeout`` for another writer's file lock."""

    def get(self, key: str) -> bytes | None:
        store = self._store
        return store._run_sync(*store._op_get(key))

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        store = self._store
        store._run_sync(*store._op_set(key, value, ttl))

    def delete(self, key: str) -> bool:
        store = self._store
        return store._run_sync(*store._op_delete(key))

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        store = self._store
        return store._run_sync(*store._op_compare_and_set(key, expected, value, ttl))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        store = self._store
        return store._run_sync(*store._op_get_many(keys))

    def close(self) -> None:
        self._store._close_thread_connection()

    def __repr__(self) -> str:
        return f"SQLiteSyncStore({str(self._store.path)!r})"
