"""Login throttling: back-off rules (pure) and the store-backed LoginThrottle on real stores."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.throttle import (
    BackoffRule,
    ThrottleCounter,
    ThrottleDecision,
    ThrottlePolicy,
    ThrottleState,
    client_group,
    normalize_username,
)
from bastion.engine.throttle import LoginOutcome, LoginThrottle
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.stores.base import Store

ATTACKER = "198.51.100.7"
VICTIM_IP = "203.0.113.20"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest.fixture
def throttle(
    store: Store, ring: KeyRing, clock: FrozenClock, sink: RecordingAuditSink
) -> LoginThrottle:
    return LoginThrottle(
        store, ring, clock=clock, auditor=Auditor(IdentifierHasher(ring), clock, sink)
    )


def verifier(result: bool) -> Callable[[], Awaitable[bool]]:
    async def verify() -> bool:
        return result

    return verify


# --- pure rules -------------------------------------------------------------------------------


def test_backoff_doubles_after_the_free_attempts_and_caps() -> None:
    rule = BackoffRule(free_attempts=3, base_delay=1.0, max_delay=10.0)
    assert [rule.delay_for(n) for n in range(8)] == [0, 0, 0, 0, 1, 2, 4, 8]
    assert rule.delay_for(9) == 10.0
    assert rule.delay_for(10_000) == 10.0


@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=20))
def test_delay_is_monotonic_and_bounded(failures: int, free: int) -> None:
    rule = BackoffRule(free_attempts=free, base_delay=0.5, max_delay=300.0)
    assert 0 <= rule.delay_for(failures) <= rule.delay_for(failures + 1) <= 300.0


@given(st.binary(max_size=40))
def test_state_decode_is_total(raw: bytes) -> None:
    state = ThrottleState.decode(raw, now=1000.0, rule=BackoffRule(free_attempts=1))
    assert state.failures >= 0


def test_state_round_trip_and_window() -> None:
    rule = BackoffRule(free_attempts=0, window=60.0)
    state = ThrottleState().failed(100.0).failed(101.0)
    assert ThrottleState.decode(state.encode(), now=150.0, rule=rule) == state
    assert ThrottleState.decode(state.encode(), now=161.0, rule=rule) == ThrottleState()


def test_user_names_and_clients_normalise() -> None:
    assert normalize_username(" Alice ") == normalize_username("ALICE") == "alice"
    assert normalize_username("\uff41lice") == "alice"  # full-width a
    assert client_group("2001:db8:1:2:aaaa::1") == client_group("2001:db8:1:2:bbbb::9")
    assert client_group("2001:db8:1:2::1") != client_group("2001:db8:1:3::1")
    assert client_group("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_group(" 192.0.2.1 ") == "192.0.2.1"
    assert client_group("unix-socket") == "unix-socket"


def test_decision_takes_the_longest_wait() -> None:
    decision = ThrottleDecision.combine(
        {ThrottleCounter.PAIR: 3.2, ThrottleCounter.CLIENT: 0.0, ThrottleCounter.ACCOUNT: 1.0}
    )
    assert not decision.allowed
    assert decision.counter is ThrottleCounter.PAIR
    assert decision.http_status == 429
    assert decision.retry_after_header == "4"
    assert ThrottleDecision.combine({ThrottleCounter.PAIR: 0.0}).allowed


def test_rules_are_validated() -> None:
    with pytest.raises(ConfigurationError) as caught:
        BackoffRule(free_attempts=-1)
    assert caught.value.setting == "free_attempts"
    with pytest.raises(ConfigurationError) as caught:
        BackoffRule(free_attempts=1, base_delay=10, max_delay=1)
    assert caught.value.setting == "max_delay"
    with pytest.raises(ConfigurationError):
        ThrottlePolicy(pair=5)
    with pytest.raises(ConfigurationError) as caught:
        ThrottlePolicy(device=3)  # type: ignore[arg-type]
    assert caught.value.setting == "device"
    for age in (0, -1.0, float("inf"), True, "90d"):
        with pytest.raises(ConfigurationError) as caught:
            ThrottlePolicy(device_cookie_max_age=age)  # type: ignore[arg-type]
        assert caught.value.setting == "device_cookie_max_age"


def test_a_refund_gives_back_one_failure_and_keeps_the_time() -> None:
    state = ThrottleState().failed(100.0).failed(105.0)
    assert state.refunded() == ThrottleState(1, 105.0)
    assert ThrottleState().refunded() == ThrottleState()


# --- against real stores ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_backoff_starts_after_five_failures(
    throttle: LoginThrottle, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    for _ in range(5):
        assert (await throttle.check("alice", ATTACKER)).allowed
        decision = await throttle.record_failure("alice", ATTACKER)
        assert decision.allowed  # five free attempts
    assert "authn_login_lock" not in sink.names()
    decision = await throttle.record_failure("alice", ATTACKER)
    assert not decision.allowed
    assert decision.counter is ThrottleCounter.PAIR
    assert decision.retry_after == pytest.approx(1.0)
    assert sink.names().count("authn_login_lock") == 1
    blocked = await throttle.check("alice", ATTACKER)
    assert not blocked.allowed
    assert blocked.retry_after_header == "1"
    clock.advance(1.0)
    assert (await throttle.check("alice", ATTACKER)).allowed


@pytest.mark.asyncio
async def test_attacker_cannot_lock_the_victim_out(
    throttle: LoginThrottle, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    wrong = verifier(False)
    failures = 0
    while failures < 50:
        attempt = await throttle.attempt("victim", ATTACKER, wrong)
        if attempt.outcome is LoginOutcome.THROTTLED:
            assert attempt.http_status == 429
            clock.advance(attempt.decision.retry_after)
            continue
        assert attempt.outcome is LoginOutcome.INVALID
        failures += 1
    # The attacker is slowed down ...
    attacker = await throttle.attempt("victim", ATTACKER, verifier(True))
    assert attacker.outcome is LoginOutcome.THROTTLED
    assert attacker.decision.counter in {ThrottleCounter.PAIR, ThrottleCounter.CLIENT}
    # ... and the victim, from their own address, logs in at once.
    victim = await throttle.attempt("victim", VICTIM_IP, verifier(True))
    assert victim.outcome is LoginOutcome.SUCCESS
    assert victim.http_status == 200
    assert sink.names()[-1] == "authn_login_success"


@pytest.mark.asyncio
async def test_user_name_case_variants_share_one_counter(throttle: LoginThrottle) -> None:
    for name in ("Alice", "ALICE", "alice", " alice", "aLiCe", "alice "):
        await throttle.record_failure(name, ATTACKER)
    decision = await throttle.check("alice", ATTACKER)
    assert not decision.allowed
    assert decision.counter is ThrottleCounter.PAIR


@pytest.mark.asyncio
async def test_empty_user_name_never_throttles_everyone(throttle: LoginThrottle) -> None:
    for _ in range(25):
        await throttle.record_failure("", ATTACKER)
    assert (await throttle.check("", VICTIM_IP)).allowed
    assert (await throttle.check("bob", VICTIM_IP)).allowed
    assert (await throttle.check("", ATTACKER)).allowed  # only the client counter moved (25 < 30)


@pytest.mark.asyncio
async def test_one_client_trying_many_accounts_is_slowed(
    throttle: LoginThrottle, clock: FrozenClock
) -> None:
    for index in range(31):
        await throttle.record_failure(f"user{index}", ATTACKER)
    decision = await throttle.check("someone-else", ATTACKER)
    assert not decision.allowed
    assert decision.counter is ThrottleCounter.CLIENT
    assert (await throttle.check("someone-else", VICTIM_IP)).allowed


@pytest.mark.asyncio
async def test_account_wide_cap_is_soft(store: Store, ring: KeyRing, clock: FrozenClock) -> None:
    policy = ThrottlePolicy(account=BackoffRule(free_attempts=10, max_delay=30.0))
    throttle = LoginThrottle(store, ring, clock=clock, policy=policy)
    for index in range(40):  # a distributed attack: one failure from each of many addresses
        await throttle.record_failure("victim", f"198.51.100.{index}")
    decision = await throttle.check("victim", VICTIM_IP)
    assert not decision.allowed
    assert decision.counter is ThrottleCounter.ACCOUNT
    assert decision.retry_after <= 30.0  # a delay, never a lock-out
    clock.advance(30.0)
    assert (await throttle.check("victim", VICTIM_IP)).allowed


@pytest.mark.asyncio
async def test_success_clears_the_pair_counter_only(throttle: LoginThrottle) -> None:
    for _ in range(5):
        await throttle.record_failure("alice", ATTACKER)
    await throttle.record_success("alice", ATTACKER)
    await throttle.record_failure("alice", ATTACKER)
    assert (await throttle.check("alice", ATTACKER)).allowed


@pytest.mark.asyncio
async def test_counters_forget_after_the_window(
    throttle: LoginThrottle, clock: FrozenClock
) -> None:
    for _ in range(8):
        await throttle.record_failure("alice", ATTACKER)
    assert not (await throttle.check("alice", ATTACKER)).allowed
    clock.advance(24 * 3600.0)
    assert (await throttle.check("alice", ATTACKER)).allowed


@pytest.mark.asyncio
async def test_concurrent_failures_are_all_counted(
    store: Store, ring: KeyRing, clock: FrozenClock
) -> None:
    policy = ThrottlePolicy(pair=BackoffRule(free_attempts=20))
    throttle = LoginThrottle(store, ring, clock=clock, policy=policy)
    await asyncio.gather(*(throttle.record_failure("alice", ATTACKER) for _ in range(20)))
    assert (await throttle.check("alice", ATTACKER)).allowed
    decision = await throttle.record_failure("alice", ATTACKER)
    assert decision.retry_after == pytest.approx(1.0)  # the 21st failure: exactly one over


@pytest.mark.asyncio
async def test_audit_events_hash_identifiers(
    throttle: LoginThrottle, sink: RecordingAuditSink, ring: KeyRing
) -> None:
    await throttle.record_failure("Alice", ATTACKER, request_id="req-1")
    await throttle.record_success("alice", ATTACKER)
    fail, success = sink.events
    assert str(fail.name) == "authn_login_fail"
    assert str(success.name) == "authn_login_success"
    assert fail.user == success.user  # case variants: one identity
    assert fail.user is not None
    assert fail.user.digest == IdentifierHasher(ring).hash("alice").digest
    line = fail.to_json()
    assert "alice" not in line.lower()
    assert ATTACKER not in line
    assert fail.request_id == "req-1"


@pytest.mark.asyncio
async def test_store_keys_hold_no_raw_identifiers(ring: KeyRing, clock: FrozenClock) -> None:
    store = MemoryStore(clock=clock)
    throttle = LoginThrottle(store, ring, clock=clock)
    await throttle.record_failure("alice@example.org", ATTACKER)
    keys = list(store._data)  # a white-box look at what a leaked store would show
    assert len(keys) == 3
    assert all("alice" not in key and ATTACKER not in key for key in keys)
