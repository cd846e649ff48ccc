"""Rate-limit decisions without I/O: rates, algorithms as step functions, client keys, headers.

Every algorithm is a pure function ``step(state, now_us, cost, rate) -> Step``: it takes the
stored state of one key (or ``None``), the current time in whole microseconds and the cost of
the request, and returns the new state, when that state may be forgotten, and a
:class:`Decision`. Stores apply a step atomically (a lock, a SQLite transaction, a Lua script);
the algorithms themselves never see a clock, a lock or a socket.

Exact arithmetic. Times are whole microseconds and every quantity is an integer, so a limit of
100 admits exactly 100 requests at the boundary, never 99 or 101 through float rounding. The
Redis scripts mirror these functions in Lua, whose numbers are IEEE doubles: exact for integers
up to 2**53. :class:`Rate` therefore refuses a ``limit * period`` (in microseconds) above
:data:`MAX_SCALED`, which still allows, for example, 100,000 per day.

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

import enum
import logging
import math
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

from bastion.core.client import TrustedProxies
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "MAX_SCALED",
    "MICROS",
    "STEP_FUNCTIONS",
    "ClientIP",
    "Decision",
    "Rate",
    "State",
    "Step",
    "Strategy",
    "apply_limits",
    "check_policy_name",
    "decode_state",
    "encode_state",
    "fixed_window_step",
    "gcra_step",
    "legacy_headers",
    "micros",
    "parse_rate",
    "parse_rates",
    "policy_header",
    "ratelimit_header",
    "retry_after_header",
    "sliding_log_step",
    "sliding_window_step",
    "step",
    "tightest",
]

logger = logging.getLogger("bastion.security.ratelimit")

MICROS: Final = 1_000_000
"""Microseconds per second: the unit of time inside the algorithms."""

MAX_SCALED: Final = 2**53
"""Largest ``limit * period_us`` accepted: integers stay exact in Lua's doubles below it."""

State: TypeAlias = tuple[int, ...]
"""An algorithm's state for one key: a short tuple of integers (see each step function)."""


class Strategy(enum.StrEnum):
    """The algorithm a limit counts with. See the module docstring for the trade-offs."""

    FIXED_WINDOW = "fixed_window"
    SLIDING_WINDOW = "sliding_window"
    SLIDING_LOG = "sliding_log"
    TOKEN_BUCKET = "token_bucket"  # noqa: S105 (an algorithm name, not a password)

    @classmethod
    def coerce(cls, value: Strategy | str) -> Strategy:
        """Accept a member or its value (and ``"gcra"`` for ``token_bucket``)."""
        if isinstance(value, Strategy):
            return value
        text = str(value).strip().lower().replace("-", "_")
        if text == "gcra":
            return cls.TOKEN_BUCKET
        try:
            return cls(text)
        except ValueError:
            choices = ", ".join(member.value for member in cls)
            raise ConfigurationError(
                f"unknown rate-limit strategy {value!r}; choose one of {choices}",
                setting="strategy",
            ) from None


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` units of cost per ``period_us`` microseconds. Build with :func:`parse_rate`
    (``"10/minute"``) or :meth:`per` (``Rate.per(10, 60)``)."""

    limit: int
    period_us: int
    window: float = field(init=False, repr=False, compare=False)
    """The period in seconds (the IETF ``w``), computed once."""

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ConfigurationError(
                f"a rate limit must be a whole number >= 1, got {self.limit!r}", setting="rate"
            )
        if (
            isinstance(self.period_us, bool)
            or not isinstance(self.period_us, int)
            or self.period_us < 1000
        ):
            raise ConfigurationError(
                f"a rate period must be at least 1 ms (1000 us), got {self.period_us!r} us",
                setting="rate",
            )
        if self.limit * self.period_us > MAX_SCALED:
            raise ConfigurationError(
                f"rate {self.limit}/{self.period}s is too fine: limit * period in microseconds "
                f"must stay below 2**53; use a lower limit or a shorter period",
                setting="rate",
            )
        object.__setattr__(self, "window", self.period_us / MICROS)

    @classmethod
    def per(cls, limit: int, seconds: float) -> Rate:
        """``limit`` per ``seconds`` (rounded to the microsecond)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ConfigurationError(
                f"a rate window must be a number of seconds, got {seconds!r}", setting="window"
            )
        if not math.isfinite(seconds) or seconds <= 0:
            raise ConfigurationError(
                f"a rate window must be a finite number of seconds > 0, got {seconds!r}",
                setting="window",
            )
        return cls(limit, round(seconds * MICROS))

    @property
    def period(self) -> float:
        """The period in seconds."""
        return self.period_us / MICROS

    def __str__(self) -> str:
        seconds = self.period_us / MICROS
        text = str(int(seconds)) if seconds == int(seconds) else repr(seconds)
        return f"{self.limit}/{text}s"


_UNITS: Final = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_RATE: Final = re.compile(
    r"\s*(\d{1,12})\s*(?:/|\bper\b)\s*(\d{1,9}(?:\.\d{1,6})?)?\s*([a-z]+)\s*", re.ASCII
)


def parse_rate(text: str) -> Rate:
    """Parse one rate: ``"10/minute"``, ``"10 per minute"``, ``"100/5m"``, ``"5/30 seconds"``."""
    if not isinstance(text, str):
        raise ConfigurationError(
            f"a rate must be text like '10/minute', got {type(text).__name__}", setting="rate"
        )
    match = _RATE.fullmatch(text.lower())
    unit = None if match is None else _UNITS.get(match.group(3))
    if match is None or unit is None:
        raise ConfigurationError(
            f"cannot parse rate {text[:64]!r}; write it as 'N/unit' or 'N/M unit' with a unit "
            "of second, minute, hour or day (for example '10/minute' or '100/5 minutes')",
            setting="rate",
        )
    amount = float(match.group(2)) if match.group(2) else 1.0
    if amount <= 0:
        raise ConfigurationError(f"rate {text!r} has a zero period", setting="rate")
    return Rate(int(match.group(1)), round(amount * unit * MICROS))


def parse_rates(value: str | Rate | Iterable[str | Rate]) -> tuple[Rate, ...]:
    """Parse several rates: ``"10/second; 1000/day"`` or a sequence of texts and rates."""
    if isinstance(value, Rate):
        return (value,)
    parts: list[str | Rate] = (
        [part for part in value.split(";") if part.strip()]
        if isinstance(value, str)
        else list(value)
    )
    rates = tuple(part if isinstance(part, Rate) else parse_rate(part) for part in parts)
    if not rates:
        raise ConfigurationError(
            "no rate given; write at least one, like '10/minute'", setting="rate"
        )
    if len(set(rates)) != len(rates):
        raise ConfigurationError(f"rates {value!r} repeat a rate; give each once", setting="rate")
    return rates


def micros(seconds: float) -> int:
    """A clock reading (Unix seconds) as whole microseconds."""
    return round(seconds * MICROS)


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
    return Decision(
        allowed,
        rate.limit,
        remaining if remaining > 0 else 0,
        reset_us / MICROS if reset_us > 0 else 0.0,
        0.0 if allowed or retry_us <= 0 else retry_us / MICROS,
        rate.window,
    )


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
    decision = Decision(False, limit, remaining, reset, reset, rate.window)  # noqa: FBT003
    return Step((index, count), end, decision)


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
    return Step((index, current, previous), (index + 2) * period, decision)


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
    """Sliding log, exact. State: flat ``(time_us, cost, time_us, cost, ...)``, oldest first."""
    period, limit = rate.period_us, rate.limit
    cutoff = now_us - period
    log: list[int] = []
    used = 0
    if state is not None:
        for i in range(0, len(state) - 1, 2):
            if state[i] > cutoff:
                log += (state[i], state[i + 1])
                used += state[i + 1]
    allowed = used + cost <= limit
    if allowed:
        used += cost
        if log and log[-2] == now_us:
            log[-1] += cost
        else:
            log += (now_us, cost)
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
    return Step(tuple(log), expires, _decision(allowed, rate, limit - used, reset, retry))


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
    return Step((level, now_us), now_us + reset, decision)


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


ClientIP = TrustedProxies
"""The old name of :class:`~bastion.core.client.TrustedProxies`, kept while callers move."""


# -- headers ----------------------------------------------------------------------------------

_POLICY_NAME: Final = re.compile(r"[A-Za-z0-9_.:/+*-]{1,64}", re.ASCII)


def check_policy_name(name: str) -> str:
    """A policy name must be a short token-like string (it is quoted into headers)."""
    if not isinstance(name, str) or _POLICY_NAME.fullmatch(name) is None:
        raise ConfigurationError(
            f"rate-limit policy name {name!r} must be 1-64 characters of letters, digits and "
            "_ . : / + * -",
            setting="name",
        )
    return name


def policy_header(names: Sequence[str], rates: Sequence[Rate]) -> str:
    """``RateLimit-Policy``: ``"name";q=100;w=60`` for each limit. Static: render it once."""
    return ", ".join(
        f'"{name}";q={rate.limit};w={max(1, _ceil_div(rate.period_us, MICROS))}'
        for name, rate in zip(names, rates, strict=True)
    )


def _seconds(value: float) -> int:
    return max(0, math.ceil(value - 1e-9))


def ratelimit_header(names: Sequence[str], decisions: Sequence[Decision]) -> str:
    """``RateLimit``: ``"name";r=42;t=17`` for each limit (remaining, seconds to full)."""
    return ", ".join(
        f'"{name}";r={d.remaining};t={_seconds(d.reset_after)}'
        for name, d in zip(names, decisions, strict=True)
    )


def tightest(decisions: Sequence[Decision]) -> Decision:
    """The decision to report alone: a refusing one first, then the fewest remaining."""
    return min(decisions, key=lambda d: (d.allowed, d.remaining, -d.reset_after))


def legacy_headers(decisions: Sequence[Decision]) -> list[tuple[str, str]]:
    """``X-RateLimit-Limit/Remaining/Reset`` of the tightest limit; Reset in seconds from now."""
    d = tightest(decisions)
    return [
        ("x-ratelimit-limit", str(d.limit)),
        ("x-ratelimit-remaining", str(d.remaining)),
        ("x-ratelimit-reset", str(_seconds(d.reset_after))),
    ]


def retry_after_header(decisions: Sequence[Decision]) -> str:
    """``Retry-After`` in whole seconds (at least 1): when every refusing limit admits again."""
    wait = max((d.retry_after for d in decisions if not d.allowed), default=0.0)
    return str(max(1, _seconds(wait)))
