"""A compare-and-set loop that keeps losing (issue 12, item 6's class: a bounded retry that
runs out) ends in ``StoreBusy``, a ``StoreUnavailable`` that every adapter answers with 503 and
``Retry-After``, never in a bare ``StoreError`` (a 500). A real memory store with a competing
writer that changes the record between each read and each compare-and-set forces it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyotp
import pytest

from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.engine.flows import (
    CAS_ATTEMPTS,
    CompareAndSet,
    Done,
    Follow,
    Get,
    Pause,
    Write,
    drive_async,
    drive_sync,
    update,
)
from bastion.engine.throttle import LoginThrottle
from bastion.engine.totp import TOTPManager
from bastion.errors import StoreBusy, StoreUnavailable
from bastion.stores.memory import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Generator

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
    manager = TOTPManager(store, KeyRing.generate(), issuer="bastion tests", clock=clock)
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(NOW)
    with pytest.raises(StoreBusy) as caught:
        await manager.verify("alice", secret, code)
    assert isinstance(caught.value, StoreUnavailable)


def _counted(flow: Generator[Any, Any, Any], seen: list[object]) -> Generator[Any, Any, Any]:
    """``flow``, recording every command it yields (the flow sees the same results)."""
    result = None
    try:
        while True:
            command = flow.send(result)
            seen.append(command)
            result = yield command
    except StopIteration as stop:
        return stop.value


def _bump(_key: str, raw: bytes | None) -> Write[int]:
    number = int(raw) if raw is not None and raw.isdigit() else 0  # a competitor's: restart
    return Write(str(number + 1).encode(), number + 1)


@pytest.mark.asyncio
async def test_update_gives_up_after_its_attempts_with_store_busy_and_backs_off_between() -> None:
    clock = FrozenClock(NOW)
    store = Outbid("counter", clock)
    seen: list[object] = []
    with pytest.raises(StoreBusy, match=r"the counter changed during each of 32 compare"):
        await drive_async(_counted(update("counter", _bump, what="the counter"), seen), store)
    assert store.rounds == CAS_ATTEMPTS == 32
    assert sum(type(c) is CompareAndSet for c in seen) == CAS_ATTEMPTS
    assert sum(type(c) is Get for c in seen) == CAS_ATTEMPTS
    assert sum(type(c) is Pause for c in seen) == CAS_ATTEMPTS - 1  # none after the last loss


def test_update_with_a_known_current_value_skips_the_first_read() -> None:
    store = MemoryStore()
    store.sync.set("counter", b"4")
    seen: list[object] = []
    assert drive_sync(_counted(update("counter", _bump, current=b"4"), seen), store.sync) == 5
    assert seen == [CompareAndSet("counter", b"4", b"5", None)]
    assert store.sync.get("counter") == b"5"


def test_update_with_a_stale_current_value_reads_again_and_writes_once() -> None:
    store = MemoryStore()
    store.sync.set("counter", b"7")
    seen: list[object] = []
    assert drive_sync(_counted(update("counter", _bump, current=b"4"), seen), store.sync) == 8
    assert [type(c) for c in seen] == [CompareAndSet, Pause, Get, CompareAndSet]
    assert store.sync.get("counter") == b"8"


def test_update_done_writes_nothing_and_follow_moves_to_the_other_key() -> None:
    store = MemoryStore()
    store.sync.set("old", b"->new")
    store.sync.set("new", b"1")

    def change(key: str, raw: bytes | None) -> Write[str] | Done[str] | Follow:
        if raw is not None and raw.startswith(b"->"):
            return Follow(raw[2:].decode())
        if raw == b"done":
            return Done("untouched")
        return Write(b"done", key, ttl=60.0)

    seen: list[object] = []
    assert drive_sync(_counted(update("old", change), seen), store.sync) == "new"
    assert [type(c) for c in seen] == [Get, Get, CompareAndSet]  # no pause: no race was lost
    assert store.sync.get("old") == b"->new"
    assert store.sync.get("new") == b"done"
    seen.clear()
    assert drive_sync(_counted(update("new", change), seen), store.sync) == "untouched"
    assert [type(c) for c in seen] == [Get]
