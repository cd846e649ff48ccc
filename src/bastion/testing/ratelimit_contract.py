"""The rate-limit part of the store contract (:class:`~bastion.stores.base.SupportsRateLimit`).

:class:`~bastion.testing.store_contract.StoreContract` includes these tests, so a store that
offers the capability proves it with the same ``store`` fixture as the key-value operations. A
store without the capability sets ``rate_limits = False`` on its test class, and the tests are
skipped with that reason.

The tests need no time to pass (a store may decide on its server's clock): every limit is per
day or longer, so the few milliseconds a test takes never reach a window's end. What they
check, for every strategy: the count is exact under concurrent tasks; the rates of one call are
all-or-nothing and a refusal charges nothing; the answers are those of the Python step functions
in :mod:`bastion.core.ratelimit`; keys, strategies and rates are independent; ``hit`` and
``hit_sync`` share the counts.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from bastion.core.ratelimit import Decision, Rate, State, Strategy, micros, step
from bastion.stores.base import Store, SupportsRateLimit

__all__ = ["RateLimitContract"]

DAY: float = 86_400.0
STRATEGIES: tuple[Strategy, ...] = tuple(Strategy)
_NOW: float = 1_700_000_000.0 + DAY / 2
"""Where the expected answers are computed: mid-window, as any short test is."""


def _check(ok: bool, what: str = "a rate-limit contract check failed") -> None:
    __tracebackhide__ = True
    if not ok:
        raise AssertionError(what)


def _limiter(store: Store) -> SupportsRateLimit:
    __tracebackhide__ = True
    _check(
        isinstance(store, SupportsRateLimit),
        f"{store!r} lacks hit, hit_sync or nonblocking of SupportsRateLimit; set "
        "rate_limits = False on the test class if the store does not offer rate limits",
    )
    return store  # type: ignore[return-value]  # checked just above


def _shape(decisions: tuple[Decision, ...]) -> list[tuple[bool, int, int]]:
    """What no clock can change in a short test: admitted, limit, remaining."""
    return [(d.allowed, d.limit, d.remaining) for d in decisions]


class RateLimitContract:
    """Mixin of the rate-limit contract tests (part of ``StoreContract``)."""

    rate_limits: ClassVar[bool] = True
    """Whether the store offers :class:`~bastion.stores.base.SupportsRateLimit`."""

    concurrent_tasks: ClassVar[int] = 50
    attempts_per_task: ClassVar[int] = 6

    @pytest.fixture
    def limits(self, store: Store) -> SupportsRateLimit:
        if not self.rate_limits:
            pytest.skip("the store does not offer rate limits (rate_limits = False)")
        return _limiter(store)

    @pytest.mark.asyncio
    async def test_rate_limit_capability_is_declared(self, limits: SupportsRateLimit) -> None:
        _check(isinstance(limits.nonblocking, bool), "nonblocking must be a bool")

    @pytest.mark.asyncio
    @pytest.mark.parametrize("strategy", STRATEGIES)
    async def test_rate_limit_is_exact_under_concurrent_tasks(
        self, limits: SupportsRateLimit, strategy: Strategy
    ) -> None:
        rate = Rate.per(20, DAY)
        start = asyncio.Event()

        async def work() -> int:
            await start.wait()
            admitted = 0
            for _ in range(self.attempts_per_task):
                admitted += (await limits.hit("race", strategy, [rate]))[0].allowed
            return admitted

        tasks = [asyncio.create_task(work()) for _ in range(self.concurrent_tasks)]
        await asyncio.sleep(0)
        start.set()
        admitted = sum(await asyncio.gather(*tasks))
        attempts = self.concurrent_tasks * self.attempts_per_task
        _check(admitted == 20, f"{admitted} of {attempts} attempts admitted, not 20")

    @pytest.mark.asyncio
    @pytest.mark.parametrize("strategy", STRATEGIES)
    async def test_rate_limit_answers_as_the_step_functions(
        self, limits: SupportsRateLimit, strategy: Strategy
    ) -> None:
        rates = [Rate.per(3, DAY), Rate.per(5, 10 * DAY)]
        states: list[State | None] = [None, None]
        now = micros(_NOW)
        for cost in (1, 2, 1, 3, 0, 1, 2):
            steps = [step(strategy, s, now, cost, r) for s, r in zip(states, rates, strict=True)]
            admitted = all(s.decision.allowed for s in steps)
            expected = [
                s.decision
                if admitted or not s.decision.allowed
                else step(strategy, states[i], now, 0, rates[i]).decision
                for i, s in enumerate(steps)
            ]
            if admitted:
                states = [s.state for s in steps]
            got = await limits.hit("user-1", strategy, rates, cost)
            _check(_shape(got) == _shape(tuple(expected)), f"cost {cost}: {got} != {expected}")
            for decision, rate in zip(got, rates, strict=True):
                _check(decision.window == rate.period_us / 1_000_000, f"{decision}")
                if not decision.allowed:
                    _check(decision.retry_after > 0, f"a refusal must say when: {decision}")

    @pytest.mark.asyncio
    @pytest.mark.parametrize("strategy", STRATEGIES)
    async def test_rate_limit_rates_are_all_or_nothing(
        self, limits: SupportsRateLimit, strategy: Strategy
    ) -> None:
        rates = [Rate.per(10, DAY), Rate.per(3, 10 * DAY)]
        for _ in range(3):
            _check(all(d.allowed for d in await limits.hit("k", strategy, rates)))
        first, second = await limits.hit("k", strategy, rates)
        # The refusal by the longer limit does not charge the shorter one.
        _check((first.allowed, first.remaining) == (True, 7), f"{first}")
        _check((second.allowed, second.remaining) == (False, 0), f"{second}")
        again, _ = await limits.hit("k", strategy, rates)
        _check(again.remaining == 7, f"a refused call charged the other limit: {again}")

    @pytest.mark.asyncio
    @pytest.mark.parametrize("strategy", STRATEGIES)
    async def test_rate_limit_refusal_charges_nothing(
        self, limits: SupportsRateLimit, strategy: Strategy
    ) -> None:
        rate = Rate.per(3, DAY)
        _check((await limits.hit("k", strategy, [rate], 2))[0].allowed)
        refused = (await limits.hit("k", strategy, [rate], 2))[0]
        _check(not refused.allowed and refused.remaining == 1, f"{refused}")
        _check((await limits.hit("k", strategy, [rate], 1))[0].allowed)
        _check(not (await limits.hit("k", strategy, [rate], 1))[0].allowed)

    @pytest.mark.asyncio
    async def test_rate_limit_cost_zero_peeks(self, limits: SupportsRateLimit) -> None:
        rate = Rate.per(5, DAY)
        await limits.hit("k", Strategy.FIXED_WINDOW, [rate], 2)
        for _ in range(3):
            peek = (await limits.hit("k", Strategy.FIXED_WINDOW, [rate], 0))[0]
            _check(peek.allowed and peek.remaining == 3, f"{peek}")

    @pytest.mark.asyncio
    async def test_rate_limit_keys_strategies_and_rates_are_independent(
        self, limits: SupportsRateLimit
    ) -> None:
        rate = Rate.per(2, DAY)
        for _ in range(2):
            await limits.hit("a", Strategy.FIXED_WINDOW, [rate])
        _check(not (await limits.hit("a", Strategy.FIXED_WINDOW, [rate]))[0].allowed)
        _check((await limits.hit("b", Strategy.FIXED_WINDOW, [rate]))[0].remaining == 1)
        _check((await limits.hit("a", Strategy.TOKEN_BUCKET, [rate]))[0].remaining == 1)
        other = Rate.per(3, DAY)
        _check((await limits.hit("a", Strategy.FIXED_WINDOW, [other]))[0].remaining == 2)

    @pytest.mark.asyncio
    async def test_rate_limit_odd_keys_are_distinct(self, limits: SupportsRateLimit) -> None:
        rate = Rate.per(1, DAY)
        keys = ("a:b", "a", "{x}", "{x}:y", "}{", "line\nbreak", "nul\x00byte", "é", "e\u0301")
        for key in keys:
            _check((await limits.hit(key, Strategy.FIXED_WINDOW, [rate]))[0].allowed, repr(key))
        for key in keys:
            _check(not (await limits.hit(key, Strategy.FIXED_WINDOW, [rate]))[0].allowed)

    @pytest.mark.asyncio
    async def test_rate_limit_sync_and_async_share_the_counts(
        self, limits: SupportsRateLimit
    ) -> None:
        rate = Rate.per(3, DAY)
        _check((await limits.hit("k", Strategy.SLIDING_WINDOW, [rate]))[0].remaining == 2)
        _check(limits.hit_sync("k", Strategy.SLIDING_WINDOW, [rate])[0].remaining == 1)
        _check((await limits.hit("k", Strategy.SLIDING_WINDOW, [rate]))[0].remaining == 0)
        _check(not limits.hit_sync("k", Strategy.SLIDING_WINDOW, [rate])[0].allowed)
