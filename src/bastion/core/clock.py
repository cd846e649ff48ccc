"""Injected time.

Everything in bastion that depends on "now" takes a :class:`Clock`, so tests freeze time
instead of sleeping through it. Times are Unix seconds as ``float`` (UTC by definition).
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FrozenClock", "SystemClock", "system_clock"]


@runtime_checkable
class Clock(Protocol):
    """A source of the current Unix time in seconds."""

    def now(self) -> float: ...


class SystemClock:
    """The wall clock (``time.time``)."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"


system_clock: Clock = SystemClock()
"""The shared wall clock. Stateless, so sharing it is safe."""


class FrozenClock:
    """A clock that moves only when told to. For tests and simulations.

    >>> clock = FrozenClock(1_000.0)
    >>> clock.advance(30)
    >>> clock.now()
    1030.0
    """

    __slots__ = ("_now",)

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self._now = float(now)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or backward, with a negative value) by ``seconds``."""
        self._now += seconds

    def set(self, now: float) -> None:
        self._now = float(now)

    def __repr__(self) -> str:
        return f"FrozenClock({self._now!r})"
