"""The memory store's in-place sliding log decides exactly as the pure step.

Random request timelines (times mostly moving forward, sometimes standing still or stepping
back, costs from zero to past the limit) run through the pure
:func:`~bastion.core.ratelimit.sliding_log_step` under the memory store's storage rule (the
state is written only when a request is admitted, and read as no state once its expiry has
come) and through :func:`~bastion.core.ratelimit.sliding_log.native_sliding_log_step`, then
through :class:`~bastion.stores.memory.MemoryStore` itself against that reference. Every
decision (allowed, remaining, reset and retry times) and every stored log must be identical.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.clock import FrozenClock
from bastion.core.ratelimit import Decision, Rate, State, Strategy, sliding_log_step
from bastion.core.ratelimit.sliding_log import SlidingLog, native_sliding_log_step
from bastion.stores.memory import MemoryStore

_START = 1_700_000_000_000_000  # us

_moves = st.one_of(
    st.integers(0, 400_000),  # forward, by up to 0.4 s
    st.just(0),  # the same instant
    st.integers(-300_000, -1),  # the clock stepped back
    st.integers(1_000_000, 3_000_000),  # a pause past the period
)
_timeline = st.lists(st.tuples(_moves, st.integers(0, 5)), min_size=1, max_size=120)
_rates = st.builds(Rate, limit=st.integers(1, 6), period_us=st.integers(1_000, 1_500_000))


class _PureReference:
    """The pure step under the memory store's storage rule, for one key and one rate."""

    def __init__(self) -> None:
        self.state: State | None = None
        self.expires = 0

    def hit(self, now: int, cost: int, rate: Rate) -> Decision:
        result = sliding_log_step(self.state if self.expires > now else None, now, cost, rate)
        if result.decision.allowed:
            self.state, self.expires = result.state, result.expires_us
        return result.decision


@settings(max_examples=200, deadline=None)
@given(rate=_rates, timeline=_timeline)
def test_native_step_matches_the_pure_step(rate: Rate, timeline: list[tuple[int, int]]) -> None:
    pure = _PureReference()
    log: SlidingLog | None = None
    expires = 0
    now = _START
    for move, cost in timeline:
        now += move
        native = native_sliding_log_step(log if expires > now else None, now, cost, rate)
        expected = pure.hit(now, cost, rate)
        assert native.decision == expected
        if native.decision.allowed:
            log, expires = native.state, native.expires_us
            assert isinstance(log, SlidingLog)
            assert (log.state(), expires) == (pure.state, pure.expires)


@settings(max_examples=100, deadline=None)
@given(rate=_rates, timeline=_timeline, keys=st.lists(st.sampled_from("ab"), min_size=120))
def test_memory_store_matches_the_pure_step(
    rate: Rate, timeline: list[tuple[int, int]], keys: list[str]
) -> None:
    clock = FrozenClock(_START / 1_000_000)
    store = MemoryStore(clock=clock)
    references = {"a": _PureReference(), "b": _PureReference()}
    now = _START
    for (move, cost), key in zip(timeline, keys, strict=False):
        now += move
        clock.set(now / 1_000_000)
        (decision,) = store.hit_sync(key, Strategy.SLIDING_LOG, [rate], cost)
        assert decision == references[key].hit(now, cost, rate)


@settings(max_examples=100, deadline=None)
@given(timeline=_timeline, multi=st.lists(st.booleans(), min_size=120))
def test_single_and_multi_rate_calls_share_one_log(
    timeline: list[tuple[int, int]], multi: list[bool]
) -> None:
    """A key decided alone (the in-place log) and with a second rate (the pure path, which
    reads and writes tuples) sees one log whichever path wrote it last."""
    rate, other = Rate(limit=4, period_us=1_000_000), Rate(limit=50, period_us=60_000_000)
    clock = FrozenClock(_START / 1_000_000)
    store = MemoryStore(clock=clock)
    first, second = _PureReference(), _PureReference()
    now = _START
    for (move, cost), both in zip(timeline, multi, strict=False):
        now += move
        clock.set(now / 1_000_000)
        if both:
            decisions = store.hit_sync("k", Strategy.SLIDING_LOG, [rate, other], cost)
            look = [ref.state if ref.expires > now else None for ref in (first, second)]
            steps = [
                sliding_log_step(s, now, cost, r) for s, r in zip(look, (rate, other), strict=True)
            ]
            if all(step.decision.allowed for step in steps):
                expected = tuple(step.decision for step in steps)
                for ref, step in zip((first, second), steps, strict=True):
                    ref.state, ref.expires = step.state, step.expires_us
            else:
                expected = tuple(
                    sliding_log_step(s, now, 0, r).decision
                    if step.decision.allowed
                    else step.decision
                    for s, r, step in zip(look, (rate, other), steps, strict=True)
                )
            assert decisions == expected
        else:
            (decision,) = store.hit_sync("k", Strategy.SLIDING_LOG, [rate], cost)
            assert decision == first.hit(now, cost, rate)


def test_a_long_log_is_not_copied() -> None:
    """Entries stay in one list: admitting keeps the same object and expired entries are cut
    off the front, so the lists hold about one period's entries however long the key lives."""
    rate = Rate(limit=1_000_000, period_us=1_000_000)
    step = native_sliding_log_step(None, _START, 1, rate)
    log = step.state
    assert isinstance(log, SlidingLog)
    for tick in range(1, 5_000):
        step = native_sliding_log_step(log, _START + tick * 1_000, 1, rate)
        assert step.state is log
        assert step.decision.allowed
    assert step.decision.remaining == 1_000_000 - 1_000  # one period of 1 ms ticks is live
    assert len(log.times) <= 2_000 + 64
    assert log.state()[-2:] == (_START + 4_999_000, 1)


def test_a_clock_stepped_back_revives_what_a_refusal_skipped() -> None:
    """A refusal at 1.2 s skips the entry of 0 s as expired but stores nothing; at 0.9 s (the
    clock stepped back) that entry is live again, for the pure step and the in-place log."""
    rate = Rate(limit=2, period_us=1_000_000)
    pure = _PureReference()
    log: SlidingLog | None = None
    decisions = []
    for offset, cost in ((0, 1), (500_000, 1), (1_200_000, 2), (900_000, 1)):
        native = native_sliding_log_step(log, _START + offset, cost, rate)
        assert native.decision == pure.hit(_START + offset, cost, rate)
        if native.decision.allowed:
            log = native.state  # type: ignore[assignment]
        decisions.append((native.decision.allowed, native.decision.remaining))
    assert decisions == [(True, 1), (True, 0), (False, 1), (False, 0)]
