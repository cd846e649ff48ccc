"""Adversarial tests of the authorization core: policies written to crash the loader or the
engine, and values chosen to confuse a decision. Each asserts the exact refusal."""

from __future__ import annotations

import pytest

from bastion.core.authz.conditions import (
    MAX_CONDITION_DEPTH,
    AllOf,
    Condition,
    Not,
    Operator,
    Ref,
    compile_condition,
)
from bastion.core.authz.loader import PolicyError, load_policy
from bastion.core.authz.policy import Effect, Policy, Rule
from bastion.core.authz.roles import Role
from bastion.core.authz.subjects import Resource, Subject
from bastion.errors import ConfigurationError

LEAF = Condition(Ref.parse("resource.level"), Operator.EQUALS, 1)


def nested(depth: int) -> AllOf | Not | Condition:
    expression: AllOf | Not | Condition = LEAF
    for level in range(depth):
        expression = AllOf((expression,)) if level % 2 else Not(expression)
    return expression


# -- deep nesting: a clear ConfigurationError, never a RecursionError --------------------------


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("toml", "x = " + "[" * 1000 + "]" * 1000),
        ("toml", "x = " + "{a = " * 1000 + "1" + "}" * 1000),
        ("yaml", "[" * 1000 + "]" * 1000),
        ("yaml", "{a: " * 1000 + "1" + "}" * 1000),
        ("json", "[" * 1000 + "]" * 1000),
    ],
    ids=["toml-arrays", "toml-tables", "yaml-flow-seq", "yaml-flow-map", "json-arrays"],
)
def test_a_deeply_nested_policy_file_is_a_policy_error(fmt: str, text: str) -> None:
    """tomllib and PyYAML parse nesting recursively: 1,000 brackets raised RecursionError out
    of load_policy before the depth check ever ran."""
    with pytest.raises(PolicyError, match="nested deeper than 64 levels") as caught:
        load_policy(text, format=fmt, source="deep")  # type: ignore[arg-type]
    assert "deep line 1" in str(caught.value)


@pytest.mark.parametrize("depth", [MAX_CONDITION_DEPTH + 1, 400, 5000])
def test_a_condition_nested_too_deeply_is_a_configuration_error(depth: int) -> None:
    """A Python policy has no document depth limit: 400 levels crashed Policy() with a
    RecursionError, and 200 levels compiled but could overflow the stack at request time,
    inside a deep middleware stack."""
    with pytest.raises(ConfigurationError, match=f"nested deeper than {MAX_CONDITION_DEPTH}"):
        Policy(
            roles=(Role("user", ()),),
            rules=(Rule("deep", Effect.ALLOW, ("docs:read",), "docs", when=nested(depth)),),
        )


def test_a_condition_at_the_depth_limit_compiles_and_decides() -> None:
    compiled = compile_condition(nested(MAX_CONDITION_DEPTH))
    subject = Subject(id="u")
    expected = MAX_CONDITION_DEPTH % 4 in (0, 3)  # every two levels add one Not
    assert compiled(subject, Resource(type="docs", attributes={"level": 1}), {}) is expected
    policy = Policy(
        roles=(Role("user", ()),),
        rules=(
            Rule("deep", Effect.ALLOW, ("docs:read",), "docs", when=nested(MAX_CONDITION_DEPTH)),
        ),
    )
    decision = policy.evaluate(subject, Resource(type="docs", attributes={"level": 1}), "read")
    assert decision.reason.value == "allowed_by_rule"
