"""A compare-and-set loop that keeps losing (issue 12, item 6's class: a bounded retry that
runs out) ends in ``StoreBusy``, a ``StoreUnavailable`` that every adapter answers with 503 and
``Retry-After``, never in a bare ``StoreError`` (a 500). A real memory store with a competing
writer that changes the record between each read and each compare-and-set forces it."""

from __future__ import annotations

import pyotp
import pytest

from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.engine.throttle import LoginThrottle
from bastion.engine.totp import TotpManager
from bastion.errors import StoreBusy, StoreUnavailable
from bastion.stores.memory import MemoryStore

NOW = 1_800_000_000.0


class Outbid(MemoryStore):
    """Every compare-and-set on a key containing ``marker`` finds the record just rewritten by
    another writer, so it fails, as it must."""

    def __init__(self, marker: str, clock: FrozenClock) -> None:
        super().__init__(clock=clock)
        self.marker = marker
        self.rounds = 0

    async def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        if self.marker in key:
            self.rounds += 1
            await super().set(key, b"competitor-%d" % self.rounds, ttl)
        return await super().compare_and_set(key, expected, value, ttl)


async def _wrong(_: object = None) -> bool:
    return False


@pytest.mark.asyncio
async def test_a_throttle_counter_that_keeps_changing_is_store_busy() -> None:
    clock = FrozenClock(NOW)
    store = Outbid("throttle:", clock)
    throttle = LoginThrottle(store, KeyRing.generate(), clock=clock)
    with pytest.raises(StoreBusy) as caught:
        await throttle.attempt("alice", "203.0.113.9", _wrong)
    assert isinstance(caught.value, StoreUnavailable)
    assert store.rounds >= 2  # it retried (with backoff) before giving up


@pytest.mark.asyncio
async def test_a_totp_step_that_keeps_changing_is_store_busy() -> None:
    clock = FrozenClock(NOW)
    store = Outbid("totp:", clock)
    manager = TotpManager(store, KeyRing.generate(), issuer="bastion tests", clock=clock)
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(NOW)
    with pytest.raises(StoreBusy) as caught:
        await manager.verify("alice", secret, code)
    assert isinstance(caught.value, StoreUnavailable)
