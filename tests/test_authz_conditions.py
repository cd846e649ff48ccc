"""ABAC conditions: references, operators, strict types, compile-time checks and the errors
that make a policy deny (bastion.core.authz.conditions)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.authz import (
    AllOf,
    AnyOf,
    Condition,
    ConditionError,
    Not,
    Operator,
    Ref,
    Resource,
    Subject,
    compile_condition,
)
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

SUBJECT = Subject(
    id="u1",
    roles=frozenset({"user"}),
    attributes={"dept": "sales", "level": 3, "tags": ["a", "b"], "profile": {"team": "t1"}},
)
RESOURCE = Resource(
    type="document",
    id="d1",
    owner="u1",
    tenant="acme",
    attributes={
        "owner_id": "u1",
        "public": True,
        "locked": False,
        "size": 10.5,
        "count": 1,
        "title": "Quarterly report",
        "labels": ("x", "y"),
        "meta": {"dept": "sales"},
    },
)
CONTEXT: Mapping[str, object] = {"ip": "10.0.0.1", "hour": 14, "now": {"weekday": "mon"}}


def run(condition: object, resource: Resource | None = RESOURCE) -> bool:
    compiled = compile_condition(condition)  # type: ignore[arg-type]
    return compiled(SUBJECT, resource, CONTEXT)


def c(attribute: str, operator: str, value: object) -> Condition:
    return Condition(Ref.parse(attribute), Operator(operator), value)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (c("resource.owner_id", "equals", Ref.parse("subject.id")), True),
        (c("resource.owner", "equals", Ref.parse("subject.id")), True),
        (c("subject.id", "equals", Ref.parse("resource.owner_id")), True),
        (c("resource.public", "equals", True), True),
        (c("resource.locked", "not_equals", True), True),
        (c("resource.count", "equals", 1), True),
        (c("resource.count", "equals", 1.0), True),
        (c("resource.title", "contains", "report"), True),
        (c("resource.labels", "contains", "y"), True),
        (c("subject.roles", "contains", "user"), True),
        (c("subject.dept", "in", ["sales", "ops"]), True),
        (c("subject.dept", "not_in", ["ops"]), True),
        (c("subject.dept", "in", "salesforce"), True),
        (c("subject.level", "greater_than", 2), True),
        (c("subject.level", "less_than", 3), False),
        (c("subject.level", "greater_or_equal", 3), True),
        (c("subject.level", "less_or_equal", 2.5), False),
        (c("resource.size", "greater_than", Ref.parse("subject.level")), True),
        (c("resource.title", "starts_with", "Quarter"), True),
        (c("resource.title", "greater_than", "Annual"), True),
        (c("context.ip", "starts_with", "10."), True),
        (c("context.now.weekday", "equals", "mon"), True),
        (c("subject.profile.team", "equals", "t1"), True),
        (c("resource.meta.dept", "equals", Ref.parse("subject.dept")), True),
        (c("resource.tenant", "equals", "acme"), True),
        (c("resource.type", "equals", "document"), True),
        (c("resource.id", "equals", "d1"), True),
    ],
)
def test_operators(condition: Condition, expected: bool) -> None:
    assert run(condition) is expected


def test_combinators_and_their_text() -> None:
    owner = c("resource.owner_id", "equals", Ref.parse("subject.id"))
    public = c("resource.public", "equals", True)
    locked = c("resource.locked", "equals", True)
    expr = AllOf((AnyOf((public, owner)), Not(locked)))
    assert run(expr) is True
    assert str(expr) == (
        "((resource.public equals true or resource.owner_id equals subject.id) "
        "and not resource.locked equals true)"
    )
    assert compile_condition(expr).text == str(expr)
    assert compile_condition(expr).source is expr
    assert str(c("subject.dept", "in", ["a", 1, None, False])) == (
        'subject.dept in ["a", 1, null, false]'
    )


def test_a_literal_text_that_looks_like_a_reference_stays_a_text() -> None:
    # The guide compared subject.id with the TEXT "resource.owner_id": here a literal is a
    # literal, and a reference is a Ref.
    literal = c("subject.id", "equals", "resource.owner_id")
    assert run(literal) is False
    assert str(literal) == 'subject.id equals "resource.owner_id"'


@pytest.mark.parametrize(
    ("condition", "why"),
    [
        (c("resource.public", "equals", 1), "compares a bool with a number"),
        (c("resource.count", "equals", True), "compares a number with a bool"),
        (c("resource.count", "equals", "1"), "compares a number with a str"),
        (c("resource.missing", "equals", True), "resource.missing is missing"),
        (c("subject.nope", "equals", "x"), "subject.nope is missing"),
        (c("context.nope", "equals", "x"), "context.nope is missing"),
        (c("resource.meta.nope", "equals", "x"), "resource.meta.nope is missing"),
        (c("resource.title.deeper", "equals", "x"), "a step is not a mapping"),
        (c("resource.labels", "equals", "x"), "the attribute is a tuple, not a single value"),
        (c("resource.count", "contains", 1), "the attribute is a int, not a text or a list"),
        (c("resource.title", "contains", 1), "the attribute is a text, the element is not"),
        (c("subject.level", "in", Ref.parse("resource.count")), "not a text or a list"),
        (c("subject.level", "greater_than", "2"), "orders a number against a str"),
        (c("resource.public", "greater_than", 0), "orders a bool against a number"),
        (c("subject.level", "starts_with", "3"), "starts_with needs two texts"),
        (c("subject.tags", "contains", Ref.parse("resource.labels")), "the element is a tuple"),
    ],
)
def test_wrong_types_and_missing_attributes_raise(condition: Condition, why: str) -> None:
    with pytest.raises(ConditionError) as caught:
        run(condition)
    assert caught.value.condition == str(condition)
    assert why in caught.value.why


def test_nan_raises() -> None:
    s = Subject(id="u1", attributes={"score": math.nan})
    compiled = compile_condition(c("subject.score", "less_than", 5))
    with pytest.raises(ConditionError, match="is NaN"):
        compiled(s, None, {})
    with pytest.raises(ConditionError, match="is NaN"):
        compile_condition(c("subject.score", "equals", 5))(s, None, {})


def test_a_resource_reference_without_a_resource_raises() -> None:
    with pytest.raises(ConditionError, match="there is no resource"):
        run(c("resource.public", "equals", True), resource=None)


def test_bool_never_matches_an_int_in_a_list() -> None:
    s = Subject(id="u1", attributes={"flags": [1, 0], "flag": True, "n": 1})
    assert compile_condition(c("subject.flags", "contains", True))(s, None, {}) is False
    assert compile_condition(c("subject.flag", "in", [1, 2]))(s, None, {}) is False
    assert compile_condition(c("subject.n", "in", [True]))(s, None, {}) is False
    assert compile_condition(c("subject.n", "in", [1]))(s, None, {}) is True
    assert compile_condition(c("subject.flag", "not_in", [1]))(s, None, {}) is True


def test_none_equals_only_none() -> None:
    s = Subject(id="u1", attributes={"gone": None})
    assert compile_condition(c("subject.gone", "equals", None))(s, None, {}) is True
    with pytest.raises(ConditionError, match="compares a none with a str"):
        compile_condition(c("subject.gone", "equals", "x"))(s, None, {})


def test_short_circuit_order_is_left_to_right() -> None:
    missing = c("resource.missing", "equals", True)
    public = c("resource.public", "equals", True)
    assert run(AnyOf((public, missing))) is True  # stops at the first true
    assert run(AllOf((Not(public), missing))) is False  # stops at the first false
    with pytest.raises(ConditionError):
        run(AnyOf((missing, public)))
    with pytest.raises(ConditionError):
        run(Not(missing))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Ref.parse("request.body"), "must start with subject, resource or context"),
        (lambda: Ref.parse("subject"), "must be 'subject.<name>'"),
        (lambda: Ref.parse("subject."), "not a plain name"),
        (lambda: Ref.parse("subject.__class__"), "no dunder"),
        (lambda: Ref.parse("resource.a b"), "not a plain name"),
        (lambda: Ref.parse("resource.x()"), "not a plain name"),
        (lambda: Ref.parse("context." + ".".join("a" * 9)), "1 to 8 names"),
        (lambda: Ref("request", ("x",)), "must start with subject, resource or context"),  # type: ignore[arg-type]
        (lambda: c("subject.id", "equals", {"a": 1}), "value must be text"),
        (lambda: c("subject.id", "equals", math.nan), "value must be text"),
        (lambda: c("subject.id", "equals", ["a"]), "a list value needs in or not_in"),
        (lambda: c("subject.id", "in", [object()]), "list items must be"),
        (lambda: c("subject.id", "in", 3), "value must be a list, a text or a reference"),
        (lambda: c("subject.level", "greater_than", True), "value must be a number or a text"),
        (lambda: c("subject.level", "less_than", None), "value must be a number or a text"),
        (lambda: c("subject.id", "starts_with", 1), "value must be a text"),
        (lambda: Condition(Ref.parse("subject.id"), "matches", "x"), "operator must be one of"),  # type: ignore[arg-type]
        (lambda: AllOf(()), "all needs at least one condition"),
        (lambda: AnyOf("x"), "any takes a list of conditions"),  # type: ignore[arg-type]
        (lambda: AllOf(("x",)), "all items must be conditions"),  # type: ignore[arg-type]
        (lambda: Not("x"), "not items must be conditions"),  # type: ignore[arg-type]
        (lambda: compile_condition("subject.id == 'x'"), "must be a Condition"),  # type: ignore[arg-type]
    ],
)
def test_malformed_conditions_are_configuration_errors(make: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()  # type: ignore[operator]


def test_texts_are_parsed_for_attribute_and_operator() -> None:
    cond = Condition("resource.public", "equals", True)  # type: ignore[arg-type]
    assert cond.attribute == Ref("resource", ("public",))
    assert cond.operator is Operator.EQUALS


class _Trap:
    """An app object whose attribute access would run code: never touched."""

    touched = False

    def __getattr__(self, name: str) -> object:
        _Trap.touched = True
        raise AssertionError(name)


def test_lookups_never_touch_app_objects() -> None:
    s = Subject(id="u1", attributes={"obj": _Trap()})
    with pytest.raises(ConditionError, match="a step is not a mapping"):
        compile_condition(c("subject.obj.secret", "equals", "x"))(s, None, {})
    with pytest.raises(ConditionError, match="not a single value"):
        compile_condition(c("subject.obj", "equals", "x"))(s, None, {})
    assert _Trap.touched is False


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False, width=16),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(scalars, scalars)
def test_equals_is_strict_python_equality_of_same_kinds(a: object, b: object) -> None:
    s = Subject(id="u1", attributes={"a": a})
    compiled = compile_condition(c("subject.a", "equals", b))

    def kind(v: object) -> str:
        return (
            "bool"
            if isinstance(v, bool)
            else "num"
            if isinstance(v, int | float)
            else type(v).__name__
        )

    if kind(a) != kind(b):
        with pytest.raises(ConditionError):
            compiled(s, None, {})
    else:
        assert compiled(s, None, {}) is (a == b)
