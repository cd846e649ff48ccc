"""The measurement core: timed batches, interleaved repeats, medians and ratios.

One group of cases runs inside one event loop. Every repeat runs each case for one batch of
``iterations`` operations, in an order rotated by one position per repeat, so that slow drift
(CPU frequency, a neighbour process, a growing WAL file) lands on every case alike instead of
on whichever case happened to run last. A case's figure is the median over repeats of its
nanoseconds per operation; its ratio is that median divided by its baseline's median from the
same run.

Garbage collection is disabled for the duration of each timed batch and re-enabled straight
after, so a collection triggered by one case's garbage is not billed to another case.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

__all__ = [
    "Case",
    "CaseResult",
    "async_case",
    "median",
    "ratio",
    "rotated",
    "run_cases",
    "sync_case",
    "time_async_batch",
    "time_sync_batch",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One thing to time: a no-argument operation, synchronous or a coroutine factory.

    ``baseline`` names the case this one is divided by; ``None`` marks a baseline itself.
    ``weight`` multiplies the group's iteration count for cases far cheaper than their
    neighbours (a dict lookup beside a network round trip), so that every batch is long enough
    to time; the reported figure is per operation either way.
    """

    name: str
    sync_op: Callable[[], object] | None = None
    async_op: Callable[[], Awaitable[object]] | None = None
    baseline: str | None = None
    weight: int = 1

    def __post_init__(self) -> None:
        if (self.sync_op is None) == (self.async_op is None):
            raise ValueError(f"case {self.name!r}: give exactly one of sync_op or async_op")
        if self.weight < 1:
            raise ValueError(f"case {self.name!r}: weight must be >= 1, got {self.weight}")


def sync_case(
    name: str, op: Callable[[], object], *, baseline: str | None = None, weight: int = 1
) -> Case:
    return Case(name=name, sync_op=op, baseline=baseline, weight=weight)


def async_case(
    name: str,
    op: Callable[[], Awaitable[object]],
    *,
    baseline: str | None = None,
    weight: int = 1,
) -> Case:
    return Case(name=name, async_op=op, baseline=baseline, weight=weight)


@dataclass(slots=True)
class CaseResult:
    """Per-repeat nanoseconds per operation of one case, in repeat order."""

    case: Case
    ns_per_op: list[float] = field(default_factory=list)

    @property
    def median_ns(self) -> float:
        return median(self.ns_per_op)

    @property
    def spread(self) -> float:
        """Interquartile range over median: how far apart the middle half of repeats lie.

        A noise figure for reading the table, robust to the odd repeat that a neighbour
        process spoilt. Zero for fewer than two repeats.
        """
        if len(self.ns_per_op) < 2:
            return 0.0
        mid = self.median_ns
        q1, _, q3 = statistics.quantiles(self.ns_per_op, n=4, method="inclusive")
        return (q3 - q1) / mid if mid > 0 else 0.0


def median(values: Sequence[float]) -> float:
    """The median; for an even count, the mean of the two middle values."""
    if not values:
        raise ValueError("median of no values: run at least one repeat")
    return float(statistics.median(values))


def ratio(value: float, baseline: float) -> float:
    """``value / baseline``; a baseline that is not positive is a harness bug, not a result."""
    if baseline <= 0:
        raise ValueError(f"baseline must be > 0 to form a ratio, got {baseline!r}")
    return value / baseline


def rotated(items: Sequence[T], repeat: int) -> list[T]:
    """``items`` rotated left by ``repeat`` positions: the run order of repeat ``repeat``."""
    if not items:
        return []
    shift = repeat % len(items)
    return [*items[shift:], *items[:shift]]


def time_sync_batch(op: Callable[[], object], iterations: int) -> int:
    """Run ``op`` ``iterations`` times with GC off; the elapsed nanoseconds."""
    loop = range(iterations)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in loop:
            op()
        return time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


async def time_async_batch(op: Callable[[], Awaitable[object]], iterations: int) -> int:
    """Await ``op()`` ``iterations`` times with GC off; the elapsed nanoseconds."""
    loop = range(iterations)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in loop:
            await op()
        return time.perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


async def _time_case(case: Case, iterations: int) -> int:
    if case.sync_op is not None:
        return time_sync_batch(case.sync_op, iterations)
    if case.async_op is not None:
        return await time_async_batch(case.async_op, iterations)
    raise ValueError(f"case {case.name!r} has no operation")  # unreachable: see __post_init__


async def run_cases(
    cases: Sequence[Case],
    *,
    repeats: int,
    iterations: int,
    warmup_batches: int = 1,
) -> list[CaseResult]:
    """Time ``cases`` interleaved; results in declaration order.

    Must be awaited inside the group's event loop (async cases share it). Each case first runs
    ``warmup_batches`` untimed batches (imports, caches, connection pools, specialised
    bytecode), then ``repeats`` timed batches interleaved with the other cases.
    """
    if repeats < 1 or iterations < 1:
        raise ValueError(f"repeats and iterations must be >= 1, got {repeats} and {iterations}")
    names = [case.name for case in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be unique, got {names}")
    for case in cases:
        if case.baseline is not None and case.baseline not in names:
            raise ValueError(f"case {case.name!r}: baseline {case.baseline!r} is not in the group")

    results = [CaseResult(case) for case in cases]
    for _ in range(warmup_batches):
        for case in cases:
            await _time_case(case, iterations * case.weight)
    for repeat in range(repeats):
        for result in rotated(results, repeat):
            n = iterations * result.case.weight
            elapsed = await _time_case(result.case, n)
            result.ns_per_op.append(elapsed / n)
    return results
