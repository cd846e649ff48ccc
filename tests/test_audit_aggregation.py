"""Audit floods are aggregated: bounded lines, exact counts, significant events never lost."""

from __future__ import annotations

import threading
import warnings
from collections import Counter

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.responses import PlainTextResponse
from starlette.routing import Route

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client at import time (see other modules).
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion.asgi.ratelimit import RateLimitMiddleware
from bastion.core.audit import (
    SIGNIFICANT_EVENTS,
    AuditAggregation,
    AuditEvent,
    Auditor,
    EventName,
    IdentifierHasher,
    Outcome,
)
from bastion.core.clock import FrozenClock
from bastion.core.keys import SecretKey
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink

KEY = SecretKey(b"audit-key-" * 4)
T0 = 1_700_000_000.0
RATE = EventName.EXCESS_RATE_LIMIT_EXCEEDED


def make(
    aggregation: AuditAggregation | None = None,
) -> tuple[Auditor, RecordingAuditSink, FrozenClock]:
    sink = RecordingAuditSink()
    clock = FrozenClock(T0)
    chosen = AuditAggregation(interval=10.0, max_keys=64) if aggregation is None else aggregation
    return Auditor(IdentifierHasher(KEY), clock, sink, aggregation=chosen), sink, clock


def count_of(event: AuditEvent) -> int:
    """How many occurrences one line stands for."""
    value = event.details.get("aggregated_count")
    return 1 if value is None else int(value)


def test_a_flood_from_one_address_gives_bounded_lines_and_exact_counts() -> None:
    auditor, sink, clock = make()
    significant: Counter[str] = Counter()
    for i in range(10_000):  # 40 s of refusals, as in the report
        clock.set(T0 + i / 250)
        auditor.emit(
            RATE, outcome=Outcome.BLOCKED, client_ip="198.51.100.7", details={"rule": "api"}
        )
        if i % 1000 == 500:
            auditor.emit(EventName.AUTHN_LOGIN_SUCCESS, outcome=Outcome.SUCCESS, user="alice")
            auditor.emit(EventName.AUTHN_LOGIN_LOCK, outcome=Outcome.BLOCKED, user="bob")
            auditor.emit("session_destroyed", outcome=Outcome.SUCCESS, user="alice")
            significant.update(["authn_login_success", "authn_login_lock", "session_destroyed"])
    clock.set(T0 + 40)
    auditor.flush()

    rate_lines = [e for e in sink.events if e.name == RATE]
    # Four 10 s windows: each has its first event at once and one summary of the rest.
    assert len(rate_lines) == 8
    assert sum(count_of(e) for e in rate_lines) == 10_000
    first = sink.events[0]
    assert first.name == RATE
    assert "aggregated_count" not in first.details
    assert first.time.timestamp() == T0
    summary = rate_lines[1]
    assert summary.details["aggregated_count"] == 2499
    assert summary.details["rule"] == "api"
    assert summary.client_ip == first.client_ip
    assert summary.details["aggregated_since"] == "2023-11-14T22:13:20.000Z"
    assert summary.details["aggregated_seconds"] == 10.0
    # Significant events are all there, one line each, never aggregated.
    others = Counter(str(e.name) for e in sink.events if e.name != RATE)
    assert others == significant
    assert all("aggregated_count" not in e.details for e in sink.events if e.name != RATE)
    assert len(sink.events) == 8 + sum(significant.values())


def test_a_first_refusal_is_emitted_at_once_and_each_key_counts_apart() -> None:
    auditor, sink, _clock = make()
    for client in ("192.0.2.1", "192.0.2.2"):
        auditor.emit(EventName.MALICIOUS_CSRF, outcome=Outcome.BLOCKED, client_ip=client)
    auditor.emit(
        EventName.MALICIOUS_CSRF,
        outcome=Outcome.BLOCKED,
        client_ip="192.0.2.1",
        details={"reason": "origin_mismatch"},
    )
    assert [e.name for e in sink.events] == [EventName.MALICIOUS_CSRF] * 3
    for _ in range(5):
        auditor.emit(EventName.MALICIOUS_CSRF, outcome=Outcome.BLOCKED, client_ip="192.0.2.1")
    assert len(sink.events) == 3  # repeats are counted, not written
    auditor.flush()
    assert len(sink.events) == 4
    assert sink.events[-1].details["aggregated_count"] == 5
    auditor.flush()  # nothing pending: nothing more
    assert len(sink.events) == 4


def test_a_summary_is_written_by_the_next_event_after_its_interval() -> None:
    auditor, sink, clock = make()
    for _ in range(3):
        auditor.emit(RATE, outcome=Outcome.BLOCKED, client_ip="192.0.2.9")
    clock.advance(10.0)
    # Any later event (here a login) closes the window: no timer thread, no flush needed.
    auditor.emit(EventName.AUTHN_LOGIN_SUCCESS, outcome=Outcome.SUCCESS, user="alice")
    assert [str(e.name) for e in sink.events] == [RATE, RATE, "authn_login_success"]
    summary = sink.events[1]
    assert summary.details["aggregated_count"] == 2
    assert summary.time.timestamp() == T0 + 10.0
    # The next occurrence opens a new window and is written at once.
    auditor.emit(RATE, outcome=Outcome.BLOCKED, client_ip="192.0.2.9")
    assert len(sink.events) == 4
    assert "aggregated_count" not in sink.events[-1].details


def test_anonymous_traffic_from_many_addresses_cannot_grow_the_table() -> None:
    auditor, sink, clock = make(AuditAggregation(interval=60.0, max_keys=64))
    for i in range(10_000):
        auditor.emit(RATE, outcome=Outcome.BLOCKED, client_ip=f"10.{i // 256 % 256}.{i % 256}.1")
        clock.advance(0.001)
        assert auditor.tracked <= 64 + 1  # the keys plus one overflow entry per name/outcome
    # 64 addresses are written at once; the rest (a different address each) share one
    # overflow entry: its first event is written, the others counted.
    assert len(sink.events) == 65
    auditor.flush()
    assert len(sink.events) == 66
    overflow = sink.events[-1]
    assert overflow.details["aggregated_overflow"] is True
    assert overflow.client_ip is None  # it stands for many addresses
    assert sum(count_of(e) for e in sink.events) == 10_000
    assert auditor.tracked == 0
    # A significant event is never folded into the overflow, however full the table.
    for i in range(100):
        auditor.emit(RATE, outcome=Outcome.BLOCKED, client_ip=f"172.16.0.{i}")
    before = len(sink.events)
    auditor.emit(EventName.AUTHN_LOGIN_SUCCESS, outcome=Outcome.SUCCESS, user="alice")
    assert len(sink.events) == before + 1


def test_events_outside_the_set_and_no_aggregation_are_written_one_by_one() -> None:
    auditor, sink, _clock = make()
    for _ in range(50):
        auditor.emit(EventName.SESSION_CREATED, outcome=Outcome.SUCCESS, user="alice")
    assert len(sink.events) == 50
    plain = Auditor(IdentifierHasher(KEY), FrozenClock(T0), sink, aggregation=None)
    for _ in range(50):
        plain.emit(RATE, outcome=Outcome.BLOCKED, client_ip="192.0.2.1")
    assert len(sink.events) == 100
    assert plain.tracked == 0


def test_the_default_auditor_aggregates_rate_limit_refusals() -> None:
    sink = RecordingAuditSink()
    clock = FrozenClock(T0)
    auditor = Auditor(IdentifierHasher(KEY), clock, sink)
    for _ in range(1000):
        auditor.emit(RATE, outcome=Outcome.BLOCKED, client_ip="192.0.2.1")
    assert len(sink.events) == 1
    assert RATE in AuditAggregation().events
    assert EventName.MALICIOUS_CSRF in AuditAggregation().events


def test_a_flood_over_http_writes_bounded_audit_lines() -> None:
    sink = RecordingAuditSink()
    clock = FrozenClock(T0)
    auditor = Auditor(IdentifierHasher(KEY), clock, sink)

    async def home(_request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    limiter = RateLimiter(MemoryStore(clock=clock), auditor=auditor)
    app = RateLimitMiddleware(
        Starlette(routes=[Route("/", home)]), limiter, Rule("api", "5/minute")
    )
    with TestClient(app, base_url="https://testserver") as client:
        statuses = Counter(client.get("/").status_code for _ in range(300))
    assert statuses == {200: 5, 429: 295}
    assert [e.name for e in sink.events] == [RATE]  # the first refusal, written at once
    auditor.flush()
    assert [e.name for e in sink.events] == [RATE, RATE]
    assert sum(count_of(e) for e in sink.events) == 295


def test_aggregation_settings_are_validated() -> None:
    for settings, setting in (
        ({"interval": 0}, "interval"),
        ({"interval": float("inf")}, "interval"),
        ({"interval": True}, "interval"),
        ({"max_keys": 0}, "max_keys"),
        ({"max_keys": 1.5}, "max_keys"),
        ({"events": "excess_rate_limit_exceeded"}, "events"),
        ({"events": ["Not A Name"]}, "name"),
    ):
        with pytest.raises(ConfigurationError) as caught:
            AuditAggregation(**settings)  # type: ignore[arg-type]
        assert caught.value.setting == setting
    for name in SIGNIFICANT_EVENTS:
        with pytest.raises(ConfigurationError, match="never aggregated") as caught:
            AuditAggregation(events=[RATE, name])
        assert caught.value.setting == "events"
    assert AuditAggregation(events=["app_noise"]).events == frozenset({"app_noise"})
    assert {"authn_login_success", "authn_login_lock", "session_destroyed"} <= SIGNIFICANT_EVENTS


def test_threads_sharing_one_auditor_lose_no_count() -> None:
    auditor, sink, _clock = make()

    def flood(client: str) -> None:
        for _ in range(1000):
            auditor.emit(RATE, outcome=Outcome.BLOCKED, client_ip=client)

    threads = [threading.Thread(target=flood, args=(f"192.0.2.{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    auditor.flush()
    assert len(sink.events) == 16  # per address: the first, then one summary
    assert sum(count_of(e) for e in sink.events) == 8000


def test_a_summary_of_an_event_with_every_detail_slot_used_is_still_valid() -> None:
    auditor, sink, _clock = make()
    details = {f"field_{n:02d}": n for n in range(32)}
    for _ in range(3):
        auditor.emit(RATE, outcome=Outcome.BLOCKED, client_ip="192.0.2.1", details=details)
    auditor.flush()
    summary = sink.events[-1]
    assert summary.details["aggregated_count"] == 2
    assert len(summary.details) <= 32
    assert summary.details["field_00"] == 0
