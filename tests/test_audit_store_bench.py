"""The ``audit`` bench group is registered, proves its cases at set-up and runs each once.
No timing is asserted."""

from __future__ import annotations

import pytest
from bench.group import Options
from bench.groups import GROUP_NAMES, load_group
from bench.groups.audit import BASELINE, audit_cases


def test_audit_is_a_registered_group() -> None:
    assert "audit" in GROUP_NAMES
    assert load_group("audit").name == "audit"


@pytest.mark.asyncio
async def test_every_case_runs_once() -> None:
    async with audit_cases(Options()) as cases:
        names = [case.name for case in cases]
        assert names[0] == BASELINE
        assert len(set(names)) == len(names) == 5
        assert [case.baseline for case in cases[1:]] == [BASELINE] * 4
        for case in cases:
            assert case.sync_op is not None
            case.sync_op()
