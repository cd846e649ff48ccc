"""Group ``authz``: bastion's ``Policy`` against pycasbin on the same policies; a FastAPI guard.

The policies are :mod:`bench.groups.authz_policies`' (RBAC: 1,000 permission rules and 10,000
role edges; ABAC: 10,000 rules with conditions), built once for each engine. Every timed
operation is one decision on the next request of a fixed sample (RBAC: 10 allowed and 10
denied; ABAC: two allowed, one denied by department, one by level), each batch a whole number
of passes over the sample so that every repeat sees the same mix. Before anything is timed,
every case decides every sample request and must give its expected answer.

Rows, ratios against pycasbin's ``Enforcer.enforce`` (target: bastion at least 20x faster, a
ratio <= 0.05):

* ``RBAC: pycasbin enforce``; ``RBAC: bastion Policy.evaluate``, whose name carries the p50,
  p99 and p99.9 of 100,000 single decisions each timed alone at set-up (target: p99 < 20 µs);
  ``RBAC: bastion, subject built per decision`` (the ``Subject`` made from the user's role set
  inside every decision, the look-up pycasbin's ``g`` does for it);
* ``ABAC: pycasbin enforce, eval(p.sub_rule)`` (pycasbin's documented form for many rules) and
  ``ABAC: pycasbin enforce, one matcher`` (its fastest form); bastion against each;
* ``FastAPI`` (:mod:`bench.groups.authz_http`): one route bare, with a no-op dependency
  (FastAPI's own cost of any dependency) and with ``Depends(require("posts:write"))``, the
  guard against both (target: at most 5 µs added).

Instruction counts of the RBAC and FastAPI rows: ``python -m bench.instructions --only authz
--small 20 --large 120`` (pycasbin's decisions are slow under callgrind).
"""

from __future__ import annotations

import gc
import statistics
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

from bench.group import Group
from bench.groups.authz_http import HTTP_BARE, HTTP_NO_OP, http_cases
from bench.groups.authz_policies import (
    abac_workload,
    bastion_abac,
    bastion_rbac,
    casbin_abac_eval,
    casbin_abac_matcher,
    casbin_rbac,
    cycling,
    have_policy,
    prove,
    rbac_workload,
)
from bench.measure import sync_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from bench.group import Options
    from bench.groups.authz_policies import Side
    from bench.measure import Case

__all__ = [
    "ABAC_EVAL",
    "ABAC_MATCHER",
    "ABAC_OURS",
    "ABAC_OURS_VS_EVAL",
    "GROUP",
    "HTTP_BARE",
    "HTTP_NO_OP",
    "RBAC_BUILDING",
    "RBAC_CASBIN",
    "RBAC_OURS",
    "authz_cases",
    "instruction_op",
    "percentiles",
    "single_decisions",
]

RBAC_CASBIN: Final = "RBAC: pycasbin enforce"
RBAC_OURS: Final = "RBAC: bastion Policy.evaluate"
RBAC_BUILDING: Final = "RBAC: bastion, subject built per decision"
ABAC_EVAL: Final = "ABAC: pycasbin enforce, eval(p.sub_rule)"
ABAC_MATCHER: Final = "ABAC: pycasbin enforce, one matcher"
ABAC_OURS: Final = "ABAC: bastion Policy.evaluate"
ABAC_OURS_VS_EVAL: Final = f"{ABAC_OURS} (vs eval form)"
SINGLE_DECISIONS: Final = 100_000
ITERATIONS: Final = 4
"""The group's batch: one pass over the ABAC sample; the weights below make every batch a
whole number of passes over its sample and long enough to time."""
_WEIGHTS: Final = {
    RBAC_CASBIN: 5,
    RBAC_OURS: 5_000,
    RBAC_BUILDING: 5_000,
    ABAC_EVAL: 1,
    ABAC_MATCHER: 2,
    ABAC_OURS: 5_000,
    ABAC_OURS_VS_EVAL: 5_000,
}


def single_decisions(op: Callable[[], object], count: int) -> list[int]:
    """Nanoseconds of ``count`` calls of ``op``, each timed alone (garbage collection left on,
    as in a server: a collection that lands in a decision is part of its tail)."""
    clock = time.perf_counter_ns
    times = [0] * count
    for i in range(count):
        start = clock()
        op()
        times[i] = clock() - start
    return times


def percentiles(times: Sequence[int], *points: float) -> list[float]:
    """The given percentiles (0-100) of ``times``, in microseconds (nearest rank)."""
    ordered = sorted(times)
    last = len(ordered) - 1
    return [ordered[min(last, round(point / 100 * last))] / 1000 for point in points]


def _timer_floor(count: int) -> float:
    """The median of an empty timed call, in microseconds: what the timer itself adds."""
    return statistics.median(single_decisions(lambda: None, count)) / 1000


def _p99_label(op: Callable[[], object]) -> str:
    single_decisions(op, SINGLE_DECISIONS // 10)  # warm the caches and specialised bytecode
    gc.collect()
    p50, p99, p999 = percentiles(single_decisions(op, SINGLE_DECISIONS), 50, 99, 99.9)
    floor = _timer_floor(SINGLE_DECISIONS // 10)
    return (
        f"{RBAC_OURS} (single decisions: p50 {p50:.1f} µs, p99 {p99:.1f} µs, "
        f"p99.9 {p999:.1f} µs of {SINGLE_DECISIONS:,}; timer {floor:.2f} µs)"
    )


def _case(
    name: str, side: Side, requests: Sequence[Any], baseline: str | None, *, p99: bool = False
) -> Case:
    """The case ``name`` (weighted as :data:`_WEIGHTS` says), proved on ``requests`` first;
    ``p99``: its name also carries the percentiles of single decisions."""
    prove(name, side, requests)
    weight = _WEIGHTS[name]
    if (ITERATIONS * weight) % len(requests):
        raise RuntimeError(f"authz case {name!r}: a batch is not a whole number of passes")
    label = _p99_label(cycling(side, requests)) if p99 else name
    return sync_case(label, cycling(side, requests), baseline=baseline, weight=weight)


def decision_cases() -> list[Case]:
    """The RBAC and ABAC rows, each proved on its whole sample."""
    rbac = rbac_workload()
    if rbac.rule_count != 1_000 or rbac.edge_count != 10_000:
        raise RuntimeError(f"RBAC workload: {rbac.rule_count} rules, {rbac.edge_count} edges")
    abac = abac_workload()
    if len(abac.rules) != 10_000:
        raise RuntimeError(f"ABAC workload: {len(abac.rules)} rules")
    cases = [
        _case(RBAC_CASBIN, casbin_rbac(rbac), rbac.requests, None),
        _case(ABAC_EVAL, casbin_abac_eval(abac), abac.requests, None),
        _case(ABAC_MATCHER, casbin_abac_matcher(abac), abac.requests, None),
    ]
    if not have_policy():
        return cases
    ours_abac = bastion_abac(abac)
    return [
        cases[0],
        _case(RBAC_OURS, bastion_rbac(rbac), rbac.requests, RBAC_CASBIN, p99=True),
        _case(RBAC_BUILDING, bastion_rbac(rbac, build_subject=True), rbac.requests, RBAC_CASBIN),
        *cases[1:],
        _case(ABAC_OURS, ours_abac, abac.requests, ABAC_MATCHER),
        _case(ABAC_OURS_VS_EVAL, ours_abac, abac.requests, ABAC_EVAL),
    ]


def instruction_op(label: str) -> Callable[[], object]:
    """For :mod:`bench.instructions`: the proved RBAC operation of ``label``
    (:data:`RBAC_CASBIN` or :data:`RBAC_OURS`)."""
    rbac = rbac_workload()
    sides = {RBAC_CASBIN: casbin_rbac, RBAC_OURS: bastion_rbac}
    side = sides[label](rbac)
    prove(label, side, rbac.requests)
    return cycling(side, rbac.requests)


@asynccontextmanager
async def authz_cases(_options: Options) -> AsyncIterator[list[Case]]:
    """Every row of the group, proved."""
    yield [*decision_cases(), *await http_cases()]


GROUP = Group(
    name="authz",
    title=(
        "Authorization decisions, bastion's Policy against pycasbin 1.43's Enforcer.enforce on "
        "the same RBAC policy (1,000 permission rules, 10,000 role edges, exact matching) and "
        "ABAC policy (10,000 rules: department equality and a least level), one decision per "
        "operation over a fixed sample of allowed and denied requests, every case proved on "
        "the whole sample first; a FastAPI route with and without the authorization guard. "
        "Targets: bastion >= 20x pycasbin (ratio <= 0.05), RBAC p99 < 20 µs, the guard "
        "<= 5 µs above the bare route."
    ),
    iterations=ITERATIONS,
    cases=authz_cases,
)
