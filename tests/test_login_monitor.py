"""The failed-login monitor over a real Auditor with a FrozenClock."""

from __future__ import annotations

import pytest

from bastion.core.audit import Auditor, EventName, IdentifierHasher, Outcome, bind_request_id
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


def request_from(auditor: Auditor, address: str, user: str, *, ok: bool = False) -> None:
    """One login event inside a request from ``address`` (bound as the headers layer does)."""
    token = bind_request_id(describe=lambda _scope: ("agent", address), source=None)
    try:
        if ok:
            auditor.emit(EventName.AUTHN_LOGIN_SUCCESS, outcome=Outcome.SUCCESS, user=user)
        else:
            auditor.emit(EventName.AUTHN_LOGIN_FAIL, outcome=Outcome.FAILURE, user=user)
    finally:
        token.var.reset(token)


def test_an_ipv6_client_rotating_through_its_64_is_one_network() -> None:
    auditor, _, found, sink = setup(stuffing_accounts=4, network_failures=6, account_failures=10)
    for n in range(6):
        request_from(auditor, f"2001:db8:5:7::{n + 1:x}", f"user{n}")
    assert [s.pattern for s in found] == ["credential_stuffing", "network_burst"]
    # Each attempt's own address is still what the events carry (hashed).
    addresses = {e.client_ip.digest for e in sink.events if e.name == EventName.AUTHN_LOGIN_FAIL}  # type: ignore[attr-defined]
    assert len(addresses) == 6


def test_other_64s_and_other_24s_are_other_networks() -> None:
    auditor, _, found, _ = setup(stuffing_accounts=4, network_failures=6, account_failures=10)
    for n in range(6):
        request_from(auditor, f"2001:db8:5:{n:x}::1", f"user{n}")
        request_from(auditor, f"198.51.{n}.7", f"other{n}")
    assert found == []


def test_the_prefixes_are_settings() -> None:
    auditor, _, found, _ = setup(stuffing_accounts=3, network_failures=50, ipv4_prefix=32)
    for n in range(3):
        request_from(auditor, f"198.51.100.{n + 1}", f"user{n}")  # one /24, three /32s
    assert found == []
    auditor, _, found, _ = setup(stuffing_accounts=3, network_failures=50, ipv4_prefix=16)
    for n in range(3):
        request_from(auditor, f"198.51.{n}.1", f"user{n}")  # one /16
    assert [s.pattern for s in found] == ["credential_stuffing"]


def test_a_new_address_in_a_known_network_is_not_a_new_network() -> None:
    auditor, _, found, _ = setup()
    request_from(auditor, "192.0.2.1", "bob", ok=True)
    request_from(auditor, "192.0.2.77", "bob", ok=True)  # DHCP gave another address
    request_from(auditor, "::ffff:192.0.2.9", "bob", ok=True)  # the same, IPv4-mapped
    assert found == []
    request_from(auditor, "203.0.113.9", "bob", ok=True)
    assert [s.pattern for s in found] == ["new_network"]


@pytest.mark.parametrize(("setting", "value"), [("ipv4_prefix", 33), ("ipv6_prefix", 8)])
def test_prefix_out_of_range_is_refused(setting: str, value: int) -> None:
    with pytest.raises(ConfigurationError) as caught:
        LoginMonitorPolicy(**{setting: value})  # type: ignore[arg-type]
    assert caught.value.setting == setting


def test_the_suspicion_event_names_the_account_as_its_user() -> None:
    auditor, _, found, sink = setup(account_failures=3, window=60.0)
    for _ in range(3):
        fail(auditor, "alice", "192.0.2.1")
    (suspicion,) = found
    (event,) = [e for e in sink.events if e.name == EventName.AUTHN_LOGIN_SUSPICIOUS]  # type: ignore[attr-defined]
    assert event.user == suspicion.user  # type: ignore[attr-defined]
    assert event.user.digest == event.details["user_hash"]  # type: ignore[attr-defined]
