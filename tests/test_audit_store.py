"""The stored audit trail on a real SQLite file: queries, the hash chain, tampering, purges,
key rotation, drops and the fail-closed mode."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from audit_store_support import open_trail, write_logins
from bastion.audit import (
    DROPPED_EVENT,
    PURGE_EVENT,
    AuditPolicy,
    AuditTrail,
    AuditUnavailable,
    Fault,
)
from bastion.core.audit import EventName, Outcome
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.errors import ConfigurationError, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_780_000_000.0)


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing(SecretKey.generate())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def trail(db: Path, ring: KeyRing, clock: FrozenClock) -> Iterator[AuditTrail]:
    opened = open_trail(f"sqlite:///{db}", ring, clock, segment_events=4)
    yield opened
    opened.close()


def test_events_are_queried_by_name_user_outcome_and_time(
    trail: AuditTrail, clock: FrozenClock
) -> None:
    start = clock.now()
    write_logins(trail.auditor(aggregation=None), clock, 9)
    trail.flush()

    assert [r.seq for r in trail.query()] == [9, 8, 7, 6, 5, 4, 3, 2, 1]
    alice = trail.query(user="alice")
    assert [r.seq for r in alice] == [9, 7, 6, 4, 3, 1]
    assert {r.user for r in alice} == {trail.hasher.hash("alice").digest}
    assert "alice" not in {r.user for r in alice}  # only the keyed hash is stored
    failures = trail.query(event=EventName.AUTHN_LOGIN_FAIL, user="alice")
    assert [(r.seq, r.details["attempt"]) for r in failures] == [(7, 6), (4, 3), (1, 0)]
    assert [r.seq for r in trail.query(outcome=Outcome.SUCCESS)] == [9, 6, 3]
    window = trail.query(since=start + 2, until=start + 5)
    assert [r.seq for r in window] == [5, 4, 3]
    aware = datetime.fromtimestamp(start + 7, tz=UTC)
    assert [r.seq for r in trail.query(since=aware)] == [9, 8]
    assert [r.seq for r in trail.query(limit=2)] == [9, 8]
    digest = trail.hasher.hash("bob").digest
    assert [r.seq for r in trail.query(user_hash=digest)] == [8, 5, 2]


def test_a_fresh_trail_verifies_and_reports_its_head(trail: AuditTrail, clock: FrozenClock) -> None:
    empty = trail.verify()
    assert (empty.ok, empty.events, empty.head_seq) == (True, 0, 0)
    write_logins(trail.auditor(aggregation=None), clock, 10)
    trail.flush()
    report = trail.verify()
    assert report.ok
    assert (report.events, report.segments, report.head_seq) == (10, 3, 10)  # 4 + 4 + 2 open
    assert report.head_mac == trail.query(limit=1)[0].mac


def test_attacker_strings_are_stored_escaped(trail: AuditTrail, db: Path) -> None:
    hostile = "x\r\nforged 2026-12-03 admin login ok\u2028\x1b[2J\x1b]0;pwned\x07\u202e"
    trail.auditor(aggregation=None).emit(
        EventName.INPUT_VALIDATION_FAIL,
        outcome=Outcome.BLOCKED,
        request_id=hostile,
        details={"path": hostile},
    )
    trail.flush()
    (record,) = trail.query()
    for text in (record.request_id or "", str(record.details["path"])):
        assert text.isprintable()
        assert "\x1b" not in text
        assert "\r" not in text
        assert "\n" not in text
        assert "\u2028" not in text
        assert "\\x1b[2J" in text
    raw = db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes())
    assert b"\x1b[2J" not in raw
    assert b"\r\nforged" not in raw


@pytest.mark.parametrize(
    ("sql", "fault", "seq"),
    [
        # a row's body edited (the outcome inside the MACed JSON)
        (
            (
                "UPDATE bastion_audit_events SET body = replace(body, 'failure', 'success') "
                "WHERE seq = 5"
            ),
            Fault.EVENT_MAC,
            5,
        ),
        # a query column edited, the body left alone
        ("UPDATE bastion_audit_events SET outcome = 'success' WHERE seq = 7", Fault.COLUMN, 7),
        ("UPDATE bastion_audit_events SET user_hash = NULL WHERE seq = 2", Fault.COLUMN, 2),
        # an event deleted from a sealed segment, and from the open one
        ("DELETE FROM bastion_audit_events WHERE seq = 6", Fault.MISSING_EVENT, 6),
        ("DELETE FROM bastion_audit_events WHERE seq = 9", Fault.MISSING_EVENT, 9),
        # the oldest segment deleted without a purge mark
        ("DELETE FROM bastion_audit_events WHERE segment = 0", Fault.MISSING_EVENT, 1),
        # two events swapped
        (
            (
                "UPDATE bastion_audit_events SET seq = -seq WHERE seq IN (2, 3); "
                "UPDATE bastion_audit_events SET seq = 5 - (-seq) WHERE seq IN (-2, -3)"
            ),
            Fault.EVENT_MAC,
            2,
        ),
    ],
)
def test_an_edited_database_is_caught_at_the_first_broken_link(
    trail: AuditTrail, clock: FrozenClock, db: Path, sql: str, fault: Fault, seq: int
) -> None:
    write_logins(trail.auditor(aggregation=None), clock, 10)
    trail.flush()
    assert trail.verify().ok
    with sqlite3.connect(db) as conn:
        conn.executescript(sql)
    report = trail.verify()
    assert not report.ok
    assert report.broken is not None
    assert (report.broken.fault, report.broken.seq) == (fault, seq)
    assert report.broken.segment == (seq - 1) // 4


def test_edited_seals_purge_marks_and_head_are_caught(
    trail: AuditTrail, clock: FrozenClock, db: Path
) -> None:
    write_logins(trail.auditor(aggregation=None), clock, 10)
    trail.flush()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE bastion_audit_seals SET body = replace(body, '\"count\":4', '\"count\":3') "
            "WHERE segment = 1"
        )
    broken = trail.verify().broken
    assert broken is not None
    assert (broken.fault, broken.segment) == (Fault.SEAL_MAC, 1)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM bastion_audit_seals WHERE segment = 0")
    broken = trail.verify().broken
    assert broken is not None
    assert (broken.fault, broken.segment) == (Fault.MISSING_SEAL, 0)


def test_a_forged_purge_mark_is_caught(trail: AuditTrail, clock: FrozenClock, db: Path) -> None:
    write_logins(trail.auditor(aggregation=None), clock, 10)
    trail.flush()
    mark = {"number": 0, "through": 1, "time_ms": 0, "kid": "00", "previous": "0" * 64}
    mark["mac"] = "1" * 64
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM bastion_audit_events WHERE segment <= 1")
        conn.execute(
            "INSERT INTO bastion_audit_purges (number, body) VALUES (0, ?)", (json.dumps(mark),)
        )
    broken = trail.verify().broken
    assert broken is not None
    assert broken.fault is Fault.UNKNOWN_KEY  # the forger does not know the key id either


def test_retention_purges_whole_sealed_segments_and_verification_holds(
    db: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    trail = open_trail(f"sqlite:///{db}", ring, clock, segment_events=4, retention=3600)
    start = clock.now()
    write_logins(trail.auditor(aggregation=None), clock, 10)  # segments 0, 1 sealed; 2 open
    trail.flush()
    assert trail.purge(before=start + 6) == 1  # segment 1 ends at +7: it stays
    assert trail.purge(before=start + 6) == 0
    trail.flush()
    assert [r.seq for r in trail.query()][-1] == 5
    (purge,) = trail.query(event=PURGE_EVENT)
    assert dict(purge.details) == {"purged_segments": 1, "purged_through": 0}
    report = trail.verify()
    assert report.ok
    assert (report.purged_segments, report.events) == (1, 7)  # 4 + 2 open + the purge event

    clock.advance(3600)
    assert trail.purge() == 1  # policy retention: segment 1 is older than an hour now
    trail.flush()
    report = trail.verify()
    assert (report.ok, report.purged_segments) == (True, 2)
    trail.close()


def test_purge_needs_a_horizon(trail: AuditTrail) -> None:
    with pytest.raises(ConfigurationError) as caught:
        trail.purge()
    assert caught.value.setting == "before"


def test_segments_are_sealed_by_age_and_on_close(
    db: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    trail = open_trail(f"sqlite:///{db}", ring, clock, seal_after=60)
    auditor = trail.auditor(aggregation=None)
    auditor.emit(EventName.SESSION_CREATED, outcome=Outcome.SUCCESS, user="alice")
    trail.flush()
    assert trail.backend.seals() == []
    clock.advance(61)
    trail.flush()  # nothing queued, but the open segment is due
    assert [s.count for s in trail.backend.seals()] == [1]
    auditor.emit(EventName.SESSION_RENEWED, outcome=Outcome.SUCCESS, user="alice")
    trail.close()  # seals the open segment
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM bastion_audit_seals").fetchone() == (2,)
    reopened = AuditTrail.for_tools(f"sqlite:///{db}", keyring=ring)
    assert reopened.verify().ok
    reopened.close()


def test_key_rotation_keeps_old_segments_verifiable_and_users_findable(
    db: Path, clock: FrozenClock
) -> None:
    old, new = SecretKey.generate(), SecretKey.generate()
    first = open_trail(f"sqlite:///{db}", KeyRing(old), clock, segment_events=100)
    write_logins(first.auditor(aggregation=None), clock, 3)
    first.flush()  # segment 0 left open under the old key
    rotated_ring = KeyRing(new, previous=[old])
    rotated = open_trail(f"sqlite:///{db}", rotated_ring, clock, segment_events=100)
    write_logins(rotated.auditor(aggregation=None), clock, 3)
    rotated.flush()
    seals = rotated.backend.seals()
    assert [s.count for s in seals] == [3]  # the old key's segment was sealed first
    assert rotated.verify().ok
    assert [r.seq for r in rotated.query(user="alice")] == [6, 4, 3, 1]
    first.close()
    rotated.close()
    only_new = AuditTrail.for_tools(f"sqlite:///{db}", keyring=KeyRing(new))
    broken = only_new.verify().broken
    assert broken is not None
    assert (broken.fault, broken.segment) == (Fault.UNKNOWN_KEY, 0)
    only_new.close()


def test_two_writers_on_one_file_extend_one_chain(
    db: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    one = open_trail(f"sqlite:///{db}", ring, clock, segment_events=5)
    two = open_trail(f"sqlite:///{db}", ring, clock, segment_events=5)
    for round_ in range(6):
        for trail in (one, two):
            trail.auditor(aggregation=None).emit(
                "app_step", outcome=Outcome.SUCCESS, details={"round": round_}
            )
            trail.flush()
    assert [r.seq for r in one.query(limit=3)] == [12, 11, 10]
    report = two.verify()
    assert (report.ok, report.events) == (True, 12)
    one.close()
    two.close()


def test_a_full_queue_drops_counts_and_audits_the_drops(
    db: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    trail = open_trail(f"sqlite:///{db}", ring, clock, queue_size=3, batch_size=3)
    auditor = trail.auditor(aggregation=None)
    for number in range(5):
        auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"n": number})
    assert (trail.store_sink.queued, trail.store_sink.dropped) == (3, 2)
    trail.flush()
    assert trail.store_sink.dropped == 0
    records = trail.query()
    assert [r.event for r in records] == ["app_step"] * 3 + [DROPPED_EVENT]
    notice = records[-1]
    assert notice.level == "critical"
    assert notice.outcome == "failure"
    assert notice.details["dropped_count"] == 2
    assert notice.details["dropped_queue_full"] == 2
    assert notice.details["queue_size"] == 3
    assert trail.verify().ok
    trail.close()


def _lock(db: Path) -> sqlite3.Connection:
    """Another connection holding the write lock: the writer's BEGIN IMMEDIATE times out."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_refused_batch_is_dropped_counted_and_reported_later(
    db: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    trail = open_trail(f"sqlite:///{db}?timeout=0.05", ring, clock)
    auditor = trail.auditor(aggregation=None)
    holder = _lock(db)
    for _ in range(4):
        auditor.emit("app_step", outcome=Outcome.SUCCESS)
    trail.flush()  # drop mode: the request path never sees the failure
    assert (trail.store_sink.queued, trail.store_sink.dropped) == (0, 4)
    holder.execute("ROLLBACK")
    auditor.emit("app_step", outcome=Outcome.SUCCESS)
    trail.flush()
    notice, step = trail.query()[::-1]
    assert step.event == "app_step"
    assert notice.event == DROPPED_EVENT
    assert notice.details["dropped_store_unavailable"] == 4
    assert trail.verify().ok
    trail.close()


def test_fail_closed_refuses_instead_of_dropping(
    db: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    trail = open_trail(
        f"sqlite:///{db}?timeout=0.05", ring, clock, fail_closed=True, max_wait=0,
        queue_size=4, batch_size=2,
    )  # fmt: skip
    auditor = trail.auditor(aggregation=None)
    holder = _lock(db)
    auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"n": 1})
    with pytest.raises(AuditUnavailable, match="refused the queued events"):
        trail.flush()
    with pytest.raises(AuditUnavailable, match="refuses writes"):
        auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"n": 2})
    assert isinstance(AuditUnavailable("x"), StoreUnavailable)  # the store-outage family
    holder.execute("ROLLBACK")
    trail.flush()  # the kept event is written once the store is back
    auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"n": 3})
    for n in (4, 5, 6):
        auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"n": n})
    with pytest.raises(AuditUnavailable, match="stayed full"):
        auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"n": 7})
    trail.flush()
    assert [r.details["n"] for r in trail.query()] == [6, 5, 4, 3, 1]
    assert trail.store_sink.dropped == 0
    assert trail.query(event=DROPPED_EVENT) == []
    trail.close()


def test_the_background_writer_stores_everything_by_close(
    db: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    trail = AuditTrail(
        AuditPolicy(store=f"sqlite:///{db}", batch_size=64, log=False), keyring=ring, clock=clock
    )
    auditor = trail.auditor(aggregation=None)
    for number in range(1000):
        auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"n": number})
    trail.close()
    assert trail.store_sink.written == 1000
    reopened = AuditTrail.for_tools(f"sqlite:///{db}", keyring=ring)
    report = reopened.verify()
    assert (report.ok, report.events) == (True, 1000)
    reopened.close()


def test_events_after_close_are_dropped_not_lost_silently(trail: AuditTrail) -> None:
    trail.close()
    trail.auditor(aggregation=None).emit("app_step", outcome=Outcome.SUCCESS)
    assert trail.store_sink.dropped == 1


def test_the_logging_sink_gets_each_event_too(
    db: Path, ring: KeyRing, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    trail = open_trail(f"sqlite:///{db}", ring, clock, log=True)
    with caplog.at_level("INFO", logger="bastion.audit"):
        trail.auditor(aggregation=None).emit(EventName.SESSION_CREATED, outcome=Outcome.SUCCESS)
    trail.flush()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "bastion.audit"]
    assert json.loads(line)["event"] == "session_created"
    assert [r.event for r in trail.query()] == ["session_created"]
    trail.close()


def test_a_forked_worker_writes_its_own_events_into_the_same_chain(
    db: Path, ring: KeyRing, clock: FrozenClock
) -> None:
    trail = open_trail(f"sqlite:///{db}", ring, clock)
    auditor = trail.auditor(aggregation=None)
    auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"by": "parent"})
    auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"by": "queued"})
    trail.flush()
    auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"by": "parent_queued"})
    child = os.fork()
    if child == 0:  # the worker: its own connection, none of the parent's queue
        code = 1
        try:
            if trail.store_sink.queued == 0:
                auditor.emit("app_step", outcome=Outcome.SUCCESS, details={"by": "child"})
                trail.flush()
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    trail.flush()
    assert [r.details["by"] for r in trail.query()] == [
        "parent_queued",
        "child",
        "queued",
        "parent",
    ]
    assert trail.verify().ok
    trail.close()


def test_an_expected_head_must_still_be_there(trail: AuditTrail, clock: FrozenClock) -> None:
    write_logins(trail.auditor(aggregation=None), clock, 6)
    trail.flush()
    recorded = trail.verify()
    expect = (recorded.head_seq, recorded.head_mac or "")
    assert expect[0] == 6
    write_logins(trail.auditor(aggregation=None), clock, 3)
    trail.flush()
    assert trail.verify(expect=expect).ok  # the trail grew past the recorded head
    broken = trail.verify(expect=(6, "f" * 64)).broken
    assert broken is not None
    assert (broken.fault, broken.seq) == (Fault.TRUNCATED, 6)
    assert trail.verify(expect=(12, "f" * 64)).broken is not None
