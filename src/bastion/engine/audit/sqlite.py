"""The SQLite audit backend: one file, WAL journal, one transaction per batch.

Tables ``bastion_audit_events`` (one row per event, indexed by name and by user: each index
entry costs about as much as the row itself, so there are no others; a query by time walks
back from the newest row), ``bastion_audit_seals``,
``bastion_audit_purges`` and ``bastion_audit_head`` (one row). A batch is written inside
``BEGIN IMMEDIATE``: the write lock is taken before the head is read, so two processes
appending to one file serialise on it and extend one chain.
``synchronous=NORMAL`` in WAL mode loses at most the last transactions on a power cut, never
the file's consistency; pass ``synchronous="full"`` for a sync per batch.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bastion.engine.audit.model import Head, Purge, Row, Seal, dump, load
from bastion.errors import ConfigurationError, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.engine.audit.model import Batch, Query

__all__ = ["SQLiteAuditBackend"]

_COLUMNS: Final = (
    "seq, segment, time_ms, name, outcome, level, user_hash, client_ip, session, request_id, "
    "body, mac"
)
_SCHEMA: Final = (
    (
        "CREATE TABLE IF NOT EXISTS bastion_audit_events (seq INTEGER PRIMARY KEY, "
        "segment INTEGER NOT NULL, time_ms INTEGER NOT NULL, name TEXT NOT NULL, "
        "outcome TEXT NOT NULL, level TEXT NOT NULL, user_hash TEXT, client_ip TEXT, session TEXT, "
        "request_id TEXT, body TEXT NOT NULL, mac TEXT NOT NULL)"
    ),
    "CREATE INDEX IF NOT EXISTS bastion_audit_events_by_name ON bastion_audit_events (name)",
    ("CREATE INDEX IF NOT EXISTS bastion_audit_events_by_user ON bastion_audit_events (user_hash)"),
    (
        "CREATE TABLE IF NOT EXISTS bastion_audit_seals (segment INTEGER PRIMARY KEY, "
        "body TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS bastion_audit_purges (number INTEGER PRIMARY KEY, "
        "body TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS bastion_audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "body TEXT NOT NULL)"
    ),
)
_SYNCHRONOUS: Final = frozenset({"off", "normal", "full", "extra"})


def where_clause(query: Query, placeholder: str) -> tuple[str, list[object]]:
    """The ``WHERE`` text and parameters of ``query`` (shared with PostgreSQL)."""
    parts: list[str] = []
    params: list[object] = []
    for column, values in (
        ("name", query.names),
        ("user_hash", query.users),
        ("outcome", query.outcomes),
    ):
        if values:
            parts.append(f"{column} IN ({', '.join([placeholder] * len(values))})")
            params.extend(values)
    if query.since_ms is not None:
        parts.append(f"time_ms >= {placeholder}")
        params.append(query.since_ms)
    if query.until_ms is not None:
        parts.append(f"time_ms < {placeholder}")
        params.append(query.until_ms)
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


class SQLiteAuditBackend:
    """An audit trail in the SQLite file at ``path`` (created with its tables if missing)."""

    __slots__ = ("_abandoned", "_conn", "_lock", "_settings", "path")

    def __init__(self, path: str | Path, *, timeout: float = 5.0, synchronous: str = "normal"):
        if synchronous not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"synchronous must be one of {sorted(_SYNCHRONOUS)}", setting="synchronous"
            )
        self.path = Path(path)
        self._lock = threading.RLock()
        self._settings = (timeout, synchronous)
        self._abandoned: list[sqlite3.Connection] = []
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        timeout, synchronous = self._settings
        try:
            conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            for statement in _SCHEMA:
                conn.execute(statement)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"cannot open the audit database {self.path}: {error}") from None
        return conn

    def after_fork(self) -> None:
        # SQLite forbids using a connection across fork(); the parent's is kept referenced
        # (never closed or collected here) and a new one opened.
        self._lock = threading.RLock()
        self._abandoned.append(self._conn)
        self._conn = self._connect()

    @property
    def where(self) -> str:
        return f"sqlite:///{self.path}"

    def transact(self, build: Callable[[Head | None], Batch | None]) -> Batch | None:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as error:
                raise StoreUnavailable(f"audit database {self.path}: {error}") from None
            try:
                batch = build(self._head())
                if batch is not None:
                    self._write(batch)
                conn.execute("COMMIT")
            except sqlite3.Error as error:
                conn.execute("ROLLBACK")
                raise StoreUnavailable(f"audit database {self.path}: {error}") from None
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return batch

    def _write(self, batch: Batch) -> None:
        conn = self._conn
        if batch.rows:
            conn.executemany(
                f"INSERT INTO bastion_audit_events ({_COLUMNS}) VALUES "  # noqa: S608 (constant)
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch.rows,
            )
        for seal in batch.seals:
            conn.execute(
                "INSERT INTO bastion_audit_seals (segment, body) VALUES (?, ?)",
                (seal.segment, dump(seal)),
            )
        if batch.purge is not None:
            conn.execute(
                "INSERT INTO bastion_audit_purges (number, body) VALUES (?, ?)",
                (batch.purge.number, dump(batch.purge)),
            )
            conn.execute(
                "DELETE FROM bastion_audit_events WHERE segment <= ?", (batch.purge.through,)
            )
        conn.execute(
            "INSERT INTO bastion_audit_head (id, body) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            (dump(batch.head),),
        )

    def _head(self) -> Head | None:
        found = self._conn.execute("SELECT body FROM bastion_audit_head WHERE id = 1").fetchone()
        return None if found is None else load(Head, found[0])

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise StoreUnavailable(f"audit database {self.path}: {error}") from None

    def rows(self, after_seq: int, limit: int) -> list[Row]:
        found = self._read(
            f"SELECT {_COLUMNS} FROM bastion_audit_events WHERE seq > ? "  # noqa: S608 (constant)
            "ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [Row(*values) for values in found]  # type: ignore[arg-type]

    def seals(self) -> list[Seal]:
        found = self._read("SELECT body FROM bastion_audit_seals ORDER BY segment")
        return [load(Seal, str(body)) for (body,) in found]

    def purges(self) -> list[Purge]:
        found = self._read("SELECT body FROM bastion_audit_purges ORDER BY number")
        return [load(Purge, str(body)) for (body,) in found]

    def head(self) -> Head | None:
        with self._lock:
            return self._head()

    def query(self, query: Query) -> list[Row]:
        where, params = where_clause(query, "?")
        found = self._read(
            f"SELECT {_COLUMNS} FROM bastion_audit_events{where} "  # noqa: S608 (placeholders only)
            "ORDER BY seq DESC LIMIT ?",
            [*params, query.limit],
        )
        return [Row(*values) for values in found]  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"SQLiteAuditBackend({str(self.path)!r})"
