"""The PostgreSQL audit backend (``psycopg``, the ``postgres`` extra).

The same tables as SQLite (``bastion_audit_events`` with ``BIGINT`` times and sequence
numbers, ``bastion_audit_seals``, ``bastion_audit_purges``, ``bastion_audit_head``). A batch
locks the head row (``SELECT ... FOR UPDATE``) before it reads it, so writers in several
processes or hosts extend one chain; rows go in with one pipelined ``executemany``. One
connection, used by one thread at a time (a lock), opened at construction and reopened after
a failure.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

import psycopg

from bastion.engine.audit.model import Head, Purge, Row, Seal, dump, load
from bastion.engine.audit.sqlite import where_clause
from bastion.errors import StoreUnavailable
from bastion.stores.url import redact_url

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.engine.audit.model import Batch, Query

__all__ = ["PostgresAuditBackend"]

_COLUMNS: Final = (
    "seq, segment, time_ms, name, outcome, level, user_hash, client_ip, session, request_id, "
    "body, mac"
)
_SCHEMA: Final = (
    (
        "CREATE TABLE IF NOT EXISTS bastion_audit_events (seq BIGINT PRIMARY KEY, "
        "segment BIGINT NOT NULL, time_ms BIGINT NOT NULL, name TEXT NOT NULL, "
        "outcome TEXT NOT NULL, level TEXT NOT NULL, user_hash TEXT, client_ip TEXT, session TEXT, "
        "request_id TEXT, body TEXT NOT NULL, mac TEXT NOT NULL)"
    ),
    "CREATE INDEX IF NOT EXISTS bastion_audit_events_by_name ON bastion_audit_events (name)",
    ("CREATE INDEX IF NOT EXISTS bastion_audit_events_by_user ON bastion_audit_events (user_hash)"),
    "CREATE INDEX IF NOT EXISTS bastion_audit_events_segment ON bastion_audit_events (segment)",
    (
        "CREATE TABLE IF NOT EXISTS bastion_audit_seals (segment BIGINT PRIMARY KEY, "
        "body TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS bastion_audit_purges (number BIGINT PRIMARY KEY, "
        "body TEXT NOT NULL)"
    ),
    (
        "CREATE TABLE IF NOT EXISTS bastion_audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "body TEXT NOT NULL)"
    ),
    # The row every writer locks; its body is replaced by the first batch.
    "INSERT INTO bastion_audit_head (id, body) VALUES (1, '') ON CONFLICT (id) DO NOTHING",
)


class PostgresAuditBackend:
    """An audit trail in the PostgreSQL database at ``dsn`` (tables created if missing)."""

    __slots__ = ("_abandoned", "_conn", "_dsn", "_lock", "_timeout")

    def __init__(self, dsn: str, *, timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._abandoned: list[psycopg.Connection[Any]] = []
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                # Two processes creating the tables at once would race on the catalogue.
                conn.execute("SELECT pg_advisory_xact_lock(7210386429)")
                for statement in _SCHEMA:
                    conn.execute(statement)

    @property
    def where(self) -> str:
        return redact_url(self._dsn)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=max(1, round(self._timeout))
                )
            except psycopg.Error as error:
                raise StoreUnavailable(f"cannot reach the audit database {self.where}: "
                                       f"{type(error).__name__}") from None  # fmt: skip
        return self._conn

    def _failed(self, error: psycopg.Error) -> StoreUnavailable:
        if self._conn is not None and self._conn.broken:
            self._conn = None  # reconnect on the next call
        first = str(error).strip().splitlines()[:1]
        return StoreUnavailable(f"audit database {self.where}: {first[0] if first else error!r}")

    def transact(self, build: Callable[[Head | None], Batch | None]) -> Batch | None:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    found = conn.execute(
                        "SELECT body FROM bastion_audit_head WHERE id = 1 FOR UPDATE"
                    ).fetchone()
                    head = None if found is None or not found[0] else load(Head, found[0])
                    batch = build(head)
                    if batch is not None:
                        self._write(conn, batch)
            except psycopg.Error as error:
                raise self._failed(error) from None
            return batch

    @staticmethod
    def _write(conn: psycopg.Connection[Any], batch: Batch) -> None:
        with conn.cursor() as cursor:
            if batch.rows:
                cursor.executemany(
                    f"INSERT INTO bastion_audit_events ({_COLUMNS}) VALUES "  # noqa: S608
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    batch.rows,
                )
            for seal in batch.seals:
                cursor.execute(
                    "INSERT INTO bastion_audit_seals (segment, body) VALUES (%s, %s)",
                    (seal.segment, dump(seal)),
                )
            if batch.purge is not None:
                cursor.execute(
                    "INSERT INTO bastion_audit_purges (number, body) VALUES (%s, %s)",
                    (batch.purge.number, dump(batch.purge)),
                )
                cursor.execute(
                    "DELETE FROM bastion_audit_events WHERE segment <= %s", (batch.purge.through,)
                )
            cursor.execute(
                "UPDATE bastion_audit_head SET body = %s WHERE id = 1", (dump(batch.head),)
            )

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except psycopg.Error as error:
                raise self._failed(error) from None

    def rows(self, after_seq: int, limit: int) -> list[Row]:
        found = self._read(
            f"SELECT {_COLUMNS} FROM bastion_audit_events WHERE seq > %s "  # noqa: S608
            "ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        return [Row(*values) for values in found]

    def seals(self) -> list[Seal]:
        found = self._read("SELECT body FROM bastion_audit_seals ORDER BY segment")
        return [load(Seal, body) for (body,) in found]

    def purges(self) -> list[Purge]:
        found = self._read("SELECT body FROM bastion_audit_purges ORDER BY number")
        return [load(Purge, body) for (body,) in found]

    def head(self) -> Head | None:
        found = self._read("SELECT body FROM bastion_audit_head WHERE id = 1")
        return None if not found or not found[0][0] else load(Head, found[0][0])

    def query(self, query: Query) -> list[Row]:
        where, params = where_clause(query, "%s")
        found = self._read(
            f"SELECT {_COLUMNS} FROM bastion_audit_events{where} "  # noqa: S608 (placeholders)
            "ORDER BY seq DESC LIMIT %s",
            [*params, query.limit],
        )
        return [Row(*values) for values in found]

    def after_fork(self) -> None:
        # Closing the parent's connection here would send its Terminate on the shared socket.
        self._lock = threading.RLock()
        if self._conn is not None:
            self._abandoned.append(self._conn)
        self._conn = None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"PostgresAuditBackend({self.where!r})"
