"""Query filters in real databases: the rows a SQLAlchemy filter returns from SQLite and from
PostgreSQL are exactly the rows ``Policy.evaluate`` allows one by one.

PostgreSQL is started here (``PostgresServer``: initdb in a temporary directory); without it
the PostgreSQL half skips locally and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from bastion.authz.sqlalchemy import columns_of, to_sqlalchemy
from bastion.core.authz.conditions import (
    AllOf,
    AnyOf,
    Condition,
    Expression,
    Not,
    Operator,
    Ref,
)
from bastion.core.authz.filters import Comparable, Compare, filter_for
from bastion.core.authz.policy import Effect, Policy, Rule
from bastion.core.authz.roles import Role
from bastion.core.authz.subjects import Resource, Subject
from bastion.errors import ConfigurationError
from bastion.testing.postgres_server import INSTALL_HINT, PostgresServer, find_initdb

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

metadata = sa.MetaData()
documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("owner_id", sa.String(20)),
    sa.Column("public", sa.Boolean),
    sa.Column("locked", sa.Boolean),
    sa.Column("level", sa.Integer),
    sa.Column("tag", sa.String(20)),
    sa.Column("tenant", sa.String(20)),
)
ATTRIBUTES = ("owner_id", "public", "locked", "level", "tag", "tenant")


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when PostgreSQL is not installed."""
    if find_initdb() is not None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{INSTALL_HINT} (CI=true: a missing service fails the run)")
    pytest.skip(INSTALL_HINT)


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path = tmp_path_factory.mktemp("authz-sql") / "documents.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_engine() -> Iterator[Engine]:
    require_postgres()
    server = PostgresServer()
    with server:
        assert server.dsn.startswith(f"postgresql://bastion@127.0.0.1:{server.port}/")
        cluster = server.directory
        assert (cluster / "data" / "PG_VERSION").is_file()
        engine = sa.create_engine(server.sqlalchemy_url)
        metadata.create_all(engine)
        yield engine
        engine.dispose()
    assert not server.running
    assert not cluster.exists()  # the cluster is removed with the server


@pytest.fixture(scope="module")
def engines(sqlite_engine: Engine, postgres_engine: Engine) -> tuple[Engine, ...]:
    return (sqlite_engine, postgres_engine)


def store(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(documents.delete())
        if rows:
            conn.execute(documents.insert(), rows)


def selected(engine: Engine, clause: sa.ColumnElement[bool]) -> set[int]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(documents.c.id).where(clause)))


def as_resource(row: dict[str, Any]) -> Resource:
    """The row as the per-row check sees it: owner and tenant fields, every column an
    attribute (the id stays out: it is the resource's id)."""
    return Resource(
        type="document",
        id=str(row["id"]),
        owner=row["owner_id"],
        tenant=row["tenant"],
        attributes={name: row[name] for name in ATTRIBUTES},
    )


def allowed(
    policy: Policy,
    subject: Subject,
    rows: list[dict[str, Any]],
    context: Any,
    action: str = "read",
) -> set[int]:
    return {
        row["id"]
        for row in rows
        if policy.evaluate(subject, as_resource(row), action, context).allowed
    }


# -- the guide's document policy, readable ---------------------------------------------------

OWNER_IS_SUBJECT = Condition(
    Ref.parse("resource.owner_id"), Operator.EQUALS, Ref.parse("subject.id")
)
DOCUMENT_POLICY = Policy(
    roles=(Role("user", ()),),
    rules=(
        Rule(
            name="read-public",
            effect=Effect.ALLOW,
            actions=("read",),
            resource="document",
            when=Condition(Ref.parse("resource.public"), Operator.EQUALS, True),
        ),
        Rule(
            name="read-own",
            effect=Effect.ALLOW,
            actions=("read",),
            resource="document",
            when=OWNER_IS_SUBJECT,
        ),
        Rule(
            name="write-own-unlocked",
            effect=Effect.ALLOW,
            actions=("write",),
            resource="document",
            when=AllOf(
                (OWNER_IS_SUBJECT, Condition(Ref.parse("resource.locked"), Operator.EQUALS, False))
            ),
        ),
    ),
)


class Base(DeclarativeBase):
    pass


class Document(Base):
    __tablename__ = "guide_documents"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    owner_id: Mapped[str] = mapped_column(sa.String(20))
    public: Mapped[bool]
    locked: Mapped[bool]
    title: Mapped[str] = mapped_column(sa.String(40))


GUIDE_ROWS = [
    {"id": 1, "owner_id": "alice", "public": True, "locked": False, "title": "alice, public"},
    {"id": 2, "owner_id": "alice", "public": False, "locked": True, "title": "alice, private"},
    {"id": 3, "owner_id": "bob", "public": False, "locked": False, "title": "bob, private"},
    {"id": 4, "owner_id": "bob", "public": True, "locked": True, "title": "bob, public"},
]


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_the_guide_document_policy_lists_what_each_user_may_read(
    database: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(f"{database}_engine")
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.execute(sa.delete(Document))
        session.add_all(Document(**row) for row in GUIDE_ROWS)

    def titles(user: str, action: str) -> list[str]:
        readable = DOCUMENT_POLICY.filter({"id": user, "roles": ["user"]}, action, "document")
        query = sa.select(Document.title).where(to_sqlalchemy(readable, Document))
        with Session(engine) as session:
            return sorted(session.scalars(query.order_by(Document.id)))

    assert titles("alice", "read") == ["alice, private", "alice, public", "bob, public"]
    assert titles("bob", "read") == ["alice, public", "bob, private", "bob, public"]
    assert titles("carol", "read") == ["alice, public", "bob, public"]
    assert titles("alice", "write") == ["alice, public"]
    assert titles("bob", "write") == ["bob, private"]
    assert titles("carol", "write") == []


def test_the_guide_filter_reads_as_the_policy() -> None:
    readable = DOCUMENT_POLICY.filter({"id": "alice", "roles": ["user"]}, "read", "document")
    assert str(readable) == (
        "(public equals True evaluates and owner_id equals 'alice' evaluates"
        " and (public equals True or owner_id equals 'alice'))"
    )
    assert str(DOCUMENT_POLICY.filter({"id": "x"}, "write", "document")) == (
        "(owner_id equals 'x' and locked equals False)"
    )


# -- translation details ----------------------------------------------------------------------


def test_an_attribute_without_a_column_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"filter attribute 'team' has no column"):
        to_sqlalchemy(Compare("team", Operator.EQUALS, "x"), documents)


def test_owner_maps_to_the_owner_id_column() -> None:
    clause = to_sqlalchemy(
        Compare("owner", Operator.EQUALS, "u1"), {"owner_id": documents.c.owner_id}
    )
    assert "documents.owner_id" in str(clause)


def test_columns_of_reads_tables_and_mapped_classes() -> None:
    assert sorted(columns_of(documents)) == sorted(("id", *ATTRIBUTES))
    assert sorted(columns_of(Document)) == ["id", "locked", "owner_id", "public", "title"]
    with pytest.raises(ConfigurationError, match="expected a mapped class"):
        columns_of(object())


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_null_and_wrong_types_never_pass_a_deny_or_an_allow(
    database: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(f"{database}_engine")
    level_high = Condition(Ref.parse("resource.level"), Operator.GREATER_THAN, 3)
    locked = Condition(Ref.parse("resource.locked"), Operator.EQUALS, True)
    policy = Policy(
        roles=(Role("reader", ("document:read",)),),
        rules=(
            # NOT (level > 3 AND locked) is TRUE in SQL for a NULL level on an unlocked row;
            # the core raises on the NULL level first and denies.
            Rule(
                name="no-high-locked",
                effect=Effect.DENY,
                actions=("read",),
                resource="document",
                when=AllOf((level_high, locked)),
            ),
            # The reader's role grants read on every row, but a row on which this rule's
            # condition raises (NULL tag) is denied all the same.
            Rule(
                name="a-tags",
                effect=Effect.ALLOW,
                actions=("read",),
                resource="document",
                when=Condition(Ref.parse("resource.tag"), Operator.STARTS_WITH, "a"),
            ),
        ),
    )
    rows = [
        {"id": 1, "level": 1, "locked": True, "tag": "b"},  # allowed by the role
        {"id": 2, "level": 5, "locked": True, "tag": "a"},  # denied by the rule
        {"id": 3, "level": None, "locked": False, "tag": "a"},  # deny rule raises
        {"id": 4, "level": 5, "locked": False, "tag": "a"},  # deny rule false
        {"id": 5, "level": 1, "locked": False, "tag": None},  # allow rule raises
        {"id": 6, "level": 1, "locked": None, "tag": "b"},  # all() stops at level: no error
    ]
    table = [{**dict.fromkeys(ATTRIBUTES), **row} for row in rows]
    store(engine, table)
    reader = Subject(id="u1", roles=frozenset({"reader"}))
    clause = to_sqlalchemy(filter_for(policy, reader, "read", "document"), documents)
    assert selected(engine, clause) == {1, 4, 6} == allowed(policy, reader, table, None)
    reasons = {
        row["id"]: policy.evaluate(reader, as_resource(row), "read").reason.value for row in table
    }
    assert reasons == {
        1: "allowed_by_role",
        2: "denied_by_rule",
        3: "condition_error",
        4: "allowed_by_role",
        5: "condition_error",
        6: "allowed_by_role",
    }


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_number_literals_keep_their_type_against_an_integer_column(
    database: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(f"{database}_engine")
    table = [{**dict.fromkeys(ATTRIBUTES), "id": i, "level": v} for i, v in enumerate([0, 1, 3])]
    store(engine, table)
    cases = {
        Compare("level", Operator.EQUALS, -0.5): set(),  # sent as an integer, -0.5 became 0
        Compare("level", Operator.GREATER_THAN, 0.5): {1, 2},
        Compare("level", Operator.IN, (0.5, 1, 2**40)): {1},
        Compare("level", Operator.LESS_THAN, 2**40): {0, 1, 2},
    }
    for leaf, expected in cases.items():
        assert selected(engine, to_sqlalchemy(leaf, documents)) == expected, str(leaf)


# -- the differential test -------------------------------------------------------------------

ROLE_NAMES = ("guest", "user", "editor", "admin")
PERMISSIONS = (
    "document:read",
    "document:read:own",
    "document:*",
    "document:*:own",
    "document:write",
    "*",
    "*:read",
    "folder:read",
    "document:read:team",
)
TEXTS = ("a", "ab", "b", "", "A", "é")
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 5),
    st.sampled_from(TEXTS),
    st.sampled_from([2.5, -0.5]),
)
TYPED = {
    "owner_id": st.sampled_from(["u1", "u2", "a"]),
    "owner": st.sampled_from(["u1", "u2", "a"]),
    "public": st.booleans(),
    "locked": st.booleans(),
    "level": st.integers(-2, 5) | st.sampled_from([2.5, -0.5, 2**40]),
    "tag": st.sampled_from(TEXTS),
    "tenant": st.sampled_from(["t1", "t2"]),
    "type": st.sampled_from(["document", "folder"]),
}
"""Values of each attribute's own type (most conditions a policy writes are well typed)."""
ROW_REFS = tuple(f"resource.{name}" for name in (*ATTRIBUTES, "owner", "type"))
OTHER_REFS = (
    "subject.id",
    "subject.level",
    "subject.tags",
    "subject.team",
    "subject.absent",
    "context.level",
    "context.tag",
)


SENSIBLE_PAIRS = (
    ("subject.id", "equals", "resource.owner_id"),
    ("subject.id", "not_equals", "resource.owner"),
    ("subject.level", "greater_or_equal", "resource.level"),
    ("subject.level", "less_than", "resource.level"),
    ("subject.tags", "contains", "resource.tag"),
    ("subject.team", "equals", "resource.tag"),
    ("subject.team", "in", "resource.tag"),
    ("context.level", "greater_than", "resource.level"),
    ("context.tag", "not_equals", "resource.tag"),
)


# Strategies are built once here: building them inside a composite on every draw costs more
# than running the test.
LEFT_REFS = st.sampled_from(ROW_REFS + ROW_REFS + OTHER_REFS).map(Ref.parse)
PAIRS = st.sampled_from(SENSIBLE_PAIRS)
OPERATORS = st.sampled_from(list(Operator))
OTHER_REF_VALUES = st.sampled_from(OTHER_REFS).map(Ref.parse)
ROW_REF_VALUES = st.sampled_from(ROW_REFS).map(Ref.parse)
MIXED_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), OTHER_REF_VALUES)
VALUES_FOR = {
    name: st.one_of(typed, st.lists(typed, max_size=3), MIXED_VALUES)
    for name, typed in TYPED.items()
}
QUARTERS = st.integers(0, 3)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    attribute = draw(LEFT_REFS)
    if attribute.root != "resource" and draw(QUARTERS) > 0:
        left, op, right = draw(PAIRS)
        return Condition(Ref.parse(left), Operator(op), Ref.parse(right))
    operator = draw(OPERATORS)
    typed = TYPED.get(attribute.path[0], SCALARS) if attribute.root == "resource" else SCALARS
    if attribute.root == "resource":
        value: object = draw(VALUES_FOR.get(attribute.path[0], MIXED_VALUES))
    else:
        value = draw(ROW_REF_VALUES)
        if operator is Operator.STARTS_WITH:
            operator = Operator.EQUALS
    try:
        return Condition(attribute=attribute, operator=operator, value=value)
    except ConfigurationError:
        return Condition(attribute=attribute, operator=Operator.NOT_EQUALS, value=draw(typed))


expressions: st.SearchStrategy[Expression] = st.recursive(
    conditions(),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map(lambda items: AllOf(tuple(items))),
        st.lists(inner, min_size=1, max_size=3).map(lambda items: AnyOf(tuple(items))),
        inner.map(Not),
    ),
    max_leaves=4,
)
ROLE_PERMISSIONS = st.lists(st.sampled_from(PERMISSIONS), max_size=2, unique=True).map(tuple)
PARENTS = [st.just(())] + [
    st.lists(st.sampled_from(ROLE_NAMES[:position]), max_size=1).map(tuple)
    for position in range(1, len(ROLE_NAMES))
]
RULE_COUNT = st.integers(1, 4)
RULE_ACTIONS = st.lists(
    st.sampled_from(["read", "*", "write", "document:read:own"]),
    min_size=1,
    max_size=2,
    unique=True,
).map(tuple)
EFFECTS = st.sampled_from([Effect.ALLOW, Effect.ALLOW, Effect.DENY])
WHENS = st.one_of(st.none(), expressions, expressions, expressions)
RULE_ROLES = st.just(()) | st.lists(st.sampled_from(ROLE_NAMES), max_size=2, unique=True).map(tuple)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    roles = tuple(
        Role(name, draw(ROLE_PERMISSIONS), draw(PARENTS[position]))
        for position, name in enumerate(ROLE_NAMES)
    )
    rules = tuple(
        Rule(
            name=f"rule-{index}",
            effect=draw(EFFECTS),
            actions=draw(RULE_ACTIONS),
            resource="document",
            when=draw(WHENS),
            roles=draw(RULE_ROLES),
        )
        for index in range(draw(RULE_COUNT))
    )
    return Policy(roles=roles, rules=rules)


role_sets = st.frozensets(st.sampled_from(ROLE_NAMES), max_size=2)
subjects = st.builds(
    lambda uid, roles, tenant_roles, grants, denies, attributes: Subject(
        id=uid,
        roles=roles,
        tenant_roles=tenant_roles,
        grants=grants,
        denies=denies,
        attributes=attributes,
    ),
    st.sampled_from(["u1", "u2", "a"]),
    st.frozensets(st.sampled_from(ROLE_NAMES), min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(["t1", "t2"]), role_sets, max_size=2),
    st.lists(st.sampled_from(PERMISSIONS), max_size=1).map(tuple),
    st.sampled_from([(), (), (), ("document:read",), ("document:read:own",), ("folder:read",)]),
    st.fixed_dictionaries(
        {
            "level": st.integers(-1, 5) | SCALARS,
            "tags": st.lists(st.sampled_from(TEXTS), max_size=3),
            "team": st.sampled_from(TEXTS),
        },
    ),
)
contexts = st.one_of(
    st.none(),
    *[
        st.fixed_dictionaries(
            {"level": st.integers(-1, 5) | SCALARS, "tag": st.sampled_from(TEXTS) | SCALARS}
        )
    ]
    * 3,
)

row_values = {
    "owner_id": st.sampled_from([None, "u1", "u2", "a"]),
    "public": st.sampled_from([None, True, False, True, False]),
    "locked": st.sampled_from([None, True, False, True, False]),
    "level": st.sampled_from([None, -1, 0, 1, 2, 3, 4, 5]),
    "tag": st.sampled_from([None, *TEXTS]),
    "tenant": st.sampled_from([None, "t1", "t2"]),
}
CHECKED_ACTIONS = st.sampled_from(
    ["read", "read", "read", "write", "document:read", "document:read:own", "document:*"]
)
"""Mostly the list endpoint's ``read``; also a whole permission, a scoped one, a wildcard."""
tables = st.lists(st.fixed_dictionaries(row_values), min_size=1, max_size=8).map(
    lambda rows: [{"id": index, **row} for index, row in enumerate(rows)]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.lists(subjects, min_size=1, max_size=3), contexts, tables, CHECKED_ACTIONS)
def test_filter_matches_the_per_row_check_in_python(
    policy: Policy,
    people: list[Subject],
    context: Any,
    table: list[dict[str, Any]],
    action: str,
) -> None:
    for subject in people:
        readable = filter_for(policy, subject, action, "document", context)
        expected = allowed(policy, subject, table, context, action)
        assert {row["id"] for row in table if readable.matches(as_resource(row))} == expected


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(policies(), st.lists(subjects, min_size=1, max_size=3), contexts, tables, CHECKED_ACTIONS)
def test_sql_returns_exactly_the_rows_the_per_row_check_allows(
    engines: tuple[Engine, ...],
    policy: Policy,
    people: list[Subject],
    context: Any,
    table: list[dict[str, Any]],
    action: str,
) -> None:
    for engine in engines:
        store(engine, table)
    for subject in people:
        clause = to_sqlalchemy(filter_for(policy, subject, action, "document", context), documents)
        expected = allowed(policy, subject, table, context, action)
        for engine in engines:
            assert selected(engine, clause) == expected, (engine.dialect.name, str(clause))


# -- text compares by code point, whatever the column's collation ----------------------------

LABEL_TAGS = ["a", "B", "A", "b", "ab", "Ab", "é", "E"]
CASE_FOLDING = {"sqlite": "NOCASE", "postgres": "und-x-icu"}
"""A collation per database that orders or equates text unlike Python's ``str``."""


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
@pytest.mark.parametrize(
    "leaf",
    [
        Compare("tag", Operator.EQUALS, "a"),
        Compare("tag", Operator.NOT_EQUALS, "a"),
        Compare("tag", Operator.GREATER_THAN, "B"),
        Compare("tag", Operator.LESS_OR_EQUAL, "b"),
        Compare("tag", Operator.STARTS_WITH, "a"),
        Compare("tag", Operator.IN, ("a", "e")),
        Compare("tag", Operator.NOT_IN, ("A",)),
        Compare("tag", Operator.CONTAINS, "b"),
        Compare("tag", Operator.IN, "Abc"),
    ],
    ids=str,
)
def test_text_compares_as_python_does_under_a_case_folding_collation(
    database: str, leaf: Compare, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(f"{database}_engine")
    labels = sa.Table(
        "labels",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tag", sa.String(20, collation=CASE_FOLDING[database])),
    )
    labels.create(engine, checkfirst=True)
    rows = [{"id": index, "tag": tag} for index, tag in enumerate(LABEL_TAGS)]
    with engine.begin() as conn:
        conn.execute(labels.delete())
        conn.execute(labels.insert(), rows)
    with engine.connect() as conn:
        got = set(conn.scalars(sa.select(labels.c.id).where(to_sqlalchemy(leaf, labels))))
    expected = {
        row["id"]
        for row in rows
        if leaf.matches(Resource(type="label", attributes={"tag": row["tag"]}))
    }
    assert got == expected
    assert expected  # the case is not vacuous
    assert expected != {row["id"] for row in rows}


def test_postgres_server_listens_on_loopback_only(postgres_engine: Engine) -> None:
    with postgres_engine.connect() as conn:
        assert conn.scalar(sa.text("show listen_addresses")) == "127.0.0.1"
        assert conn.scalar(sa.text("show unix_socket_directories")) == ""
        assert conn.scalar(sa.text("show fsync")) == "off"


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_role_held_in_one_tenant_reads_only_that_tenants_rows(
    database: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(f"{database}_engine")
    policy = Policy(roles=(Role("reader", ("document:read",)), Role("owner", ("document:*:own",))))
    table = [
        {**dict.fromkeys(ATTRIBUTES), "id": 1, "tenant": "t1"},
        {**dict.fromkeys(ATTRIBUTES), "id": 2, "tenant": "t2"},
        {**dict.fromkeys(ATTRIBUTES), "id": 3, "tenant": None},
        {**dict.fromkeys(ATTRIBUTES), "id": 4, "tenant": "t2", "owner_id": "u1"},
    ]
    store(engine, table)
    subject = Subject(id="u1", roles=frozenset({"owner"}), tenant_roles={"t1": {"reader"}})
    readable = filter_for(policy, subject, "read", "document")
    assert str(readable) == "(tenant equals 't1' or owner equals 'u1')"
    assert selected(engine, to_sqlalchemy(readable, documents)) == {1, 4}
    assert allowed(policy, subject, table, None) == {1, 4}


def test_without_sqlalchemy_the_module_names_the_extra() -> None:
    code = "import sys; sys.modules['sqlalchemy'] = None; import bastion.authz.sqlalchemy"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "pip install 'bastion[sqlalchemy]'" in result.stderr


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_nan_in_a_float_column_is_no_value(database: str, request: pytest.FixtureRequest) -> None:
    engine: Engine = request.getfixturevalue(f"{database}_engine")
    scores = sa.Table(
        "scores",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("score", sa.Float),
    )
    scores.create(engine, checkfirst=True)
    values = [0.5, 2.0, float("nan"), None, -1.0]
    rows = [{"id": index, "score": value} for index, value in enumerate(values)]
    with engine.begin() as conn:
        conn.execute(scores.delete())
        conn.execute(scores.insert(), rows)
        stored = dict(conn.execute(sa.select(scores.c.id, scores.c.score)).all())
    leaves = [
        Compare("score", Operator.GREATER_THAN, 1),
        Compare("score", Operator.NOT_EQUALS, 0.5),
        Compare("score", Operator.NOT_IN, (2.0,)),
        Comparable("score", Operator.LESS_THAN, 1),
    ]
    for leaf in leaves:
        with engine.connect() as conn:
            got = set(conn.scalars(sa.select(scores.c.id).where(to_sqlalchemy(leaf, scores))))
        # as the per-row check sees the rows the database gives back (SQLite: NaN is NULL)
        expected = {
            key
            for key, value in stored.items()
            if leaf.matches(Resource(type="score", attributes={"score": value}))
        }
        assert got == expected, str(leaf)
        if database == "postgres":
            assert 2 not in got  # the NaN row: no operator lets it through
