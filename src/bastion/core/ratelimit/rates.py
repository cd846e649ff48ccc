"""Rates and strategies: what a limit counts (``10/minute``) and with which algorithm.

Exact arithmetic. Times are whole microseconds and every quantity is an integer, so a limit of
100 admits exactly 100 requests at the boundary, never 99 or 101 through float rounding. The
Redis scripts mirror the algorithms in Lua, whose numbers are IEEE doubles: exact for integers
up to 2**53. :class:`Rate` therefore refuses a ``limit * period`` (in microseconds) above
:data:`MAX_SCALED`, which still allows, for example, 100,000 per day.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_SCALED",
    "MICROS",
    "Rate",
    "Strategy",
    "micros",
    "parse_rate",
    "parse_rates",
]

MICROS: Final = 1_000_000
"""Microseconds per second: the unit of time inside the algorithms."""

MAX_SCALED: Final = 2**53
"""Largest ``limit * period_us`` accepted: integers stay exact in Lua's doubles below it."""


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


DEFAULT_STRATEGY: Final = Strategy.TOKEN_BUCKET
"""The one default algorithm: of a :class:`~bastion.core.ratelimit.rules.Rule` and of the
guide's ``check_rate_limit``/``rate_limit`` helpers alike."""
