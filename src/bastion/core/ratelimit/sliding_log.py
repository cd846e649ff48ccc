"""The sliding log as a mutable object, for a store that keeps its states in this process.

:func:`~bastion.core.ratelimit.algorithms.sliding_log_step` is pure: it takes the log as a
tuple and returns a new one, so every request copies the whole log (linear in its length).
Stores that serialise the state (SQLite, Redis) pay that copy anyway; the memory store need
not. :func:`native_sliding_log_step` takes and returns a :class:`SlidingLog` that is changed in
place: a decision costs O(expired entries + 1) amortised, with the same decisions, remaining
counts and reset times as the pure step (a differential test drives both).

How the pure step's semantics are kept exactly:

* **A refusal changes nothing.** The pure step's refused state is never written, so the stored
  log keeps entries that the refusal saw as expired. The object keeps them too: the log is
  ``times[base:]`` (what the pure step would have stored) and a refusal only moves ``head``,
  the start of the live part; an admission commits it (``base = head``).
* **Time that goes backwards** (a clock stepped back) could revive entries a refusal skipped:
  a decision before the latest one seen goes back to ``base`` first.
* **A log out of time order** (an entry appended before the previous one, under a clock that
  went back) is decided by the pure step itself on a tuple of the log, then rebuilt: slow, and
  only while the log is out of order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from bastion.core.ratelimit.algorithms import Decision, Step, sliding_log_step
from bastion.core.ratelimit.rates import MICROS

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.ratelimit.algorithms import State
    from bastion.core.ratelimit.rates import Rate

__all__ = ["SlidingLog", "native_sliding_log_step"]

_COMPACT_AFTER: Final = 64
"""Committed-away entries tolerated at the front of the lists before they are cut off."""

_new: Callable[..., Any] = tuple.__new__
"""Builds the named tuples without their Python-level ``__new__`` (hot path)."""


class SlidingLog:
    """One key's sliding log: parallel lists of times (us) and costs, oldest first.

    ``times[base:]`` is the stored log (the pure step's state); ``times[head:]`` with
    ``head >= base`` is the part live at the latest decision, ``used`` the sum of its costs.
    ``latest`` is the time of the latest decision that moved ``head``; ``ordered`` says that
    ``times[base:]`` never decreases. Not thread-safe: the store holds its lock around
    :func:`native_sliding_log_step`.
    """

    __slots__ = ("base", "costs", "head", "latest", "ordered", "times", "used")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.costs: list[int] = []
        self.base = 0
        self.head = 0
        self.used = 0
        self.latest = 0
        self.ordered = True

    @classmethod
    def from_state(cls, state: State) -> SlidingLog:
        """The log of a pure state (flat ``(time, cost, ...)``; an odd last number ignored)."""
        log = cls()
        log._load(state)
        return log

    def state(self) -> State:
        """The stored log as the pure step's flat tuple (what SQLite and Redis would hold)."""
        flat: list[int] = []
        for pair in zip(self.times[self.base :], self.costs[self.base :], strict=True):
            flat.extend(pair)
        return tuple(flat)

    def _load(self, state: State) -> None:
        size = len(state) - (len(state) & 1)
        self.times = list(state[0:size:2])
        self.costs = list(state[1:size:2])
        self.base = self.head = 0
        self.used = sum(self.costs)
        self.ordered = all(a <= b for a, b in zip(self.times, self.times[1:], strict=False))
        self.latest = -(1 << 62)  # nothing skipped yet: any time may be decided

    def __repr__(self) -> str:
        return f"SlidingLog({self.state()!r})"


def native_sliding_log_step(  # noqa: PLR0912, PLR0915 (the hot path: no call per decision)
    state: SlidingLog | State | None, now_us: int, cost: int, rate: Rate
) -> Step:
    """:func:`~bastion.core.ratelimit.algorithms.sliding_log_step` on a :class:`SlidingLog`.

    ``state`` may also be a pure state (a tuple, converted once) or ``None`` (no state). The
    returned step's state is the log object itself, changed in place; write it back only when
    the decision admits, as with the pure step (a refusal's changes are not a new state).
    """
    if isinstance(state, SlidingLog):
        log = state
    else:
        log = SlidingLog()
        if state:
            log._load(state)
    times = log.times
    if not log.ordered or (times and now_us < times[-1]):
        return _slow(log, now_us, cost, rate)
    if now_us < log.latest:  # back in time: entries skipped by a later refusal may be live
        log.head = log.base
        log.used = sum(log.costs[log.base :])
    period, limit = rate.period_us, rate.limit
    cutoff = now_us - period
    costs = log.costs
    head = log.head
    used = log.used
    size = len(times)
    if head < size and times[head] <= cutoff:
        while head < size and times[head] <= cutoff:
            used -= costs[head]
            head += 1
        log.head = head
        log.used = used
        log.latest = now_us
    if used + cost <= limit:
        used += cost
        if head < size and times[-1] == now_us:  # one entry per instant
            costs[-1] += cost
        else:
            times.append(now_us)
            costs.append(cost)
        log.used = used
        log.latest = now_us
        if head >= _COMPACT_AFTER and head * 2 >= size:
            del times[:head]
            del costs[:head]
            head = 0
            log.head = 0
        log.base = head
        expires = now_us + period
        remaining = limit - used
        window = rate.window  # the reset time too: the entry just made is the newest
        decision: Decision = _new(Decision, (True, limit, remaining, window, 0.0, window))
        admitted: Step = _new(Step, (log, expires, decision))
        return admitted
    retry = 0
    need = cost if cost < limit else limit
    freed = 0
    for index in range(head, size):
        freed += costs[index]
        if used - freed + need <= limit:
            retry = times[index] + period - now_us
            break
    reset = times[-1] + period - now_us if head < size else 0
    remaining = limit - used
    decision = _new(
        Decision,
        (
            False,
            limit,
            remaining if remaining > 0 else 0,
            reset / MICROS if reset > 0 else 0.0,
            retry / MICROS if retry > 0 else 0.0,
            rate.window,
        ),
    )
    refused: Step = _new(Step, (log, times[-1] + period if head < size else now_us, decision))
    return refused


def _slow(log: SlidingLog, now_us: int, cost: int, rate: Rate) -> Step:
    """A log out of time order, or a time before its newest entry: the pure step decides."""
    result = sliding_log_step(log.state(), now_us, cost, rate)
    if result.decision.allowed:
        log._load(result.state)
    else:  # the stored log is unchanged; forget what a refusal skipped
        log.head = log.base
        log.used = sum(log.costs[log.base :])
        log.latest = -(1 << 62)
    made: Step = _new(Step, (log, result.expires_us, result.decision))
    return made
