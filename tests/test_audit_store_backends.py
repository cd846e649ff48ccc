"""The same trail on each backend: SQLite, a real PostgreSQL (initdb in a temporary directory)
and a real redis-server. Round trip, queries, a row edited or deleted in the real database,
purges, and two writers sharing one chain."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import psycopg
import pytest
import redis

from audit_store_support import open_trail, require_postgres, write_logins
from bastion.audit import AuditTrail, Fault
from bastion.core.audit import EventName, Outcome
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.errors import ConfigurationError, StoreUnavailable
from bastion.testing.postgres_server import PostgresServer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

BACKENDS = ["sqlite", "postgres", "redis"]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    require_postgres()
    with PostgresServer() as server:
        yield server


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_780_000_000.0)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(SecretKey.generate())


class Tamper:
    """Edits the real database behind a store URL, as an intruder with its credentials would."""

    def __init__(self, kind: str, url: str, target: str) -> None:
        self.kind, self.url, self.target = kind, url, target

    def edit_outcome(self, seq: int) -> None:
        """Rewrite the event's MACed body (``failure`` to ``success``)."""
        if self.kind == "redis":
            self._rewrite_stream(seq)
            return
        sql = (
            "UPDATE bastion_audit_events SET body = replace(body, 'failure', 'success'), "
            "outcome = 'success' WHERE seq = "
        )
        self._sql(sql + str(int(seq)))

    def delete(self, seq: int) -> None:
        if self.kind == "redis":
            client = redis.Redis.from_url(self.target)
            client.xdel(self.url.split("prefix=")[1] + "events", f"{seq}-0")
            client.close()
        else:
            self._sql(f"DELETE FROM bastion_audit_events WHERE seq = {int(seq)}")

    def _rewrite_stream(self, seq: int) -> None:
        # Stream entries cannot be edited in place: an intruder rewrites the whole stream.
        client = redis.Redis.from_url(self.target)
        key = self.url.split("prefix=")[1] + "events"
        entries = client.xrange(key)
        client.delete(key)
        for entry_id, fields in entries:
            if entry_id == f"{seq}-0".encode():
                fields[b"body"] = fields[b"body"].replace(b"failure", b"success")
                fields[b"outcome"] = b"success"
            client.xadd(key, fields, id=entry_id)
        client.close()

    def _sql(self, sql: str) -> None:
        if self.kind == "sqlite":
            import sqlite3  # noqa: PLC0415

            with sqlite3.connect(self.target) as conn:
                conn.execute(sql)
        else:
            with psycopg.connect(self.target, autocommit=True) as conn:
                conn.execute(sql)  # type: ignore[call-overload]  # a test's literal SQL


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Tamper]:
    """A fresh, empty trail location of each kind, and a way to tamper with it."""
    kind = request.param
    if kind == "sqlite":
        path = tmp_path / "audit.db"
        return f"sqlite:///{path}", Tamper(kind, "", str(path))
    if kind == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = f"audit_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[call-overload]
        dsn = server.dsn.rsplit("/", 1)[0] + "/" + name
        return dsn, Tamper(kind, dsn, dsn)
    base = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    url = f"{base}?prefix={prefix}"
    return url, Tamper(kind, url, base)


def test_round_trip_queries_and_verification(
    store: tuple[str, Tamper], ring: KeyRing, clock: FrozenClock
) -> None:
    url, _ = store
    trail = open_trail(url, ring, clock, segment_events=4)
    start = clock.now()
    write_logins(trail.auditor(aggregation=None), clock, 9)
    trail.flush()
    assert [r.seq for r in trail.query(user="alice")] == [9, 7, 6, 4, 3, 1]
    assert [r.seq for r in trail.query(event="authn_login_fail", outcome="failure")] == [
        8, 7, 5, 4, 2, 1,
    ]  # fmt: skip
    assert [r.seq for r in trail.query(since=start + 2, until=start + 5)] == [5, 4, 3]
    assert [r.seq for r in trail.query(limit=2)] == [9, 8]
    (newest,) = trail.query(limit=1)
    assert newest.event == "authn_login_success"
    assert newest.to_dict()["user"] == trail.hasher.hash("alice").digest
    report = trail.verify()
    assert (report.ok, report.events, report.segments) == (True, 9, 3)
    trail.close()


def test_an_edited_row_is_named_by_verify(
    store: tuple[str, Tamper], ring: KeyRing, clock: FrozenClock
) -> None:
    url, tamper = store
    trail = open_trail(url, ring, clock, segment_events=4)
    write_logins(trail.auditor(aggregation=None), clock, 9)
    trail.flush()
    tamper.edit_outcome(5)
    broken = trail.verify().broken
    assert broken is not None
    assert (broken.fault, broken.segment, broken.seq) == (Fault.EVENT_MAC, 1, 5)
    trail.close()


def test_a_deleted_row_is_named_by_verify(
    store: tuple[str, Tamper], ring: KeyRing, clock: FrozenClock
) -> None:
    url, tamper = store
    trail = open_trail(url, ring, clock, segment_events=4)
    write_logins(trail.auditor(aggregation=None), clock, 9)
    trail.flush()
    tamper.delete(3)
    broken = trail.verify().broken
    assert broken is not None
    assert (broken.fault, broken.segment, broken.seq) == (Fault.MISSING_EVENT, 0, 3)
    assert "segment 0, event 3: missing_event" in str(broken)
    trail.close()


def test_purges_keep_verification_working(
    store: tuple[str, Tamper], ring: KeyRing, clock: FrozenClock
) -> None:
    url, _ = store
    trail = open_trail(url, ring, clock, segment_events=3)
    start = clock.now()
    write_logins(trail.auditor(aggregation=None), clock, 10)  # 0..2 sealed, 3 open
    trail.flush()
    assert trail.purge(before=start + 6) == 2  # segments 0 (ends +2) and 1 (ends +5)
    trail.flush()
    assert min(r.seq for r in trail.query()) == 7
    report = trail.verify()
    assert (report.ok, report.purged_segments, report.events) == (True, 2, 5)
    trail.close()


def test_two_writers_share_one_chain(
    store: tuple[str, Tamper], ring: KeyRing, clock: FrozenClock
) -> None:
    url, _ = store
    one = open_trail(url, ring, clock, segment_events=3)
    two = open_trail(url, ring, clock, segment_events=3)
    for number in range(8):
        trail = (one, two)[number % 2]
        trail.auditor(aggregation=None).emit(
            EventName.SESSION_CREATED, outcome=Outcome.SUCCESS, details={"n": number}
        )
        trail.flush()
    assert [r.details["n"] for r in two.query(limit=3)] == [7, 6, 5]
    report = one.verify()
    assert (report.ok, report.events) == (True, 8)
    one.close()
    two.close()


def test_the_background_writer_on_each_backend(
    store: tuple[str, Tamper], ring: KeyRing, clock: FrozenClock
) -> None:
    from bastion.audit import AuditPolicy  # noqa: PLC0415

    url, _ = store
    trail = AuditTrail(AuditPolicy(store=url, batch_size=100, log=False), keyring=ring, clock=clock)
    auditor = trail.auditor(aggregation=None)
    for number in range(500):
        auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"n": number})
    trail.close()
    assert trail.store_sink.written == 500
    reader = AuditTrail.for_tools(url, keyring=ring)
    report = reader.verify()
    assert (report.ok, report.events, report.segments) == (True, 500, 1)  # sealed on close
    reader.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/audit", "is not supported"),
        ("sqlite://host/audit.db", "sqlite:///relative.db"),
        ("sqlite:///audit.db?journal=wal", "unknown options"),
        ("redis://localhost/0?timeout=0", "timeout"),
    ],
)
def test_malformed_store_urls_are_refused(url: str, message: str, tmp_path: Path) -> None:
    from bastion.engine.audit import open_backend  # noqa: PLC0415

    with pytest.raises(ConfigurationError, match=message) as caught:
        open_backend(url)
    assert caught.value.setting == "store"


def test_an_unreachable_postgres_is_store_unavailable(unused_port: Callable[[], int]) -> None:
    from bastion.engine.audit import open_backend  # noqa: PLC0415

    with pytest.raises(StoreUnavailable, match=r"cannot reach the audit database"):
        open_backend(f"postgresql://bastion@127.0.0.1:{unused_port()}/postgres?connect_timeout=1")


@pytest.fixture
def unused_port() -> Callable[[], int]:
    import socket  # noqa: PLC0415

    def pick() -> int:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
            return port

    return pick
