"""The store contract suite: the tests every :class:`~bastion.stores.base.Store` must pass.

Subclass :class:`StoreContract` in a test module and provide the fixtures it asks for::

    import pytest
    import pytest_asyncio
    from bastion.core.clock import FrozenClock
    from bastion.testing.store_contract import StoreContract

    @pytest.fixture
    def clock() -> FrozenClock:
        return FrozenClock()

    @pytest_asyncio.fixture
    async def store(clock):
        store = MyStore(clock=clock)
        yield store
        await store.aclose()

    @pytest.fixture
    def advance_time(clock):
        async def advance(seconds: float) -> None:
            clock.advance(seconds)
        return advance

    class TestMyStore(StoreContract):  # SharedStoreContract if processes share the store
        pass

Fixtures:

* ``store``: an async fixture yielding a fresh, empty store (and closing it afterwards).
* ``advance_time``: ``async (seconds: float) -> None`` moving the store's notion of time
  forward. The suite relies only on this: afterwards, a key whose TTL was at most ``seconds``
  is gone and a key whose TTL was longer is live. (A store on server time may implement it by
  shortening the remaining TTL of the test's keys.)
* ``store_url``: only for :class:`SharedStoreContract` (stores that several processes share,
  like SQLite and Redis); a URL that :func:`bastion.stores.open_store` opens, in another
  process, as the same store.

Reading several keys at once is a capability too (:class:`~bastion.stores.base.SupportsGetMany`):
its tests run when the store offers ``get_many`` and skip otherwise.

Rate limits are a capability of the protocol (:class:`~bastion.stores.base.SupportsRateLimit`):
the suite checks it too (:mod:`bastion.testing.ratelimit_contract`), unless the test class says
``rate_limits = False`` for a store that does not offer it.

The tests use pytest-asyncio (``@pytest.mark.asyncio``, strict mode). The multi-process test of
:class:`SharedStoreContract` is marked ``slow``.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import random
from collections.abc import Awaitable, Callable
from typing import ClassVar, TypeAlias

import pytest

from bastion.errors import StoreError
from bastion.stores.base import (
    MAX_GET_MANY,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Store,
    SupportsGetMany,
)
from bastion.testing._store_worker import cas_increment_worker, rate_limit_worker
from bastion.testing.atomic_contract import AtomicContract
from bastion.testing.ratelimit_contract import RateLimitContract

__all__ = ["AdvanceTime", "SharedStoreContract", "StoreContract"]


def _check(ok: bool, what: str = "a store contract check failed") -> None:
    """The contract's assertion. Raised explicitly, so that ``python -O`` (which strips
    ``assert``) cannot turn a failing store into a passing one; pytest shows the calling line."""
    __tracebackhide__ = True
    if not ok:
        raise AssertionError(what)


AdvanceTime: TypeAlias = Callable[[float], Awaitable[None]]
"""The type of the ``advance_time`` fixture."""

ODD_KEYS: tuple[str, ...] = (
    "plain",
    "Plain",
    "with space",
    " leading-space",
    "trailing-space ",
    "a:b",
    "a:b:",
    ":",
    "{x}",
    "{x}:y",
    "{}",
    "}{",
    "line\nbreak",
    "carriage\rreturn",
    "tab\there",
    "nul\x00byte",
    "nul",
    "\x00",
    "percent%20",
    "quote'\"`",
    "back\\slash",
    "*?[glob]",
    "emoji 🔐",
    "é",
    "e\u0301",  # the same glyph as "é", decomposed: a different key
    "x" * MAX_KEY_BYTES,
    "é" * (MAX_KEY_BYTES // 2),
)

BAD_TTLS: tuple[object, ...] = (
    0,
    0.0,
    -1,
    -0.5,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    "10",
    10**400,
    -(10**400),
)
"""Refused with a StoreError (never an OverflowError: 10**400 has no float)."""
BAD_VALUES: tuple[object, ...] = ("text", None, 1, 1.5, ["b"], object())


class StoreContract(RateLimitContract, AtomicContract):
    """Mixin of contract tests. Subclass it as ``Test...`` and provide the fixtures above.

    It includes the rate-limit capability's tests (:mod:`bastion.testing.ratelimit_contract`);
    a store without the capability sets ``rate_limits = False`` on its test class. It
    includes the atomic capabilities' tests too (:mod:`bastion.testing.atomic_contract`).
    """

    # -- basics -------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_is_a_store(self, store: Store) -> None:
        _check(isinstance(store, Store))

    @pytest.mark.asyncio
    async def test_get_missing_returns_none(self, store: Store) -> None:
        _check(await store.get("missing") is None)

    @pytest.mark.asyncio
    async def test_set_then_get(self, store: Store) -> None:
        await store.set("k", b"v")
        value = await store.get("k")
        _check(value == b"v")
        _check(type(value) is bytes)

    @pytest.mark.asyncio
    async def test_set_overwrites(self, store: Store) -> None:
        await store.set("k", b"first")
        await store.set("k", b"second")
        _check(await store.get("k") == b"second")

    @pytest.mark.asyncio
    async def test_keys_are_independent(self, store: Store) -> None:
        await store.set("one", b"1")
        await store.set("two", b"2")
        await store.delete("one")
        _check(await store.get("one") is None)
        _check(await store.get("two") == b"2")

    @pytest.mark.asyncio
    async def test_delete_says_whether_a_value_was_there(self, store: Store) -> None:
        await store.set("k", b"v")
        _check(await store.delete("k") is True)
        _check(await store.get("k") is None)
        _check(await store.delete("k") is False)
        _check(await store.delete("never-set") is False)

    # -- expiry -------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_ttl_expires(self, store: Store, advance_time: AdvanceTime) -> None:
        await store.set("k", b"v", ttl=100)
        await advance_time(100)
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_ttl_not_yet_expired(self, store: Store, advance_time: AdvanceTime) -> None:
        await store.set("k", b"v", ttl=100)
        await advance_time(50)
        _check(await store.get("k") == b"v")
        await advance_time(60)
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_fractional_ttl(self, store: Store, advance_time: AdvanceTime) -> None:
        await store.set("short", b"v", ttl=2.5)
        await store.set("long", b"v", ttl=200.5)
        await advance_time(3)
        _check(await store.get("short") is None)
        _check(await store.get("long") == b"v")

    @pytest.mark.asyncio
    async def test_key_without_ttl_does_not_expire(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        await store.set("k", b"v")
        await advance_time(10 * 365 * 24 * 3600)
        _check(await store.get("k") == b"v")

    @pytest.mark.asyncio
    async def test_set_without_ttl_clears_the_ttl(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        await store.set("k", b"old", ttl=100)
        await store.set("k", b"new")
        await advance_time(1000)
        _check(await store.get("k") == b"new")

    @pytest.mark.asyncio
    async def test_set_replaces_the_ttl(self, store: Store, advance_time: AdvanceTime) -> None:
        await store.set("k", b"old", ttl=1000)
        await store.set("k", b"new", ttl=100)
        await advance_time(200)
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_delete_of_an_expired_key_is_false(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        await store.set("k", b"v", ttl=100)
        await advance_time(150)
        _check(await store.delete("k") is False)

    @pytest.mark.asyncio
    async def test_set_after_expiry_starts_afresh(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        await store.set("k", b"old", ttl=100)
        await advance_time(150)
        await store.set("k", b"new")
        _check(await store.get("k") == b"new")

    # -- compare_and_set ----------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_cas_creates_when_absent(self, store: Store) -> None:
        _check(await store.compare_and_set("k", None, b"created") is True)
        _check(await store.get("k") == b"created")

    @pytest.mark.asyncio
    async def test_cas_create_refused_when_present(self, store: Store) -> None:
        await store.set("k", b"existing")
        await store.set("with-ttl", b"existing", ttl=100)
        _check(await store.compare_and_set("k", None, b"other") is False)
        _check(await store.compare_and_set("with-ttl", None, b"other") is False)
        _check(await store.get("k") == b"existing")
        _check(await store.get("with-ttl") == b"existing")

    @pytest.mark.asyncio
    async def test_cas_creates_when_existing_key_expired(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        await store.set("k", b"stale", ttl=100)
        await advance_time(150)
        _check(await store.compare_and_set("k", None, b"fresh") is True)
        _check(await store.get("k") == b"fresh")

    @pytest.mark.asyncio
    async def test_cas_swaps_with_the_right_expected(self, store: Store) -> None:
        await store.set("k", b"one")
        _check(await store.compare_and_set("k", b"one", b"two") is True)
        _check(await store.get("k") == b"two")

    @pytest.mark.asyncio
    async def test_cas_refuses_a_wrong_expected(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        await store.set("k", b"one", ttl=100)
        _check(await store.compare_and_set("k", b"two", b"three") is False)
        _check(await store.compare_and_set("k", b"on", b"three") is False)  # a prefix
        _check(await store.compare_and_set("k", b"one\x00", b"three") is False)
        _check(await store.compare_and_set("k", b"", b"three") is False)
        _check(await store.get("k") == b"one")
        await advance_time(150)  # a refused CAS leaves the TTL alone, too
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_cas_with_expected_refuses_a_missing_key(self, store: Store) -> None:
        _check(await store.compare_and_set("k", b"anything", b"v") is False)
        _check(await store.compare_and_set("k", b"", b"v") is False)
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_cas_with_expected_refuses_an_expired_key(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        await store.set("k", b"old", ttl=100)
        await advance_time(150)
        _check(await store.compare_and_set("k", b"old", b"new") is False)
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_cas_matches_an_empty_value(self, store: Store) -> None:
        await store.set("k", b"")
        _check(await store.compare_and_set("k", None, b"x") is False)
        _check(await store.compare_and_set("k", b"", b"x") is True)
        _check(await store.get("k") == b"x")

    @pytest.mark.asyncio
    async def test_cas_create_applies_the_ttl(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        _check(await store.compare_and_set("k", None, b"v", ttl=100) is True)
        await advance_time(50)
        _check(await store.get("k") == b"v")
        await advance_time(60)
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_cas_swap_applies_the_ttl(self, store: Store, advance_time: AdvanceTime) -> None:
        await store.set("k", b"one")
        _check(await store.compare_and_set("k", b"one", b"two", ttl=100) is True)
        await advance_time(150)
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_cas_swap_without_ttl_clears_the_ttl(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        await store.set("k", b"one", ttl=100)
        _check(await store.compare_and_set("k", b"one", b"two") is True)
        await advance_time(1000)
        _check(await store.get("k") == b"two")

    @pytest.mark.asyncio
    async def test_cas_has_one_winner_among_concurrent_tasks(self, store: Store) -> None:
        tasks = 50
        previous: bytes | None = None
        for round_ in range(5):
            values = [f"round-{round_}-task-{i}".encode() for i in range(tasks)]
            outcomes = await asyncio.gather(
                *(store.compare_and_set("race", previous, value) for value in values)
            )
            winners = [value for value, won in zip(values, outcomes, strict=True) if won]
            _check(len(winners) == 1, f"round {round_}: {len(winners)} winners")
            _check(await store.get("race") == winners[0])
            previous = winners[0]
        _check(previous is not None and previous.startswith(b"round-4-"))

    @pytest.mark.asyncio
    async def test_cas_increments_under_concurrent_tasks_lose_nothing(self, store: Store) -> None:
        await store.set("counter", b"0")

        async def increment() -> int:
            attempts = 0
            while True:
                attempts += 1
                current = await store.get("counter")
                if current is None:  # narrows the type too, which _check cannot
                    raise AssertionError("the counter vanished during the race")
                if await store.compare_and_set("counter", current, b"%d" % (int(current) + 1)):
                    return attempts

        attempts = await asyncio.gather(*(increment() for _ in range(20)))
        _check(await store.get("counter") == b"20")
        _check(len(attempts) == 20)

    # -- keys ---------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_odd_keys_are_distinct_and_round_trip(self, store: Store) -> None:
        _check(len(set(ODD_KEYS)) == len(ODD_KEYS))
        for index, key in enumerate(ODD_KEYS):
            await store.set(key, b"value-%d" % index)
        for index, key in enumerate(ODD_KEYS):
            _check(await store.get(key) == b"value-%d" % index, f"key {key!r}")
        for index, key in enumerate(ODD_KEYS):
            _check(await store.compare_and_set(key, b"value-%d" % index, b"cas") is True)
            _check(await store.delete(key) is True, f"key {key!r}")

    @pytest.mark.asyncio
    async def test_key_over_the_limit_is_refused(self, store: Store) -> None:
        for key in ("x" * (MAX_KEY_BYTES + 1), "é" * (MAX_KEY_BYTES // 2 + 1)):
            with pytest.raises(StoreError, match="limit"):
                await store.set(key, b"v")
            with pytest.raises(StoreError, match="limit"):
                await store.get(key)
            with pytest.raises(StoreError, match="limit"):
                await store.delete(key)
            with pytest.raises(StoreError, match="limit"):
                await store.compare_and_set(key, None, b"v")

    @pytest.mark.asyncio
    async def test_empty_key_is_refused(self, store: Store) -> None:
        with pytest.raises(StoreError, match="empty"):
            await store.set("", b"v")
        with pytest.raises(StoreError, match="empty"):
            await store.get("")
        with pytest.raises(StoreError, match="empty"):
            await store.delete("")
        with pytest.raises(StoreError, match="empty"):
            await store.compare_and_set("", None, b"v")

    @pytest.mark.asyncio
    async def test_non_text_key_is_refused(self, store: Store) -> None:
        for key in (b"bytes", 1, None, "\ud800"):
            with pytest.raises(StoreError):
                await store.set(key, b"v")  # type: ignore[arg-type]
            with pytest.raises(StoreError):
                await store.get(key)  # type: ignore[arg-type]

    # -- values -------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_empty_value_round_trips(self, store: Store) -> None:
        await store.set("k", b"")
        _check(await store.get("k") == b"")
        _check(await store.delete("k") is True)

    @pytest.mark.asyncio
    async def test_large_random_value_round_trips(self, store: Store) -> None:
        value = random.Random(1234).randbytes(1024 * 1024)  # noqa: S311 (test data, not a key)
        await store.set("big", value)
        _check(await store.get("big") == value)
        _check(await store.compare_and_set("big", value, value[::-1]) is True)
        _check(await store.get("big") == value[::-1])

    @pytest.mark.asyncio
    async def test_every_byte_round_trips(self, store: Store) -> None:
        value = bytes(range(256)) * 4
        await store.set("bytes", value)
        _check(await store.get("bytes") == value)
        await store.set("nul", b"\x00")
        _check(await store.get("nul") == b"\x00")
        await store.set("utf8-lookalike", "é".encode())
        _check(await store.get("utf8-lookalike") == b"\xc3\xa9")

    @pytest.mark.asyncio
    async def test_value_over_the_limit_is_refused(self, store: Store) -> None:
        too_big = bytes(MAX_VALUE_BYTES + 1)
        with pytest.raises(StoreError, match="limit"):
            await store.set("k", too_big)
        with pytest.raises(StoreError, match="limit"):
            await store.compare_and_set("k", None, too_big)
        _check(await store.get("k") is None)

    @pytest.mark.asyncio
    async def test_bad_value_type_is_refused(self, store: Store) -> None:
        for bad in BAD_VALUES:
            with pytest.raises(StoreError, match="bytes"):
                await store.set("k", bad)  # type: ignore[arg-type]
            with pytest.raises(StoreError, match="bytes"):
                await store.compare_and_set("k", None, bad)  # type: ignore[arg-type]
        with pytest.raises(StoreError, match="bytes"):
            await store.compare_and_set("k", "text", b"v")  # type: ignore[arg-type]
        _check(await store.get("k") is None)

    # -- TTLs ---------------------------------------------------------------------------------

    @pytest.mark.asyncio
    async def test_invalid_ttl_is_refused(self, store: Store) -> None:
        for ttl in BAD_TTLS:
            with pytest.raises(StoreError, match="ttl"):
                await store.set("k", b"v", ttl=ttl)  # type: ignore[arg-type]
            with pytest.raises(StoreError, match="ttl"):
                await store.compare_and_set("k", None, b"v", ttl=ttl)  # type: ignore[arg-type]
        _check(await store.get("k") is None)

    # -- get_many (SupportsGetMany; skipped for a store without it) ----------------------------

    @staticmethod
    def _many(store: Store) -> SupportsGetMany:
        if not isinstance(store, SupportsGetMany):
            pytest.skip("the store has no get_many (SupportsGetMany)")
        return store

    @pytest.mark.asyncio
    async def test_get_many_reads_each_key_in_order(self, store: Store) -> None:
        many = self._many(store)
        await store.set("{u}:a", b"1")
        await store.set("{u}:c", b"")
        found = await many.get_many(["{u}:c", "{u}:b", "{u}:a", "{u}:c"])
        _check(found == [b"", None, b"1", b""], f"get_many read {found!r}")
        _check(await many.get_many(("{u}:b",)) == [None])

    @pytest.mark.asyncio
    async def test_get_many_skips_expired_keys(
        self, store: Store, advance_time: AdvanceTime
    ) -> None:
        many = self._many(store)
        await store.set("{u}:short", b"s", ttl=1)
        await store.set("{u}:long", b"l", ttl=100)
        await advance_time(2)
        _check(await many.get_many(["{u}:short", "{u}:long"]) == [None, b"l"])

    @pytest.mark.asyncio
    async def test_get_many_round_trips_odd_keys(self, store: Store) -> None:
        many = self._many(store)
        keys = list(ODD_KEYS[: MAX_GET_MANY - 1])
        for index, key in enumerate(keys):
            await store.set(key, str(index).encode())
        found = await many.get_many(keys)
        _check(found == [str(index).encode() for index in range(len(keys))])

    @pytest.mark.asyncio
    async def test_get_many_refuses_bad_calls(self, store: Store) -> None:
        many = self._many(store)
        for bad in ([], ["k"] * (MAX_GET_MANY + 1), ["k", ""], ["k", b"k"], "k"):
            with pytest.raises(StoreError):
                await many.get_many(bad)  # type: ignore[arg-type]


def _race_processes(
    store_url: str, processes: int, increments: int, *, rate_limit: int | None = None
) -> int:
    """Start ``processes`` children that race CAS increments (or, with ``rate_limit``,
    ``increments`` rate-limit decisions each against that limit); return their total of
    successes.

    Blocks (the test runs it in a thread). Each child waits at a barrier after opening the
    store, so the increments really overlap.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results: multiprocessing.Queue[tuple[str, int, int]] = context.Queue()
    target: Callable[..., None] = cas_increment_worker
    options: dict[str, object] = {"key": "counter", "increments": increments}
    options["max_attempts"] = increments * 200
    if rate_limit is not None:
        target = rate_limit_worker
        options = {"key": "race-processes", "limit": rate_limit, "attempts": increments}
    children = [
        context.Process(
            target=target,
            args=(store_url,),
            kwargs={**options, "barrier": barrier, "results": results},
            daemon=True,
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    try:
        reports = [results.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=10)
            if child.is_alive():
                child.terminate()
                child.join(timeout=5)
        results.close()
        results.join_thread()
    errors = [status for status, _, _ in reports if status != "ok"]
    if errors:
        raise AssertionError(f"child processes failed: {errors}")
    return sum(won for _, won, _ in reports)


class SharedStoreContract(StoreContract):
    """The contract plus the multi-process test, for stores that processes share (SQLite, Redis).

    Needs the ``store_url`` fixture as well: a URL that :func:`bastion.stores.open_store` opens,
    in another process, as the same store.
    """

    process_count: ClassVar[int] = 4
    increments_per_process: ClassVar[int] = 25

    @pytest.mark.slow
    @pytest.mark.asyncio
    async def test_cas_is_atomic_across_processes(
        self, store: Store, request: pytest.FixtureRequest
    ) -> None:
        store_url: str = request.getfixturevalue("store_url")
        await store.set("counter", b"0")
        won = await asyncio.to_thread(
            _race_processes, store_url, self.process_count, self.increments_per_process
        )
        _check(won >= self.increments_per_process, f"only {won} increments succeeded")
        # Nothing lost (a success not counted) and nothing doubled (two winners of one round).
        _check(await store.get("counter") == str(won).encode())

    @pytest.mark.slow
    @pytest.mark.asyncio
    @pytest.mark.usefixtures("limits")  # the store's capability, or a skip
    async def test_rate_limit_is_exact_across_processes(
        self, request: pytest.FixtureRequest
    ) -> None:
        store_url: str = request.getfixturevalue("store_url")
        limit = self.process_count * self.increments_per_process // 2
        admitted = await asyncio.to_thread(
            _race_processes,
            store_url,
            self.process_count,
            self.increments_per_process,
            rate_limit=limit,
        )
        _check(admitted == limit, f"{admitted} decisions admitted across processes, not {limit}")
