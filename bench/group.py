"""A group: cases that are measured together, in one event loop, against the same baselines.

A group's ``cases`` factory is an async context manager: it starts what the cases need (a
server, a store, a temporary directory), checks that every case does what its name says, yields
the cases, and tears everything down afterwards, inside the same event loop the cases run in.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.measure import run_cases

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from contextlib import AbstractAsyncContextManager

    from bench.measure import Case, CaseResult

__all__ = ["Group", "Options", "run_group"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """Settings from the command line that groups may need."""

    redis_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Group:
    """A named set of cases. ``iterations`` is the default batch size per case and repeat."""

    name: str
    title: str
    iterations: int
    cases: Callable[[Options], AbstractAsyncContextManager[Sequence[Case]]]


async def _run(group: Group, options: Options, repeats: int, iterations: int) -> list[CaseResult]:
    async with group.cases(options) as cases:
        return await run_cases(cases, repeats=repeats, iterations=iterations)


def run_group(
    group: Group, options: Options, *, repeats: int, iterations: int | None = None
) -> list[CaseResult]:
    """Measure ``group`` in a fresh event loop of its own; results in declaration order."""
    return asyncio.run(_run(group, options, repeats, iterations or group.iterations))
