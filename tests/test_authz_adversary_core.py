"""Adversarial tests of the authorization core: policies written to crash the loader or the
engine, and values chosen to confuse a decision. Each asserts the exact refusal."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

from bastion.authz.guide import Guide
from bastion.authz.sqlalchemy import to_sqlalchemy
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
from bastion.errors import AuthzInputError, ConfigurationError, Forbidden

if TYPE_CHECKING:
    from pathlib import Path

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


# -- the SQL filter against SQLite's dynamic typing ------------------------------------------------


def test_sqlite_values_of_another_storage_class_never_pass_the_filter(tmp_path: Path) -> None:
    """SQLite keeps whatever was inserted: text ``'abc'`` or a blob in an INTEGER column. The
    per-row check refuses such a row (``condition_error``: a text is not ordered against a
    number), but SQLite orders every text and blob above every number, so ``level > 3`` let
    both rows through the list filter."""
    metadata = sa.MetaData()
    table = sa.Table(
        "docs",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("level", sa.Integer),
        sa.Column("title", sa.String),
    )
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'docs.db'}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO docs VALUES (1, 5, 'a'), (2, 'abc', 'b'), (3, x'09', 'c'), "
                "(4, 1, 'd'), (5, NULL, 'e'), (6, 4.5, 7), (7, 6, x'61')"
            )
        )
    subject = Subject(id="u")
    level = Ref.parse("resource.level")
    title = Ref.parse("resource.title")
    cases = {
        "allow": (Condition(level, Operator.GREATER_THAN, 3), None),
        "allow-text": (Condition(title, Operator.GREATER_OR_EQUAL, "a"), None),
        "deny": (None, Condition(level, Operator.LESS_THAN, 3)),
        "deny-text": (None, Condition(title, Operator.EQUALS, "b")),
    }
    try:
        for name, (allow, deny) in cases.items():
            rules = [Rule("all", Effect.ALLOW, ("docs:read",), "docs", when=allow)]
            if deny is not None:
                rules.append(Rule("no", Effect.DENY, ("docs:read",), "docs", when=deny))
            policy = Policy(roles=(Role("user", ()),), rules=tuple(rules))
            clause = to_sqlalchemy(policy.filter(subject, "docs:read", "docs"), table)
            with engine.connect() as connection:
                listed = {row.id for row in connection.execute(sa.select(table).where(clause))}
                rows = list(connection.execute(sa.select(table)))
            allowed = {
                row.id
                for row in rows
                if policy.allows(
                    subject,
                    Resource(type="docs", attributes={"level": row.level, "title": row.title}),
                    "docs:read",
                )
            }
            assert listed == allowed, name
    finally:
        engine.dispose()


# -- attributes that shadow a subject's identity ---------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "ref", "value"),
    [
        ({"id": "alice"}, "subject.id", "alice"),
        ({"roles": ["admin"]}, "subject.roles", "admin"),
    ],
)
def test_a_subject_attribute_cannot_shadow_its_id_or_roles(
    attributes: dict[str, object], ref: str, value: str
) -> None:
    """References read ``attributes`` before the fields, so ``mallory`` with a profile
    attribute ``id: alice`` passed ``resource.owner_id equals subject.id`` on alice's
    document (and ``roles: [admin]`` passed ``subject.roles contains admin``), although the
    ownership check proper (``:own``) compares the real id. A disagreeing attribute is
    refused, as on Resource."""
    with pytest.raises(AuthzInputError, match="disagrees with the subject's"):
        Subject(id="mallory", roles=frozenset({"user"}), attributes=attributes)
    agreeing = Subject(id="alice", roles=frozenset({"admin"}), attributes={"id": "alice"})
    assert agreeing.attributes["id"] == "alice"
    same_roles = Subject(id="u", roles=frozenset({"admin"}), attributes={"roles": ["admin"]})
    assert same_roles.roles == frozenset({"admin"})


# -- the guide's decorator: whose dict is the user ----------------------------------------------


def test_the_guide_decorator_never_takes_a_posted_dict_for_the_user() -> None:
    """``delete(post, user)``: the post is a mapping with an ``"id"`` (perhaps the request's
    JSON body, with ``"roles": ["admin"]`` of the client's choosing), and it came first, so
    the decorator checked the post's "roles" instead of the user's."""
    guide = Guide(Policy(roles=(Role("admin", ("posts:delete",)), Role("user", ("posts:read",)))))

    @guide.require_permission("posts:delete")
    def delete(post: dict[str, object], user: dict[str, object]) -> str:
        return f"deleted {post['id']}"

    forged = {"id": "p1", "roles": ["admin"], "title": "x"}
    reader = {"id": "u1", "roles": ["user"]}
    with pytest.raises(ConfigurationError, match="2 positional arguments could be the user"):
        delete(forged, reader)
    with pytest.raises(Forbidden):
        delete(forged, user=reader)  # the keyword is the user
    assert delete(forged, user={"id": "u2", "roles": ["admin"]}) == "deleted p1"
    subject = Subject(id="u3", roles=frozenset({"admin"}))
    assert guide.has_permission(subject, "posts:delete")

    @guide.require_permission("posts:delete")
    def by_subject(post: dict[str, object], who: Subject) -> str:
        return "deleted"

    assert by_subject(forged, subject) == "deleted"  # a Subject wins over a mapping
    with pytest.raises(Forbidden):
        by_subject(forged, Subject(id="u1", roles=frozenset({"user"})))
