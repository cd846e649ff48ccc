"""check_policy: a table of cases against a policy, every failing row reported at once."""

from __future__ import annotations

import pytest

from bastion.authz.testing import Case, check_policy
from bastion.core.authz.conditions import Condition, Operator, Ref
from bastion.core.authz.decision import AuthzReason
from bastion.core.authz.policy import Effect, Policy, Rule
from bastion.core.authz.roles import Role

POLICY = Policy(
    roles=(
        Role("user", ("posts:read", "posts:write:own")),
        Role("admin", ("posts:*",), ("user",)),
    ),
    rules=(
        Rule(
            "no-locked-writes",
            Effect.DENY,
            ("write",),
            "posts",
            Condition(Ref.parse("resource.locked"), Operator.EQUALS, True),
        ),
    ),
)

ALICE = {"id": "alice", "roles": ["user"]}
ROOT = {"id": "root", "roles": ["admin"]}
OWN = {"type": "posts", "id": "p1", "owner_id": "alice", "locked": False}
OTHER = {"type": "posts", "id": "p2", "owner_id": "bob", "locked": False}
LOCKED = {"type": "posts", "id": "p3", "owner_id": "alice", "locked": True}


def test_a_table_that_holds_returns_the_decisions() -> None:
    decisions = check_policy(
        POLICY,
        [
            (ALICE, "write", OWN, True),
            (ALICE, "write", OTHER, AuthzReason.NOT_OWNER),
            (ROOT, "write", OTHER, AuthzReason.ALLOWED_BY_ROLE),
            (ROOT, "write", LOCKED, False),
            Case(ALICE, "posts:read", None, expected=True),
            (ROOT, "delete", OTHER, True, {"ip": "10.0.0.1"}),
        ],
    )
    assert [d.allowed for d in decisions] == [True, False, True, False, True, True]
    assert decisions[3].reason is AuthzReason.DENIED_BY_RULE


def test_every_failing_row_is_listed_with_the_explanation() -> None:
    with pytest.raises(AssertionError) as caught:
        check_policy(
            POLICY,
            [
                (ALICE, "write", OWN, True),
                (ALICE, "write", OTHER, True),
                (ROOT, "write", LOCKED, AuthzReason.ALLOWED_BY_ROLE),
                (ALICE, "delete", OWN, AuthzReason.NOT_OWNER),
            ],
        )
    assert str(caught.value) == (
        "3 of 4 policy cases failed\n"
        "  row 1 (alice write posts:p2): expected allowed, got denied (not_owner): denied: "
        "posts:write:own needs ownership and alice does not own posts:p2\n"
        "  row 2 (root write posts:p3): expected reason allowed_by_role, got denied "
        "(denied_by_rule): denied: rule no-locked-writes: resource.locked equals true\n"
        "  row 3 (alice delete posts:p1): expected reason not_owner, got denied (no_match): "
        + POLICY.evaluate(ALICE, OWN, "delete").explain()
    )


def test_a_malformed_row_input_fails_its_row_and_the_table_goes_on() -> None:
    with pytest.raises(AssertionError) as caught:
        check_policy(
            POLICY,
            [
                ({"roles": ["user"]}, "read", OWN, True),
                (ALICE, "write", OTHER, True),
            ],
        )
    lines = str(caught.value).splitlines()
    assert lines[0] == "2 of 2 policy cases failed"
    assert lines[1].startswith(
        "  row 0 (None read posts:p1): expected allowed, raised AuthzInputError("
    )
    assert lines[2].startswith("  row 1 (alice write posts:p2): expected allowed, got denied")


def test_an_empty_table_and_malformed_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="check_policy needs at least one case"):
        check_policy(POLICY, [])
    with pytest.raises(TypeError, match=r"row 0 must be \(subject, action, resource, expected"):
        check_policy(POLICY, [(ALICE, "read", OWN)])
    with pytest.raises(TypeError, match="row 1: expected must be True, False or an AuthzReason"):
        check_policy(POLICY, [(ALICE, "read", OWN, True), (ALICE, "read", OWN, "yes")])
    with pytest.raises(TypeError, match="row 0: expected must be True, False"):
        check_policy(POLICY, [Case(ALICE, "read", OWN, 1)])  # type: ignore[arg-type]
