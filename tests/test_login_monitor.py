"""The failed-login monitor over a real Auditor with a FrozenClock."""

from __future__ import annotations

import pytest

from bastion.core.audit import Auditor, EventName, IdentifierHasher, Outcome
from bastion.core.audit_names import GUIDE_EVENTS, owasp_name
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.login_monitor import LoginMonitor, LoginMonitorPolicy, Suspicion
from bastion.errors import ConfigurationError


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


def setup(**policy: object) -> tuple[Auditor, FrozenClock, list[Suspicion], Sink]:
    clock = FrozenClock(1_000_000.0)
    sink = Sink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink)
    found: list[Suspicion] = []
    LoginMonitor(LoginMonitorPolicy(**policy), hook=found.append).attach(auditor)  # type: ignore[arg-type]
    return auditor, clock, found, sink


def fail(auditor: Auditor, user: str, ip: str) -> None:
    auditor.emit(EventName.AUTHN_LOGIN_FAIL, outcome=Outcome.FAILURE, user=user, client_ip=ip)


def test_account_burst_raised_once_per_window_despite_aggregation() -> None:
    auditor, clock, found, sink = setup(account_failures=3, window=60.0)
    for _ in range(5):
        fail(auditor, "alice", "192.0.2.1")
        clock.advance(1)
    assert [s.pattern for s in found] == ["account_burst"]
    names = [e.name for e in sink.events]  # type: ignore[attr-defined]
    assert EventName.AUTHN_LOGIN_SUSPICIOUS in names


def test_slow_failures_are_not_a_burst() -> None:
    auditor, clock, found, _ = setup(account_failures=3, window=60.0)
    for _ in range(6):
        fail(auditor, "alice", "192.0.2.1")
        clock.advance(31)
    assert found == []


def test_credential_stuffing_and_network_burst() -> None:
    auditor, _, found, _ = setup(stuffing_accounts=4, network_failures=6, account_failures=10)
    for n in range(6):
        fail(auditor, f"user{n}", "198.51.100.7")
    assert [s.pattern for s in found] == ["credential_stuffing", "network_burst"]


def test_new_network_after_a_history() -> None:
    auditor, _, found, _ = setup()
    ok = EventName.AUTHN_LOGIN_SUCCESS
    auditor.emit(ok, outcome=Outcome.SUCCESS, user="bob", client_ip="192.0.2.1")
    auditor.emit(ok, outcome=Outcome.SUCCESS, user="bob", client_ip="192.0.2.1")
    assert found == []
    auditor.emit(ok, outcome=Outcome.SUCCESS, user="bob", client_ip="203.0.113.9")
    assert [s.pattern for s in found] == ["new_network"]


def test_memory_is_bounded() -> None:
    clock = FrozenClock(0.0)
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, Sink(), aggregation=None)
    monitor = LoginMonitor(LoginMonitorPolicy(max_tracked=50))
    monitor.attach(auditor)
    for n in range(2000):
        fail(auditor, f"u{n}", f"10.0.{n // 256}.{n % 256}")
    assert monitor.tracked <= 5 * 50


def test_thresholds_validated() -> None:
    with pytest.raises(ConfigurationError) as caught:
        LoginMonitorPolicy(account_failures=1)
    assert caught.value.setting == "account_failures"


def test_guide_names_map_onto_the_vocabulary() -> None:
    assert len(GUIDE_EVENTS) == 10
    assert owasp_name("suspicious_activity") is EventName.AUTHN_LOGIN_SUSPICIOUS
    assert owasp_name("LOGIN_FAILED") is EventName.AUTHN_LOGIN_FAIL
    with pytest.raises(ConfigurationError):
        owasp_name("NOPE")
