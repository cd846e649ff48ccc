"""The login throttle under concurrency: an attempt is reserved on the store before the
password is checked, so N concurrent wrong guesses from one client check no more passwords
than N guesses in a row would (issue 11, item 2). Counted at the hasher: every real Argon2
verification is one call of ``CountingVerifier.check``."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pytest

from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.throttle import BackoffRule, ThrottleCounter, ThrottlePolicy
from bastion.engine.throttle import LoginOutcome, LoginThrottle
from bastion.passwords import TEST_ONLY_PROFILE, Argon2Profile, PasswordHasher
from bastion.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from bastion.stores.base import Store

ATTACKER = "198.51.100.7"
GUESSES = 60
POLICY = ThrottlePolicy(pair=BackoffRule(free_attempts=5))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


class CountingVerifier:
    """A real Argon2 hash and a count of the verifications actually run."""

    def __init__(self, profile: Argon2Profile = TEST_ONLY_PROFILE) -> None:
        self.hasher = PasswordHasher(profile)
        self.stored = self.hasher.hash("the right passphrase for this account")
        self.calls = 0
        self._lock = threading.Lock()

    def check(self, password: str) -> bool:
        with self._lock:
            self.calls += 1
        return self.hasher.verify(self.stored, password)

    async def acheck(self, password: str) -> bool:
        with self._lock:
            self.calls += 1
        return await self.hasher.averify(self.stored, password)


async def sequential_checks(throttle: LoginThrottle, username: str) -> int:
    """How many of GUESSES wrong passwords in a row are checked (the policy's allowance)."""
    verifier = CountingVerifier()
    for index in range(GUESSES):
        await throttle.attempt(username, ATTACKER, lambda i=index: verifier.acheck(f"wrong {i}"))
    return verifier.calls


@pytest.mark.asyncio
async def test_concurrent_wrong_guesses_check_no_more_than_the_policy_allows(
    any_store: Store, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(any_store, KeyRing.generate(), policy=POLICY, clock=clock)
    allowed = await sequential_checks(throttle, "someone-else")
    assert allowed == POLICY.pair.free_attempts + 1  # 5 free failures; the 6th starts the wait
    verifier = CountingVerifier()
    attempts = await asyncio.gather(
        *(
            throttle.attempt("alice", ATTACKER, lambda i=index: verifier.acheck(f"guess {i}"))
            for index in range(GUESSES)
        )
    )
    assert verifier.calls == allowed
    outcomes = [attempt.outcome for attempt in attempts]
    assert outcomes.count(LoginOutcome.INVALID) == allowed
    assert outcomes.count(LoginOutcome.THROTTLED) == GUESSES - allowed
    refused = [a.decision.counter for a in attempts if a.outcome is LoginOutcome.THROTTLED]
    assert set(refused) == {ThrottleCounter.PAIR}
    # Every checked guess was counted: the next attempt waits, even with the right password.
    right = await throttle.attempt("alice", ATTACKER, lambda: verifier.acheck("x"))
    assert right.outcome is LoginOutcome.THROTTLED
    assert verifier.calls == allowed


def test_concurrent_wrong_guesses_from_threads_check_no_more_than_allowed(
    any_store: Store, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(any_store, KeyRing.generate(), policy=POLICY, clock=clock)
    # A hash that takes a few milliseconds with the GIL released, so that the threads' reads,
    # checks and writes interleave as they do under a threaded WSGI server.
    verifier = CountingVerifier(Argon2Profile(time_cost=2, memory_cost=4096, parallelism=1))
    threads_count, per_thread = 12, GUESSES // 12
    barrier = threading.Barrier(threads_count)
    done = threading.Barrier(threads_count)
    outcomes: list[LoginOutcome] = []
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for index in range(per_thread):
                attempt = throttle.attempt_sync(
                    "alice", ATTACKER, lambda i=index: verifier.check(f"guess {worker}-{i}")
                )
                outcomes.append(attempt.outcome)
        except BaseException as exc:  # reported below, never lost in a thread
            errors.append(exc)
        finally:
            done.wait()  # close only when every thread is done (see the report note)
            if isinstance(any_store, SQLiteStore):
                any_store.sync.close()  # the thread's own connection

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(outcomes) == GUESSES
    assert verifier.calls == POLICY.pair.free_attempts + 1
    assert outcomes.count(LoginOutcome.INVALID) == verifier.calls


@pytest.mark.asyncio
async def test_a_right_password_refunds_its_reservation(
    any_store: Store, clock: FrozenClock
) -> None:
    # Twenty successful logins from one client leave the account-wide and client counters
    # where they were: the reservation is given back, so the owner never throttles themself.
    policy = ThrottlePolicy(
        account=BackoffRule(free_attempts=3), client=BackoffRule(free_attempts=3)
    )
    throttle = LoginThrottle(any_store, KeyRing.generate(), policy=policy, clock=clock)
    verifier = CountingVerifier()
    for _ in range(20):
        attempt = await throttle.attempt(
            "alice", ATTACKER, lambda: verifier.acheck("the right passphrase for this account")
        )
        assert attempt.ok
    assert verifier.calls == 20
    assert (await throttle.check("bob", ATTACKER)).allowed


@pytest.mark.asyncio
async def test_concurrent_right_and_wrong_passwords_from_many_accounts(
    any_store: Store, clock: FrozenClock
) -> None:
    # The client counter is shared by every account the client tries: concurrent guesses
    # over many accounts are bounded by it too (30 free failures, the 31st starts the wait).
    throttle = LoginThrottle(any_store, KeyRing.generate(), clock=clock)
    verifier = CountingVerifier()
    attempts = await asyncio.gather(
        *(
            throttle.attempt(f"user{index}", ATTACKER, lambda: verifier.acheck("wrong"))
            for index in range(GUESSES)
        )
    )
    assert verifier.calls == 31
    refused = {a.decision.counter for a in attempts if a.outcome is LoginOutcome.THROTTLED}
    assert refused == {ThrottleCounter.CLIENT}
