"""MemoryStore: the contract suite, plus its bound, LRU order and thread safety."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from bastion.core.clock import FrozenClock
from bastion.errors import ConfigurationError, StoreError
from bastion.stores.memory import MemoryStore
from bastion.testing.store_contract import StoreContract

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bastion.testing.store_contract import AdvanceTime


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest_asyncio.fixture
async def store(clock: FrozenClock) -> AsyncIterator[MemoryStore]:
    store = MemoryStore(clock=clock)
    yield store
    await store.aclose()


@pytest.fixture
def advance_time(clock: FrozenClock) -> AdvanceTime:
    async def advance(seconds: float) -> None:
        clock.advance(seconds)

    return advance


class TestMemoryStoreContract(StoreContract):
    """The memory store is per process: the multi-process test does not apply."""


async def _present(store: MemoryStore, keys: list[str]) -> list[str]:
    return [key for key in keys if await store.get(key) is not None]


@pytest.mark.asyncio
async def test_entries_are_bounded() -> None:
    store = MemoryStore(max_entries=10, evictable_prefixes=("",))  # every key evictable
    keys = [f"k{i}" for i in range(100)]
    for key in keys:
        await store.set(key, b"v")
    assert await _present(store, keys) == keys[-10:]


@pytest.mark.asyncio
async def test_least_recently_used_is_evicted_first() -> None:
    store = MemoryStore(max_entries=3, evictable_prefixes=("",))  # every key evictable
    await store.set("a", b"1")
    await store.set("b", b"2")
    await store.set("c", b"3")
    assert await store.get("a") == b"1"  # a is now the most recently used
    await store.set("d", b"4")
    assert await store.get("b") is None
    assert await store.get("a") == b"1"
    await store.set("c", b"3'")  # a write counts as a use too
    await store.set("e", b"5")
    assert await store.get("d") is None
    assert await _present(store, ["a", "c", "e"]) == ["a", "c", "e"]


@pytest.mark.asyncio
async def test_expired_entries_go_before_live_ones_are_evicted(clock: FrozenClock) -> None:
    store = MemoryStore(max_entries=3, clock=clock)
    await store.set("old-but-permanent", b"1")
    await store.set("short", b"2", ttl=10)
    await store.set("shorter", b"3", ttl=5)
    clock.advance(20)
    await store.set("new", b"4")
    # The write dropped both expired entries, so nothing live had to be evicted.
    assert await store.get("old-but-permanent") == b"1"
    assert await store.get("new") == b"4"


@pytest.mark.asyncio
async def test_expired_entries_are_dropped_without_being_read(clock: FrozenClock) -> None:
    store = MemoryStore(clock=clock)
    for i in range(50):
        await store.set(f"temp{i}", b"v", ttl=10)
    await store.set("permanent", b"v")
    clock.advance(11)
    await store.set("trigger", b"v")
    assert len(store._data) == 2  # only the permanent entry and the trigger remain


@pytest.mark.asyncio
async def test_rewriting_a_key_with_a_longer_ttl_keeps_it(clock: FrozenClock) -> None:
    store = MemoryStore(clock=clock)
    await store.set("k", b"short", ttl=10)
    await store.set("k", b"long", ttl=100)
    clock.advance(20)
    await store.set("trigger", b"v")  # pops the stale heap item for the first write
    assert await store.get("k") == b"long"


@pytest.mark.asyncio
async def test_expiry_heap_stays_bounded_under_rewrites(clock: FrozenClock) -> None:
    store = MemoryStore(clock=clock)
    for i in range(5000):
        await store.set("k", b"%d" % i, ttl=1000)
    assert len(store._expiries) <= 2 * 1 + 64 + 1
    assert await store.get("k") == b"4999"


@pytest.mark.asyncio
async def test_purge_expired_counts_what_it_dropped(clock: FrozenClock) -> None:
    store = MemoryStore(clock=clock)
    await store.set("a", b"v", ttl=10)
    await store.set("b", b"v", ttl=10)
    await store.set("c", b"v", ttl=100)
    await store.set("d", b"v")
    clock.advance(50)
    assert await store.purge_expired() == 2
    assert await store.purge_expired() == 0
    assert await _present(store, ["a", "b", "c", "d"]) == ["c", "d"]


@pytest.mark.asyncio
async def test_closed_store_refuses_calls() -> None:
    store = MemoryStore()
    await store.set("k", b"v")
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.get("k")
    with pytest.raises(StoreError, match="closed"):
        await store.set("k", b"v")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10", None])
def test_max_entries_is_validated(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="max_entries") as info:
        MemoryStore(max_entries=bad)  # type: ignore[arg-type]
    assert info.value.setting == "max_entries"


def test_repr_shows_the_bound() -> None:
    assert repr(MemoryStore(max_entries=7)) == "MemoryStore(max_entries=7)"


def test_threads_share_one_store_safely() -> None:
    """Four threads, each with its own event loop, race CAS increments on one counter."""
    store = MemoryStore(max_entries=50, evictable_prefixes=("",))  # every key evictable
    threads_count, increments = 4, 300
    barrier = threading.Barrier(threads_count)
    failures: list[BaseException] = []

    async def work(thread: int) -> None:
        for i in range(increments):
            while True:
                current = await store.get("counter")
                new = b"%d" % (int(current or b"0") + 1)
                if await store.compare_and_set("counter", current, new):
                    break
            # Churn other keys so that eviction runs while other threads read and write.
            await store.set(f"t{thread}-{i}", b"x", ttl=1 + i % 3)

    def run(thread: int) -> None:
        try:
            barrier.wait(timeout=10)
            asyncio.run(work(thread))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures
    assert asyncio.run(store.get("counter")) == b"%d" % (threads_count * increments)
    assert len(store._data) <= 50
