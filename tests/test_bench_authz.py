"""The ``authz`` bench group: its policies are the stated size, both engines agree, cases run.

No timing is asserted. pycasbin and bastion are each checked against the answers the workload
computes from its plain data (on the timed sample and on a wider random sample), so the two
engines are shown to make the same decisions; the set-up proof is shown to refuse a side that
allows or denies everything; every case of the group runs once; the instruction rows exist
with the right baselines.
"""

from __future__ import annotations

import pytest
from bench.group import Options
from bench.groups import GROUP_NAMES, authz, load_group
from bench.groups.authz import (
    ABAC_EVAL,
    ABAC_MATCHER,
    ABAC_OURS,
    ABAC_OURS_VS_EVAL,
    RBAC_BUILDING,
    RBAC_CASBIN,
    RBAC_OURS,
    authz_cases,
    percentiles,
    single_decisions,
)
from bench.groups.authz_http import HTTP_BARE, HTTP_NO_OP, guard_label
from bench.groups.authz_policies import (
    LEVELS,
    AbacRequest,
    Side,
    abac_workload,
    bastion_abac,
    bastion_rbac,
    casbin_abac_eval,
    casbin_abac_matcher,
    casbin_rbac,
    have_policy,
    prove,
    random_abac_requests,
    rbac_workload,
)
from bench.instructions import CASES

needs_policy = pytest.mark.skipif(
    not have_policy(), reason="bastion.core.authz.policy (helper authz-core) is not merged yet"
)


def test_authz_is_a_registered_group() -> None:
    assert "authz" in GROUP_NAMES
    assert load_group("authz").name == "authz"


def test_the_policies_are_the_issue_size() -> None:
    rbac = rbac_workload()
    assert rbac.rule_count == 1_000
    assert rbac.edge_count == 10_000
    assert len(rbac.role_parents) == 250
    # users and roles never share a name (pycasbin's g has one namespace)
    assert not set(rbac.user_roles) & set(rbac.role_parents)
    # the deepest chain has LEVELS - 1 links below a user's role: under pycasbin's limit of 10
    depth, role = 0, "role-4-0"
    while rbac.role_parents[role]:
        role, depth = rbac.role_parents[role][0], depth + 1
    assert depth == LEVELS - 1 < 10
    assert [r.expected for r in rbac.requests].count(True) == 10
    assert [r.expected for r in rbac.requests].count(False) == 10
    abac = abac_workload()
    assert len(abac.rules) == 10_000
    assert len({(kind, action) for kind, action, _ in abac.rules}) == 10_000
    assert [r.expected for r in abac.requests] == [True, True, False, False]


def _agree(sides: dict[str, Side], requests: list[object]) -> None:
    for name, side in sides.items():
        answers = [side.decide(request) for request in requests]
        assert answers == [request.expected for request in requests], name  # type: ignore[attr-defined]


@needs_policy
def test_rbac_engines_agree_on_a_wide_sample() -> None:
    rbac = rbac_workload(samples=200, seed=7)
    sides = {
        "pycasbin": casbin_rbac(rbac),
        "bastion": bastion_rbac(rbac),
        "bastion, subject per decision": bastion_rbac(rbac, build_subject=True),
    }
    _agree(sides, list(rbac.requests))


@needs_policy
def test_abac_engines_agree_on_a_wide_sample() -> None:
    abac = abac_workload()
    requests = random_abac_requests(abac, 24)
    assert {r.expected for r in requests} == {True, False}
    _agree({"pycasbin matcher": casbin_abac_matcher(abac), "bastion": bastion_abac(abac)}, requests)


@needs_policy
def test_the_eval_form_agrees_on_a_smaller_policy() -> None:
    small = abac_workload(types=50)
    requests = [*small.requests, *random_abac_requests(small, 30, seed=3)]
    _agree({"pycasbin eval": casbin_abac_eval(small), "bastion": bastion_abac(small)}, requests)


def test_the_proof_refuses_a_side_that_decides_nothing() -> None:
    abac = abac_workload(types=5)
    for always in (True, False):
        lax = Side(None, lambda *_args, value=always: value, lambda _r: (), lambda x: x is True)
        with pytest.raises(RuntimeError, match="answered"):
            prove("lax", lax, abac.requests)
    one_sided = [AbacRequest("u", "ops", 5, "kind0", "ops", "read", expected=True)]
    with pytest.raises(RuntimeError, match="needs allow and deny cases"):
        prove("any", casbin_abac_matcher(abac), one_sided)


def test_percentiles_are_nearest_rank_in_microseconds() -> None:
    times = [1000 * n for n in range(1, 101)]  # 1 .. 100 µs
    assert percentiles(times, 0, 50, 99, 100) == [1.0, 51.0, 99.0, 100.0]
    assert len(single_decisions(lambda: None, 50)) == 50


@pytest.mark.asyncio
async def test_every_case_is_proved_and_runs_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authz, "SINGLE_DECISIONS", 2_000)  # the percentiles, not their precision
    async with authz_cases(Options()) as cases:
        by_name = {case.name: case for case in cases}
        assert len(by_name) == len(cases)
        assert by_name[RBAC_CASBIN].baseline is None
        assert by_name[ABAC_EVAL].baseline is None
        assert by_name[ABAC_MATCHER].baseline is None
        assert by_name[HTTP_NO_OP].baseline == HTTP_BARE
        if have_policy():
            (ours,) = (name for name in by_name if name.startswith(f"{RBAC_OURS} (single"))
            assert "p99" in ours
            assert by_name[ours].baseline == RBAC_CASBIN
            assert by_name[RBAC_BUILDING].baseline == RBAC_CASBIN
            assert by_name[ABAC_OURS].baseline == ABAC_MATCHER
            assert by_name[ABAC_OURS_VS_EVAL].baseline == ABAC_EVAL
            label = guard_label()
            assert by_name[label].baseline == HTTP_BARE
            assert by_name[f"{label} (vs no-op)"].baseline == HTTP_NO_OP
            assert len(cases) == 11
        else:
            assert len(cases) == 5
        for case in cases:
            if case.sync_op is not None:
                case.sync_op()
            else:
                assert case.async_op is not None
                status, _headers, body = await case.async_op()  # type: ignore[misc]
                assert (status, body) == (200, b"ok")


def test_instruction_counts_cover_rbac_and_the_guard() -> None:
    names = {case.name: case for case in CASES}
    casbin, ours = f"authz {RBAC_CASBIN}", f"authz {RBAC_OURS}"
    assert names[casbin].baseline is None
    bare = "authz FastAPI GET /posts, guard none"
    assert names[bare].build is not None
    assert names["authz FastAPI GET /posts, guard no-op"].baseline == bare
    if have_policy():
        assert names[ours].baseline == casbin
        assert names[ours].op is not None
        assert names["authz FastAPI GET /posts, guard authz"].baseline == bare
