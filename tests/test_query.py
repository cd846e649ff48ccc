"""bastion.query: sort orders through an allow-list and literal LIKE patterns, checked as parsers
(every refusal with its reason, hypothesis over arbitrary text) and run on real SQLite and
PostgreSQL through SQLAlchemy, raw SQL text and the SQLAlchemy form."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from tests.sql_support import postgres_fixture  # noqa: F401 (the postgres fixture)

from bastion.errors import BadData, ConfigurationError
from bastion.query import (
    OrderColumns,
    UnsafeOrderBy,
    escape_like,
    like_contains,
    like_prefix,
    like_suffix,
    safe_order_by,
)
from bastion.query import sqlalchemy as query_sa

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

    from bastion.testing.postgres_server import PostgresServer

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(40)),
    sa.Column("price", sa.Integer),
    sa.Column("secret", sa.String(40)),
)
ROWS = [
    {"id": 1, "name": "50% off", "price": 30, "secret": "s1"},
    {"id": 2, "name": "500 off", "price": 10, "secret": "s2"},
    {"id": 3, "name": "a_b", "price": 20, "secret": "s3"},
    {"id": 4, "name": "axb", "price": 20, "secret": "s4"},
    {"id": 5, "name": "C:\\dir", "price": 50, "secret": "s5"},
    {"id": 6, "name": "C:dir", "price": 40, "secret": "s6"},
]
SORTABLE = OrderColumns(columns={"name": "name", "price": "items.price", "id": "id"}, default="id")


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('query') / 'items.sqlite3'}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def postgres_engine(postgres: PostgresServer) -> Iterator[Engine]:
    engine = sa.create_engine(postgres.sqlalchemy_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest) -> Engine:
    found: Engine = request.getfixturevalue(f"{request.param}_engine")
    metadata.drop_all(found)
    metadata.create_all(found)
    with found.begin() as conn:
        conn.execute(items.insert(), ROWS)
    return found


# -- sort orders ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "sql"),
    [
        ("name", "name ASC"),
        ("-price", "items.price DESC"),
        ("+price", "items.price ASC"),
        (" price ", "items.price ASC"),  # "+price" in a query string arrives as " price"
        ("price desc", "items.price DESC"),
        ("price DESC", "items.price DESC"),
        ("price:asc", "items.price ASC"),
        ("-price,name", "items.price DESC, name ASC"),
        ("price desc, id", "items.price DESC, id ASC"),
        ("", "id ASC"),  # the default
        ("   ", "id ASC"),
        (None, "id ASC"),
    ],
)
def test_accepted_spellings(requested: str | None, sql: str) -> None:
    order = SORTABLE.parse(requested)
    assert order.sql == sql
    assert str(order) == sql


@pytest.mark.parametrize(
    ("requested", "reason"),
    [
        ("secret", "unknown_column"),
        ("NAME", "unknown_column"),  # names match exactly
        ("name; DROP TABLE items", "malformed"),
        ("name;DROP TABLE items--", "malformed"),
        ("(SELECT secret FROM items LIMIT 1)", "malformed"),
        ("CASE WHEN 1=1 THEN name ELSE price END", "malformed"),
        ("name desc nulls first", "malformed"),
        ("1", "unknown_column"),
        ("name--", "unknown_column"),
        ("name/**/desc", "unknown_column"),
        ("name:sideways", "malformed"),
        ("-price desc", "malformed"),
        ("--price", "malformed"),
        ("name,", "malformed"),
        (",name", "malformed"),
        ("name,name desc", "duplicate_column"),
        ("name,price,id,name", "too_many_terms"),
        ("name" * 100, "too_long"),
        ("name\x00", "unknown_column"),
    ],
)
def test_refusals_carry_a_reason_and_never_echo_the_request(requested: str, reason: str) -> None:
    with pytest.raises(UnsafeOrderBy) as caught:
        SORTABLE.parse(requested)
    assert caught.value.reason == reason
    assert isinstance(caught.value, BadData)  # a 400 for the app, never a 500
    if len(requested) > 5:
        assert requested not in str(caught.value)


def test_the_guide_shape_and_its_default() -> None:
    assert safe_order_by("-title", ["title", "created"]).sql == "title DESC"
    assert safe_order_by(None, {"new": "created_at"}, default="-new").sql == "created_at DESC"
    assert not safe_order_by("", ["title"])  # no default: an empty order, falsy
    assert safe_order_by("", ["title"]).sql == ""
    with pytest.raises(UnsafeOrderBy) as caught:
        safe_order_by(b"title", ["title"])  # type: ignore[arg-type]
    assert caught.value.reason == "not_text"
    assert safe_order_by("a,b", ["a", "b"], max_terms=2).sql == "a ASC, b ASC"


@pytest.mark.parametrize(
    ("options", "setting", "message"),
    [
        ({"columns": {"name": "name; DROP TABLE x"}}, "allowed_columns", "not a plain SQL"),
        ({"columns": {"name": "lower(name)"}}, "allowed_columns", "not a plain SQL identifier"),
        ({"columns": {"-name": "name"}}, "allowed_columns", "is not a sort name"),
        ({"columns": ["a b"]}, "allowed_columns", "is not a sort name"),
        ({"columns": []}, "allowed_columns", "names no column"),
        ({"columns": ["a"], "default": "b"}, "default", "reason unknown_column"),
        ({"columns": ["a"], "max_terms": 0}, "max_terms", "positive integer"),
        ({"columns": ["a"], "max_terms": True}, "max_terms", "positive integer"),
    ],
)
def test_a_bad_allow_list_is_refused_when_built(
    options: dict[str, Any], setting: str, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        OrderColumns(**options)
    assert caught.value.setting == setting


IDENTIFIERS = {"name", "items.price", "id"}


REQUESTS = st.text(max_size=60) | st.from_regex(r"[-+]?(name|price|id|x)( (asc|desc))?")
REASONS = {"malformed", "unknown_column", "duplicate_column", "too_many_terms", "too_long"}


@given(REQUESTS)
def test_any_request_is_refused_or_writes_only_the_apps_identifiers(requested: str) -> None:
    refused: UnsafeOrderBy | None = None
    try:
        order = SORTABLE.parse(requested)
    except UnsafeOrderBy as error:
        refused = error
    if refused is not None:
        assert refused.reason in REASONS
        return
    for term in order.sql.split(", "):
        column, direction = term.split(" ")
        assert column in IDENTIFIERS
        assert direction in {"ASC", "DESC"}


def test_order_by_runs_on_the_database(engine: Engine) -> None:
    def ids(requested: str | None) -> list[int]:
        order = SORTABLE.parse(requested)
        with engine.connect() as conn:
            return list(conn.scalars(sa.text(f"SELECT id FROM items ORDER BY {order.sql}")))

    assert ids(None) == [1, 2, 3, 4, 5, 6]
    assert ids("-price,id") == [5, 6, 1, 3, 4, 2]
    assert ids("price desc, -id") == [5, 6, 1, 4, 3, 2]


def test_the_sqlalchemy_form_runs_on_the_database(engine: Engine) -> None:
    sortable = {"name": items.c.name, "price": items.c.price, "id": items.c.id}

    def ids(requested: str | None, default: str | None = "id") -> list[int]:
        clauses = query_sa.safe_order_by(requested, sortable, default=default)
        with engine.connect() as conn:
            return list(conn.scalars(sa.select(items.c.id).order_by(*clauses)))

    assert ids(None) == [1, 2, 3, 4, 5, 6]
    assert ids("-price, id") == [5, 6, 1, 3, 4, 2]
    assert ids("price:desc,id:desc") == [5, 6, 1, 4, 3, 2]
    # columns named by their key, no mapping
    by_key = query_sa.safe_order_by("-price", [items.c.price, items.c.id])
    assert [str(clause) for clause in by_key] == ["items.price DESC"]
    with pytest.raises(UnsafeOrderBy) as caught:
        query_sa.safe_order_by("secret", sortable)
    assert caught.value.reason == "unknown_column"
    with pytest.raises(UnsafeOrderBy) as caught:
        query_sa.safe_order_by("price; DROP TABLE items", sortable)
    assert caught.value.reason == "malformed"
    assert query_sa.safe_order_by("", sortable) == ()


@pytest.mark.parametrize(
    ("columns", "default", "message"),
    [
        ({"name": "items.name"}, None, "must be a SQLAlchemy column or expression, not str"),
        ([sa.text("name")], None, "has no name; pass a mapping"),
        ({"name": items.c.name}, "secret", "reason unknown_column"),
    ],
)
def test_the_sqlalchemy_form_refuses_a_bad_allow_list(
    columns: Any, default: str | None, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        query_sa.safe_order_by(None, columns, default=default)
    assert caught.value.setting in {"allowed_columns", "default"}


# -- LIKE -----------------------------------------------------------------------------------


def test_escape_like_exact_outputs() -> None:
    assert escape_like("50%") == "50\\%"
    assert escape_like("a_b") == "a\\_b"
    assert escape_like("C:\\dir") == "C:\\\\dir"
    assert escape_like("100%_!", escape="!") == "100!%!_!!"
    assert like_contains("%") == "%\\%%"
    assert like_prefix("_") == "\\_%"
    assert like_suffix("x") == "%x"
    with pytest.raises(ConfigurationError, match="one character other than") as caught:
        escape_like("x", escape="%")
    assert caught.value.setting == "escape"
    with pytest.raises(TypeError, match="escape_like takes text"):
        escape_like(5)  # type: ignore[arg-type]


@given(st.text(alphabet="ab%_\\!", max_size=12), st.text(alphabet="ab%_\\!", max_size=12))
def test_an_escaped_pattern_matches_only_literal_text(needle: str, haystack: str) -> None:
    """The LIKE semantics modelled as a regex: an escaped needle matches exactly where the
    literal text occurs."""
    pattern = like_contains(needle)
    regex, position = "", 0
    while position < len(pattern):
        char = pattern[position]
        if char == "\\":
            regex += re.escape(pattern[position + 1])
            position += 2
            continue
        regex += {"%": ".*", "_": "."}.get(char, re.escape(char))
        position += 1
    assert bool(re.fullmatch(regex, haystack, flags=re.DOTALL)) == (needle in haystack)


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("50%", [1]),
        ("%", [1]),
        ("_", [3]),
        ("a_b", [3]),
        ("C:\\", [5]),
        ("\\", [5]),
        ("off", [1, 2]),
        ("' OR '1'='1", []),
    ],
)
def test_like_finds_literal_text_on_the_database(
    engine: Engine, search: str, expected: list[int]
) -> None:
    query = sa.text("SELECT id FROM items WHERE name LIKE :pattern ESCAPE '\\' ORDER BY id")
    with engine.connect() as conn:
        found = list(conn.scalars(query, {"pattern": like_contains(search)}))
        assert found == expected
        # SQLAlchemy's own autoescape agrees
        same = conn.scalars(
            sa.select(items.c.id).where(items.c.name.contains(search, autoescape=True))
        )
        assert sorted(same) == expected
        # unescaped, the wildcards match far more: what escape_like prevents
        if search in {"%", "_"}:
            everything = conn.scalars(query, {"pattern": f"%{search}%"})
            assert len(list(everything)) == len(ROWS)


def test_without_sqlalchemy_the_error_names_the_extra() -> None:
    program = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "import bastion.query as q\n"
        "assert q.escape_like('%') == '\\\\%'\n"  # the plain helpers need no extra
        "import bastion.query.sqlalchemy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 1
    assert (
        "ImportError: bastion.query.sqlalchemy needs SQLAlchemy: "
        "pip install 'bastion[sqlalchemy]'" in result.stderr
    )
