"""Credentials on the synchronous side (WSGI): login throttle, API keys (with the per-owner
index), TOTP and recovery codes, each one flow driven by both drivers, on real stores.

Round trips are counted by :class:`bastion.testing.sync_store.CountingStore`, a proxy around a
real store that counts every operation on either side.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pyotp
import pytest
import pytest_asyncio

from bastion.apikeys import APIKeyStatus, generate_api_key
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.throttle import BackoffRule, ThrottleCounter, ThrottlePolicy
from bastion.engine.apikeys import APIKeyManager
from bastion.engine.throttle import LoginOutcome, LoginThrottle
from bastion.engine.totp import TOTPManager, TOTPResult
from bastion.errors import BadToken, ConfigurationError
from bastion.stores.keyspace import hash_tag, key_slot
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from bastion.stores.base import Store

START = 1_800_000_010.0  # 10 s into a 30 s TOTP step
ATTACKER = "198.51.100.7"
VICTIM_IP = "203.0.113.20"
STORES = ["memory", "sqlite", "redis"]


def open_store(kind: str, request: pytest.FixtureRequest, clock: FrozenClock, path: Path) -> Store:
    if kind == "memory":
        return MemoryStore(clock=clock)
    if kind == "sqlite":
        return SQLiteStore(path / "credentials.db", clock=clock)
    return RedisStore.from_url(
        request.getfixturevalue("redis_url"),
        prefix=request.getfixturevalue("redis_prefix"),
        clock=clock,
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture(params=STORES)
def counted(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> Iterator[CountingStore]:
    """A real store behind a counting proxy, used through its sync side only (no event loop)."""
    store = CountingStore(open_store(request.param, request, clock, tmp_path))
    yield store
    store.sync.close()


@pytest_asyncio.fixture(params=STORES)
async def both(
    request: pytest.FixtureRequest, clock: FrozenClock, tmp_path: Path
) -> AsyncIterator[CountingStore]:
    """A real store behind a counting proxy, used through both sides."""
    store = CountingStore(open_store(request.param, request, clock, tmp_path))
    yield store
    store.sync.close()
    await store.aclose()


def close_thread_side(store: CountingStore) -> None:
    """Release a worker thread's SQLite connection. (Redis's sync side is one client per
    process, closed at teardown; the memory store holds nothing per thread.)"""
    if isinstance(store.inner, SQLiteStore):
        store.sync.close()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def sink() -> RecordingAuditSink:
    return RecordingAuditSink()


def auditor(ring: KeyRing, clock: FrozenClock, sink: RecordingAuditSink) -> Auditor:
    return Auditor(IdentifierHasher(ring), clock, sink)


# --- login throttle ---------------------------------------------------------------------------


def test_sync_attacker_cannot_lock_the_victim_out(
    counted: CountingStore, ring: KeyRing, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    throttle = LoginThrottle(counted, ring, clock=clock, auditor=auditor(ring, clock, sink))
    failures = 0
    while failures < 50:
        attempt = throttle.attempt_sync("Victim", ATTACKER, lambda: False)
        if attempt.outcome is LoginOutcome.THROTTLED:
            assert attempt.http_status == 429
            clock.advance(attempt.decision.retry_after)
            continue
        assert attempt.outcome is LoginOutcome.INVALID
        failures += 1
    attacker = throttle.attempt_sync("victim", ATTACKER, lambda: True)
    assert attacker.outcome is LoginOutcome.THROTTLED
    assert attacker.decision.counter in {ThrottleCounter.PAIR, ThrottleCounter.CLIENT}
    victim = throttle.attempt_sync("victim", VICTIM_IP, lambda: True)
    assert victim.outcome is LoginOutcome.SUCCESS
    assert sink.names()[-1] == "authn_login_success"
    assert "authn_login_lock" in sink.names()


def test_sync_case_variants_share_one_counter_and_empty_names_do_not_count(
    counted: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(counted, ring, clock=clock)
    allowed = [
        throttle.record_failure_sync(name, ATTACKER).allowed
        for name in ("Alice", "ALICE", "alice", " alice", "aLiCe", "alice ")
    ]
    assert allowed == [True] * 5 + [False]  # one counter: the sixth failure starts the delay
    decision = throttle.check_sync("alice", ATTACKER)
    assert not decision.allowed
    assert decision.counter is ThrottleCounter.PAIR
    assert decision.retry_after_header == "1"
    for _ in range(20):
        throttle.record_failure_sync("", VICTIM_IP)
    assert throttle.check_sync("", "192.0.2.1").allowed
    assert throttle.check_sync("bob", "192.0.2.1").allowed
    throttle.record_success_sync("alice", ATTACKER)
    assert throttle.check_sync("alice", ATTACKER).allowed  # the pair counter was cleared


def test_sync_failures_from_threads_are_all_counted(
    counted: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    policy = ThrottlePolicy(pair=BackoffRule(free_attempts=20))
    throttle = LoginThrottle(counted, ring, clock=clock, policy=policy)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                throttle.record_failure_sync("alice", ATTACKER)
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_thread_side(counted)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert throttle.check_sync("alice", ATTACKER).allowed  # 20 failures: all free
    decision = throttle.record_failure_sync("alice", ATTACKER)
    assert decision.retry_after == pytest.approx(1.0)  # the 21st: exactly one over


def test_login_round_trips_per_path(
    counted: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(counted, ring, clock=clock)
    # Every attempt is reserved (3 compare-and-sets) before the password is checked; a
    # success refunds the account and client counters (2) and clears the pair counter (1).
    success = {"get": 3, "compare_and_set": 5, "delete": 1}
    counted.reset()
    assert throttle.attempt_sync("alice", ATTACKER, lambda: True).ok
    assert counted.calls == success
    counted.reset()
    assert throttle.attempt_sync("alice", ATTACKER, lambda: False).outcome is LoginOutcome.INVALID
    assert counted.calls == {"get": 3, "compare_and_set": 3}  # the reservation is the failure
    counted.reset()
    assert throttle.attempt_sync("alice", ATTACKER, lambda: True).ok
    assert counted.calls == success
    for _ in range(6):
        throttle.record_failure_sync("bob", ATTACKER)
    counted.reset()
    throttled = throttle.attempt_sync("bob", ATTACKER, lambda: True)
    assert throttled.outcome is LoginOutcome.THROTTLED
    assert counted.calls == {"get": 3}


@pytest.mark.asyncio
async def test_both_sides_share_counters_and_cost_the_same(
    both: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(both, ring, clock=clock)

    async def wrong() -> bool:
        return False

    both.reset()
    await throttle.attempt("alice", ATTACKER, wrong)
    async_failure = dict(both.calls)
    both.reset()
    throttle.attempt_sync("alice", ATTACKER, lambda: False)
    assert dict(both.calls) == async_failure == {"get": 3, "compare_and_set": 3}
    for _ in range(2):
        throttle.record_failure_sync("alice", ATTACKER)
        await throttle.record_failure("alice", ATTACKER)
    blocked = await throttle.check("alice", ATTACKER)  # 6 failures, half from each side
    assert not blocked.allowed
    assert blocked == throttle.check_sync("alice", ATTACKER)


@pytest.mark.asyncio
async def test_a_failure_during_a_slow_password_check_is_counted_once_each(
    both: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    """The attempt is reserved before the slow password check, so a failure recorded during
    the check changes nothing the attempt still has to write: both count, no retries."""
    throttle = LoginThrottle(both, ring, clock=clock, policy=ThrottlePolicy())
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_wrong() -> bool:
        started.set()
        await release.wait()
        return False

    both.reset()
    pending = asyncio.ensure_future(throttle.attempt("alice", ATTACKER, slow_wrong))
    await started.wait()
    throttle.record_failure_sync("alice", ATTACKER)  # lands between the read and the write
    release.set()
    assert (await pending).outcome is LoginOutcome.INVALID
    # attempt: 3 reads, 3 CAS (the reservation); the sync failure: 3 reads, 3 CAS.
    assert both.calls == {"get": 6, "compare_and_set": 6}
    for _ in range(3):
        await throttle.record_failure("alice", ATTACKER)
    decision = await throttle.record_failure("alice", ATTACKER)  # the 6th failure
    assert decision.retry_after == pytest.approx(1.0)


def test_sync_methods_need_a_sync_side(ring: KeyRing) -> None:
    class AsyncOnly:
        async def get(self, key: str) -> bytes | None:
            return None

    throttle = LoginThrottle(AsyncOnly(), ring)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no synchronous side") as caught:
        throttle.check_sync("alice", ATTACKER)
    assert caught.value.setting == "store"


# --- API keys ---------------------------------------------------------------------------------


def test_sync_api_key_life_cycle(
    counted: CountingStore, ring: KeyRing, clock: FrozenClock, sink: RecordingAuditSink
) -> None:
    keys = APIKeyManager(counted, ring, clock=clock, auditor=auditor(ring, clock, sink))
    reader = keys.create_sync("alice", scopes=["posts:read"], expires_in=3600)
    counted.reset()
    assert keys.verify_sync(reader.token, required_scope="posts:read").ok
    assert counted.calls == {"get": 1, "compare_and_set": 1}  # first use writes last-used
    counted.reset()
    assert keys.verify_sync(reader.token, required_scope="posts:read").ok
    assert counted.calls == {"get": 1}
    scoped = keys.verify_sync(reader.token, required_scope="posts:write")
    assert (scoped.status, scoped.http_status) == (APIKeyStatus.INSUFFICIENT_SCOPE, 403)
    counted.reset()
    garbled = keys.verify_sync(reader.token[:-1] + ("A" if reader.token[-1] != "A" else "B"))
    assert (garbled.status, garbled.http_status) == (APIKeyStatus.MALFORMED, 401)
    assert counted.total == 0  # refused before any store call
    assert keys.verify_sync(generate_api_key()).status is APIKeyStatus.UNKNOWN
    clock.advance(3600)
    assert keys.verify_sync(reader.token).status is APIKeyStatus.EXPIRED
    writer = keys.create_sync("alice", scopes=["posts:*"])
    assert keys.revoke_sync(writer.record.key_id)
    assert not keys.revoke_sync(writer.record.key_id)
    revoked = keys.verify_sync(writer.token, required_scope="posts:write")
    assert (revoked.status, revoked.http_status) == (APIKeyStatus.REVOKED, 401)
    record = keys.get_sync(writer.record.key_id)
    assert record is not None
    assert record.revoked_at == clock.now()
    assert sink.names().count("authn_token_created") == 2
    assert sink.names().count("authn_token_revoked") == 1
    assert manager_counts(keys) == {"valid": 2, "insufficient_scope": 1, "malformed": 1}


def manager_counts(keys: APIKeyManager) -> dict[str, int]:
    wanted = ("valid", "insufficient_scope", "malformed")
    return {str(status): n for status, n in keys.counts.items() if status in wanted}


def test_sync_rotation_keeps_the_old_key_for_the_overlap(
    counted: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    keys = APIKeyManager(counted, ring, clock=clock)
    old = keys.create_sync("svc", name="deploy", scopes=["posts:*"], expires_in=86400 * 90)
    new = keys.rotate_sync(old.record.key_id, overlap=600)
    assert keys.verify_sync(old.token).ok
    assert keys.verify_sync(new.token).ok
    clock.advance(600)
    assert keys.verify_sync(old.token).status is APIKeyStatus.EXPIRED
    assert keys.verify_sync(new.token).ok
    with pytest.raises(BadToken):
        keys.rotate_sync(old.record.key_id)
    listed = keys.list_keys_sync("svc")
    assert [r.key_id for r in listed] == [old.record.key_id, new.record.key_id]
    assert listed[0].replaced_by == new.record.key_id


@pytest.mark.asyncio
async def test_keys_made_on_one_side_verify_on_the_other(
    both: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    keys = APIKeyManager(both, ring, clock=clock)
    made_async = await keys.create("alice", scopes=["posts:read"])
    made_sync = keys.create_sync("alice", scopes=["posts:write"])
    assert keys.verify_sync(made_async.token, required_scope="posts:read").ok
    assert (await keys.verify(made_sync.token, required_scope="posts:write")).ok
    assert await keys.revoke(made_sync.record.key_id)
    assert keys.verify_sync(made_sync.token).status is APIKeyStatus.REVOKED
    listed_async = [r.key_id for r in await keys.list_keys("alice")]
    listed_sync = [r.key_id for r in keys.list_keys_sync("alice")]
    assert listed_async == listed_sync
    assert set(listed_async) == {made_async.record.key_id, made_sync.record.key_id}


# --- per-owner listing ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_owner_listing_on_every_store(
    both: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    keys = APIKeyManager(both, ring, clock=clock)
    first = await keys.create("alice", name="laptop", scopes=["posts:read"])
    clock.advance(1)
    second = await keys.create("alice", name="ci", scopes=["posts:*"], expires_in=60)
    clock.advance(1)
    await keys.create("bob", name="other")
    assert await keys.list_keys("nobody") == []
    listed = await keys.list_keys("alice")
    assert [(r.name, r.owner) for r in listed] == [("laptop", "alice"), ("ci", "alice")]
    assert await keys.revoke(first.record.key_id)
    clock.advance(60)
    listed = await keys.list_keys("alice")  # revoked and expired keys stay listed, with status
    assert [r.status_at(clock.now()) for r in listed] == [
        APIKeyStatus.REVOKED,
        APIKeyStatus.EXPIRED,
    ]
    # The index lives under one hash-tagged key per owner (one Redis Cluster slot per owner).
    index_key = hash_tag("apikeys:owner", "alice")
    assert index_key == "apikeys:owner:{alice}"
    assert key_slot(index_key) == key_slot(hash_tag("sessions", "alice"))
    index = await both.inner.get(index_key)
    assert index is not None
    assert second.record.digest.encode() in index
    assert b"bst_" not in index  # digests, never keys
    # A record the store has dropped (retention over) is pruned from the index on listing.
    await both.inner.delete(f"apikeys:key:{second.record.digest}")
    both.reset()
    listed = await keys.list_keys("alice")
    assert [r.key_id for r in listed] == [first.record.key_id]
    assert both.calls == {"get": 4, "compare_and_set": 1}  # index, 2 records; prune: get + CAS
    both.reset()
    assert [r.key_id for r in keys.list_keys_sync("alice")] == [first.record.key_id]
    assert both.calls == {"get": 2}


@pytest.mark.asyncio
async def test_concurrent_creations_all_land_in_the_index(
    both: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    keys = APIKeyManager(both, ring, clock=clock)
    created = await asyncio.gather(*(keys.create("carol", name=f"k{n}") for n in range(8)))
    in_threads: list[str] = []

    def work() -> None:
        try:
            in_threads.append(keys.create_sync("carol").record.key_id)
        finally:
            close_thread_side(both)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = {r.key_id for r in await keys.list_keys("carol")}
    assert listed == {c.record.key_id for c in created} | set(in_threads)
    assert len(listed) == 12


def test_owner_ids_with_braces_get_their_own_index(
    counted: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    keys = APIKeyManager(counted, ring, clock=clock)
    odd = keys.create_sync("team}{x")
    plain = keys.create_sync("team")
    assert [r.key_id for r in keys.list_keys_sync("team}{x")] == [odd.record.key_id]
    assert [r.key_id for r in keys.list_keys_sync("team")] == [plain.record.key_id]
    assert counted.sync.get("apikeys:owner:{team%7D%7Bx}") is not None
    with pytest.raises(ConfigurationError) as caught:
        keys.list_keys_sync("")
    assert caught.value.setting == "owner"


# --- TOTP and recovery codes ------------------------------------------------------------------


def test_sync_totp_replay_and_recovery_codes(
    counted: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    totp = TOTPManager(counted, ring, issuer="Bastion Demo", clock=clock)
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(START)
    counted.reset()
    assert totp.verify_sync("alice", secret, code) is TOTPResult.ACCEPTED
    # the wrong-code budget's reservation, the step, and the budget cleared
    assert counted.calls == {"get": 2, "compare_and_set": 2, "delete": 1}
    assert totp.verify_sync("alice", secret, code) is TOTPResult.REPLAYED
    clock.advance(30)  # still inside the drift window: a replay all the same
    assert totp.verify_sync("alice", secret, code) is TOTPResult.REPLAYED
    counted.reset()
    assert totp.verify_sync("alice", secret, "12345") is TOTPResult.MALFORMED
    assert counted.total == 0
    codes = totp.new_recovery_codes_sync("alice")
    assert len(codes) == 10
    assert totp.remaining_recovery_codes_sync("alice") == 10
    assert totp.use_recovery_code_sync("alice", codes[0])
    assert not totp.use_recovery_code_sync("alice", codes[0])  # used twice: refused
    assert not totp.use_recovery_code_sync("bob", codes[1])
    assert totp.remaining_recovery_codes_sync("alice") == 9


@pytest.mark.asyncio
async def test_totp_state_is_shared_by_both_sides(
    both: CountingStore, ring: KeyRing, clock: FrozenClock
) -> None:
    totp = TOTPManager(both, ring, issuer="Bastion Demo", clock=clock)
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(START)
    assert await totp.verify("alice", secret, code) is TOTPResult.ACCEPTED
    assert totp.verify_sync("alice", secret, code) is TOTPResult.REPLAYED
    codes = totp.new_recovery_codes_sync("alice")
    assert await totp.use_recovery_code("alice", codes[2])
    assert not totp.use_recovery_code_sync("alice", codes[2])
    assert await totp.remaining_recovery_codes("alice") == 9
