"""Rate-limit decisions without I/O: rates, algorithms as step functions, client keys, headers.

Every algorithm is a pure function ``step(state, now_us, cost, rate) -> Step``: it takes the
stored state of one key (or ``None``), the current time in whole microseconds and the cost of
the request, and returns the new state, when that state may be forgotten, and a
:class:`Decision`. Stores apply a step atomically (a lock, a SQLite transaction, a Lua script);
the algorithms themselves never see a clock, a lock or a socket.

Algorithms (:class:`Strategy`):

* ``fixed_window``: a counter per aligned window. Cheapest; admits up to twice the limit
  across a window boundary.
* ``sliding_window``: the current and previous window's counters, the previous one weighted by
  how much of it still overlaps the sliding window. Close to exact, constant memory.
* ``sliding_log``: a log of the admitted requests of the last period. Exact; memory grows with
  the limit (one entry per admitted instant), so keep it for small limits.
* ``token_bucket``: GCRA (the generic cell rate algorithm) with a burst of ``limit``. The state
  is the theoretical arrival time kept relative to the last update, as the bucket's level in
  units of ``1 / period_us`` tokens, so the numbers stay small and integral.

A request whose cost exceeds the limit is never admitted; its ``retry_after`` says when the
quota is next full, which is the best a client can do.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

from bastion.core.ratelimit.rates import MICROS, Rate, Strategy

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "STEP_FUNCTIONS",
    "Decision",
    "State",
    "Step",
    "apply_limits",
    "decode_state",
    "encode_state",
    "fixed_window_step",
    "gcra_step",
    "sliding_log_step",
    "sliding_window_step",
    "step",
]

State: TypeAlias = tuple[int, ...]
"""An algorithm's state for one key: a short tuple of integers (see each step function)."""


class Decision(NamedTuple):
    """The answer for one limit. Times are seconds; ``retry_after`` is 0 when allowed.

    ``remaining`` is what is left after this request; ``reset_after`` is when the quota is full
    again (the IETF ``t`` parameter); ``window`` the rate's period (the ``w`` parameter).
    A named tuple: immutable, and cheap to build on every request.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float
    window: float


class Step(NamedTuple):
    """What a step function returns: the new state, when it expires (us), the decision."""

    state: State
    expires_us: int
    decision: Decision


_new: Callable[..., Any] = tuple.__new__
"""Builds the named tuples below without their Python-level ``__new__`` (hot path)."""


def _decision(allowed: bool, rate: Rate, remaining: int, reset_us: int, retry_us: int) -> Decision:
    made: Decision = _new(
        Decision,
        (
            allowed,
            rate.limit,
            remaining if remaining > 0 else 0,
            reset_us / MICROS if reset_us > 0 else 0.0,
            0.0 if allowed or retry_us <= 0 else retry_us / MICROS,
            rate.window,
        ),
    )
    return made


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def fixed_window_step(state: State | None, now_us: int, cost: int, rate: Rate) -> Step:
    """Fixed window. State ``(window_index, count)``; windows aligned on ``period_us``."""
    period, limit = rate.period_us, rate.limit
    index = now_us // period
    count = state[1] if state is not None and state[0] == index else 0
    end = (index + 1) * period
    if count + cost <= limit:
        count += cost
        reset = (end - now_us) / MICROS if count else 0.0
        decision: Decision = _new(Decision, (True, limit, limit - count, reset, 0.0, rate.window))
        admitted: Step = _new(Step, ((index, count), end, decision))
        return admitted
    reset = (end - now_us) / MICROS if count else 0.0
    remaining = limit - count if count < limit else 0
    decision = _new(Decision, (False, limit, remaining, reset, reset, rate.window))
    refused: Step = _new(Step, ((index, count), end, decision))
    return refused


def sliding_window_step(state: State | None, now_us: int, cost: int, rate: Rate) -> Step:
    """Sliding-window counter. State ``(window_index, current, previous)``.

    The estimate is ``previous * (period - elapsed) / period + current``, compared after
    multiplying through by ``period`` so it stays an integer.
    """
    period, limit = rate.period_us, rate.limit
    index = now_us // period
    current = previous = 0
    if state is not None:
        if state[0] == index:
            current, previous = state[1], state[2]
        elif state[0] == index - 1:
            previous = state[1]
    elapsed = now_us - index * period
    left = period - elapsed
    used = previous * left + current * period
    capacity = limit * period
    need = cost * period
    if used + need <= capacity:
        current += cost
        remaining = (capacity - used - need) // period
        # current > 0 unless the cost is 0: the quota is full again a window after this one
        reset = left + period if current else (left if previous else 0)
        decision: Decision = _new(
            Decision, (True, limit, remaining, reset / MICROS, 0.0, rate.window)
        )
        admitted: Step = _new(Step, ((index, current, previous), (index + 2) * period, decision))
        return admitted
    reset = left + period if current else (left if previous else 0)
    retry = _sliding_retry(previous, current, cost, limit, period, elapsed)
    decision = _decision(False, rate, (capacity - used) // period, reset, retry)  # noqa: FBT003
    refused: Step = _new(Step, ((index, current, previous), (index + 2) * period, decision))
    return refused


def _sliding_retry(  # noqa: PLR0917 (private helper: the six numbers of one formula)
    previous: int, current: int, cost: int, limit: int, period: int, elapsed: int
) -> int:
    room = limit - current - cost
    if room >= 0 and previous > 0:
        # previous * (period - e) <= room * period, with e the elapsed time to wait for
        return max(1, period - (room * period) // previous - elapsed)
    wait = period - elapsed
    need = min(cost, limit)
    if current + need > limit:
        wait += period - ((limit - need) * period) // current
    return max(1, wait)


def sliding_log_step(state: State | None, now_us: int, cost: int, rate: Rate) -> Step:
    """Sliding log, exact. State: flat ``(time_us, cost, time_us, cost, ...)``, oldest first.

    The live part of the log is a slice of the state (the entries are oldest first), so the
    expired entries are skipped without rebuilding the log; a state whose times are out of
    order (written under another clock) is filtered entry by entry instead.
    """
    period, limit = rate.period_us, rate.limit
    cutoff = now_us - period
    log: State = ()
    if state:
        size = len(state) - (len(state) & 1)
        start = 0
        while start < size and state[start] <= cutoff:
            start += 2
        if start < size:
            log = state if start == 0 and size == len(state) else state[start:size]
            if min(log[::2]) <= cutoff:  # out of order: keep exactly the live entries
                log = tuple(
                    value
                    for i in range(0, size, 2)
                    if state[i] > cutoff
                    for value in (state[i], state[i + 1])
                )
    used = sum(log[1::2])
    allowed = used + cost <= limit
    if allowed:
        used += cost
        same = len(log) > 0 and log[-2] == now_us  # one entry per instant: the cost is added to it
        log = (*log[:-1], log[-1] + cost) if same else (*log, now_us, cost)
    retry = 0
    if not allowed:
        need = min(cost, limit)
        freed = 0
        for i in range(0, len(log), 2):
            freed += log[i + 1]
            if used - freed + need <= limit:
                retry = log[i] + period - now_us
                break
    reset = log[-2] + period - now_us if log else 0
    expires = log[-2] + period if log else now_us
    made: Step = _new(Step, (log, expires, _decision(allowed, rate, limit - used, reset, retry)))
    return made


def gcra_step(state: State | None, now_us: int, cost: int, rate: Rate) -> Step:
    """Token bucket as GCRA. State ``(level, updated_us)``; ``level`` in ``1/period_us`` tokens.

    The level drains by ``limit`` per microsecond; a request adds ``cost * period_us``; the
    bucket holds ``limit * period_us``. (GCRA's theoretical arrival time is
    ``updated_us + level / limit``.)
    """
    period, limit = rate.period_us, rate.limit
    capacity = limit * period
    level = 0
    if state is not None:
        level = state[0]
        elapsed = now_us - state[1]
        if elapsed > 0:
            level -= elapsed * limit
            if level < 0:  # noqa: PLR1730 (hot path: cheaper than a call to max)
                level = 0
    need = cost * period
    if level + need <= capacity:
        level += need
        reset = -(-level // limit)
        remaining = (capacity - level) // period
        decision: Decision = _new(
            Decision, (True, limit, remaining, reset / MICROS, 0.0, rate.window)
        )
        admitted: Step = _new(Step, ((level, now_us), now_us + reset, decision))
        return admitted
    retry = _ceil_div(level + min(cost, limit) * period - capacity, limit)
    reset = _ceil_div(level, limit)
    decision = _decision(False, rate, (capacity - level) // period, reset, retry)  # noqa: FBT003
    refused: Step = _new(Step, ((level, now_us), now_us + reset, decision))
    return refused


_STEPS: Final[dict[Strategy, Callable[[State | None, int, int, Rate], Step]]] = {
    Strategy.FIXED_WINDOW: fixed_window_step,
    Strategy.SLIDING_WINDOW: sliding_window_step,
    Strategy.SLIDING_LOG: sliding_log_step,
    Strategy.TOKEN_BUCKET: gcra_step,
}

STEP_FUNCTIONS: Final[Mapping[Strategy, Callable[[State | None, int, int, Rate], Step]]] = (
    MappingProxyType(_STEPS)
)
"""Each strategy's step function, for callers that know their states are well formed (they
wrote them with the same function): :func:`step` without the shape check."""


_SHAPES: Final = {
    Strategy.FIXED_WINDOW: 2,
    Strategy.SLIDING_WINDOW: 3,
    Strategy.SLIDING_LOG: -1,  # any even length
    Strategy.TOKEN_BUCKET: 2,
}


def step(strategy: Strategy, state: State | None, now_us: int, cost: int, rate: Rate) -> Step:
    """Apply ``strategy``'s step function. A state of the wrong shape counts as no state."""
    if state is not None:
        shape = _SHAPES[strategy]
        if len(state) != shape and (shape != -1 or len(state) % 2):
            state = None
    return _STEPS[strategy](state, now_us, cost, rate)


def apply_limits(
    strategy: Strategy,
    states: Sequence[State | None],
    now_us: int,
    cost: int,
    rates: Sequence[Rate],
) -> tuple[tuple[Step, ...] | None, tuple[Decision, ...]]:
    """Step every limit of a rule: all or nothing.

    Returns the steps to write when every limit admits the request, else ``None`` (nothing is
    consumed) and decisions where the limits that would have admitted report their quota
    untouched (a zero-cost look).
    """
    if len(rates) == 1:  # the common case, without the generator machinery
        only = step(strategy, states[0], now_us, cost, rates[0])
        if only.decision.allowed:
            return (only,), (only.decision,)
        return None, (only.decision,)
    steps = tuple(
        step(strategy, state, now_us, cost, rate) for state, rate in zip(states, rates, strict=True)
    )
    if all(result.decision.allowed for result in steps):
        return steps, tuple(result.decision for result in steps)
    decisions = tuple(
        step(strategy, state, now_us, 0, rate).decision
        if result.decision.allowed
        else result.decision
        for state, rate, result in zip(states, rates, steps, strict=True)
    )
    return None, decisions


def encode_state(state: State) -> str:
    """A state as ASCII text (``"1,2,3"``): the form the SQLite and Redis stores keep."""
    return ",".join(map(str, state))


def decode_state(text: str | bytes | None) -> State | None:
    """The inverse of :func:`encode_state`; ``None`` for missing or unreadable text.

    An unreadable state (written by something else) is treated as no state: the key starts
    over rather than failing every request.
    """
    if text is None:
        return None
    raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    if not raw:
        return ()
    try:
        return tuple(int(part) for part in raw.split(","))
    except ValueError:
        return None
