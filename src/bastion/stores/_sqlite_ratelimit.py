"""The SQLite store's rate-limit counters (:class:`~bastion.stores.base.SupportsRateLimit`).

The counters live in their own table, ``bastion_ratelimit (key BLOB PRIMARY KEY, state TEXT,
expires_at INTEGER)`` ``WITHOUT ROWID``, in the store's file. Each decision is one
``BEGIN IMMEDIATE`` transaction (read, compute, write), which SQLite serialises across
processes, and waits for other writers only until its deadline (the store's ``timeout`` after
the call, time queued on the worker thread included). Expired rows are deleted in batches every
``purge_every`` decisions, inside the decision's transaction; there is no timer thread.

Durability. The counters are written on connections of their own, one per thread, opened with
``synchronous=NORMAL`` whatever the store's ``synchronous`` setting: a power cut may forget the
last few hits, which only ever lets a few more requests through, while ``FULL`` would add an
``fsync`` to every request's decision. The key-value side keeps its own connections (``FULL``
by default), since a forgotten logout or revocation would come back after a crash. A setting
switched per transaction on one connection would save the second set, at the price of a
durability setting that a failed switch could leave weakened for the key-value writes.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING, Final

from bastion.core.ratelimit import apply_limits, decode_state, encode_state, micros
from bastion.errors import StoreError
from bastion.stores._sqlite_connect import ThreadConnections, bound_lock_wait, open_connection
from bastion.stores.faults import sqlite_fault
from bastion.stores.keyspace import ratelimit_key_suffix

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from bastion.core.clock import Clock
    from bastion.core.ratelimit import Decision, Rate, Strategy

__all__ = ["SQLiteCounters"]

_SQL_CREATE: Final = """
CREATE TABLE IF NOT EXISTS bastion_ratelimit (
    key BLOB PRIMARY KEY,
    state TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID"""
_SQL_SELECT: Final = "SELECT state FROM bastion_ratelimit WHERE key = ? AND expires_at > ?"
_SQL_UPSERT: Final = """
INSERT INTO bastion_ratelimit (key, state, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at"""
_SQL_PURGE: Final = """
DELETE FROM bastion_ratelimit WHERE key IN (
    SELECT key FROM bastion_ratelimit WHERE expires_at <= ? LIMIT 1000
)"""


class SQLiteCounters:
    """The counters of one :class:`~bastion.stores.sqlite.SQLiteStore` (see the module doc).

    Owned by the store, which runs :meth:`decide` on the calling thread (``hit_sync``) or on
    its worker thread (``hit``) and closes it with the store.
    """

    __slots__ = ("_clock", "_closed", "_connections", "_hits", "_path", "_purge_every", "_timeout")

    def __init__(self, path: Path, *, clock: Clock, timeout: float, purge_every: int) -> None:
        self._path = path
        self._clock = clock
        self._timeout = timeout
        self._purge_every = purge_every
        self._closed = False
        self._hits = 0
        self._connections = ThreadConnections(self._open)

    def _open(self) -> sqlite3.Connection:
        conn = open_connection(
            self._path, deadline=time.monotonic() + self._timeout, synchronous="normal"
        )
        try:
            conn.execute(_SQL_CREATE)
        except BaseException:
            conn.close()
            raise
        return conn

    def decide(
        self, key: str, strategy: Strategy, rates: Sequence[Rate], cost: int, deadline: float
    ) -> tuple[Decision, ...]:
        """One decision, waiting for other writers' locks only until ``deadline``."""
        if self._closed:
            raise StoreError(f"SQLite store {str(self._path)!r} is closed; open a new store")
        try:
            conn = self._connections.get()
            bound_lock_wait(conn, deadline)
            full = [
                (key + ratelimit_key_suffix(strategy, rate)).encode("utf-8", "surrogatepass")
                for rate in rates
            ]
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = micros(self._clock.now())
                states = []
                for name in full:
                    row = conn.execute(_SQL_SELECT, (name, now)).fetchone()
                    states.append(None if row is None else decode_state(row[0]))
                steps, decisions = apply_limits(strategy, states, now, cost, rates)
                if steps is not None:
                    conn.executemany(
                        _SQL_UPSERT,
                        [
                            (name, encode_state(result.state), result.expires_us)
                            for name, result in zip(full, steps, strict=True)
                        ],
                    )
                self._hits += 1
                if self._purge_every and self._hits % self._purge_every == 0:
                    conn.execute(_SQL_PURGE, (now,))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            where = f"SQLite store {str(self._path)!r}"
            raise sqlite_fault(
                exc, where, "deciding a rate limit", self._timeout, self._path
            ) from exc
        return decisions

    def close(self) -> None:
        """Close every thread's counter connection; later decisions raise StoreError."""
        self._closed = True
        self._connections.close_all()

    def __len__(self) -> int:
        """Counter connections of live threads in this process (for tests and diagnostics)."""
        return len(self._connections)
