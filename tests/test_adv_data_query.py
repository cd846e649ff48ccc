"""Adversarial checks of the query helpers on real SQLite and PostgreSQL: ``escape_like`` with
its own escape character, ``%`` and ``_`` in every position, under both databases' ``LIKE``
rules (SQLite has no default escape character, PostgreSQL's is the backslash); and sort
requests that try look-alike letters, odd whitespace, case, signs and NULLS clauses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import ConfigurationError
from bastion.query import (
    OrderColumns,
    UnsafeOrderBy,
    escape_like,
    like_contains,
    like_prefix,
    like_suffix,
    safe_order_by,
)
from bastion.query.sqlalchemy import safe_order_by as sa_order_by

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

TITLES = (
    "50% off",
    "50 off",
    "5000 off",
    "a_b",
    "axb",
    "back\\slash",
    "back\\\\slash",
    "backslash",
    "100%",
    "100",
    "%",
    "_",
    "\\",
    "\\%",
    "!x",
    "#",
    "end\\",
    "ß and ss",
    "",
)
metadata = sa.MetaData()
posts = sa.Table(
    "adv_like_posts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("title", sa.String(40), nullable=False),
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    else:
        path = tmp_path_factory.mktemp("adv-like") / "like.sqlite3"
        engine = sa.create_engine(f"sqlite:///{path}")
    metadata.drop_all(engine)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(posts.insert(), [{"id": i, "title": t} for i, t in enumerate(TITLES, 1)])
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


def titles(db: Engine, sql: str, pattern: str) -> set[str]:
    with db.connect() as conn:
        return set(conn.execute(sa.text(sql), {"p": pattern}).scalars())


LIKE = "SELECT title FROM adv_like_posts WHERE title LIKE :p ESCAPE '\\'"
SEARCHES = ("%", "_", "\\", "\\%", "50%", "a_b", "back\\slash", "\\\\", "end\\", "!", "#", "ß")


@pytest.mark.parametrize("search", SEARCHES)
def test_like_contains_matches_exactly_the_rows_containing_the_text(
    db: Engine, search: str
) -> None:
    assert titles(db, LIKE, like_contains(search)) == {t for t in TITLES if search in t}


@pytest.mark.parametrize("search", SEARCHES)
def test_prefix_suffix_and_exact_patterns(db: Engine, search: str) -> None:
    assert titles(db, LIKE, like_prefix(search)) == {t for t in TITLES if t.startswith(search)}
    assert titles(db, LIKE, like_suffix(search)) == {t for t in TITLES if t.endswith(search)}
    assert titles(db, LIKE, escape_like(search)) == ({search} & set(TITLES))


@pytest.mark.parametrize("escape", ["!", "#", "^"])
def test_another_escape_character_works_when_the_query_names_it(db: Engine, escape: str) -> None:
    sql = f"SELECT title FROM adv_like_posts WHERE title LIKE :p ESCAPE '{escape}'"
    for search in ("%", "_", escape, escape + "x", "\\"):
        pattern = "%" + escape_like(search, escape) + "%"
        assert titles(db, sql, pattern) == {t for t in TITLES if search in t}, search


def test_postgresql_default_escape_is_the_backslash_sqlite_has_none(db: Engine) -> None:
    bare = "SELECT title FROM adv_like_posts WHERE title LIKE :p"
    found = titles(db, bare, like_contains("%"))
    if db.dialect.name == "postgresql":
        assert found == {"50% off", "100%", "%", "\\%"}
    else:  # "%\%%" is any text with a backslash in it: the ESCAPE clause is needed
        assert found == {"back\\slash", "back\\\\slash", "\\", "\\%", "end\\"}


def test_sqlalchemy_autoescape_agrees(db: Engine) -> None:
    for search in SEARCHES:
        query = sa.select(posts.c.title).where(posts.c.title.contains(search, autoescape=True))
        with db.connect() as conn:
            assert set(conn.execute(query).scalars()) == {t for t in TITLES if search in t}


def test_escape_like_refuses_escape_characters_that_would_be_wildcards() -> None:
    for escape in ("%", "_", "'", "", "ab"):
        with pytest.raises(ConfigurationError) as caught:
            escape_like("x", escape)
        assert caught.value.setting == "escape"
    with pytest.raises(TypeError):
        escape_like(b"x")  # type: ignore[arg-type]
    assert escape_like("\\%_\\") == "\\\\\\%\\_\\\\"


# -- ORDER BY -----------------------------------------------------------------------------

COLUMNS = OrderColumns(
    columns={"title": "posts.title", "created": "created_at"}, default="-created"
)


@pytest.mark.parametrize(
    "requested",
    [
        "t\u0131tle",  # dotless i
        "titl\u0435",  # Cyrillic e
        "\uff54\uff49\uff54\uff4c\uff45",  # fullwidth
        "title\u200b",  # zero-width space
        "Title",
        "TITLE",
        "title nulls first",
        "title desc nulls last",
        "title collate nocase",
        "title;",
        "title--",
        "-title desc",
        "+-title",
        "--title",
        "title desc desc",
        "title,title",
        "title, -title",
        "title,",
        ",title",
        "title,,created",
        "title:desc:asc",
        "title:up",
        "posts.title",
        "created_at",
        "(title)",
        "title\x00",
        "1",
    ],
)
def test_sort_requests_outside_the_allow_list_are_refused(requested: str) -> None:
    with pytest.raises(UnsafeOrderBy) as caught:
        COLUMNS.parse(requested)
    assert caught.value.reason in {"malformed", "unknown_column", "duplicate_column"}
    assert requested not in str(caught.value) or requested in {"title", "created"}


@pytest.mark.parametrize(
    ("requested", "sql"),
    [
        ("title", "posts.title ASC"),
        ("-title", "posts.title DESC"),
        ("+title", "posts.title ASC"),
        (" title DESC ", "posts.title DESC"),
        ("title\tdesc", "posts.title DESC"),
        ("title:DeSc", "posts.title DESC"),
        ("title\u00a0desc", "posts.title DESC"),  # Unicode space: a separator, nothing more
        ("title , -created", "posts.title ASC, created_at DESC"),
        ("", "created_at DESC"),
        ("   ", "created_at DESC"),
    ],
)
def test_accepted_sort_requests_write_only_the_apps_identifiers(requested: str, sql: str) -> None:
    assert COLUMNS.parse(requested).sql == sql


def test_sort_request_limits() -> None:
    with pytest.raises(UnsafeOrderBy) as caught:
        COLUMNS.parse("title," * 200)
    assert caught.value.reason == "too_long"
    with pytest.raises(UnsafeOrderBy) as caught:
        safe_order_by("title,created,title", ["title", "created"], max_terms=2)
    assert caught.value.reason == "too_many_terms"
    with pytest.raises(UnsafeOrderBy) as caught:
        COLUMNS.parse(["title"])  # type: ignore[arg-type]
    assert caught.value.reason == "not_text"


def test_an_allow_list_that_could_write_sql_is_refused() -> None:
    for identifier in ("title desc", "title; drop", "(select 1)", "a.b.c", "t\u0131tle", "1col"):
        with pytest.raises(ConfigurationError):
            OrderColumns(columns={"title": identifier})
    with pytest.raises(ConfigurationError):
        sa_order_by("title", {"title": "posts.title"})  # type: ignore[dict-item]


def test_sqlalchemy_form_sorts_on_both_databases(db: Engine) -> None:
    allowed = {"title": posts.c.title, "id": posts.c.id}
    query = sa.select(posts.c.id).order_by(*sa_order_by("-id", allowed)).limit(3)
    with db.connect() as conn:
        assert list(conn.execute(query).scalars()) == [
            len(TITLES),
            len(TITLES) - 1,
            len(TITLES) - 2,
        ]
    with pytest.raises(UnsafeOrderBy) as caught:
        sa_order_by("id nulls first", allowed)
    assert caught.value.reason == "malformed"


ALPHABET = st.text(alphabet="%_\\!ab", max_size=6)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(search=ALPHABET, text=ALPHABET)
def test_like_patterns_agree_with_python_on_random_text(db: Engine, search: str, text: str) -> None:
    sql = (
        "SELECT :t LIKE :c ESCAPE '\\', :t LIKE :p ESCAPE '\\', "
        ":t LIKE :s ESCAPE '\\', :t LIKE :e ESCAPE '\\'"
    )
    params = {
        "t": text,
        "c": like_contains(search),
        "p": like_prefix(search),
        "s": like_suffix(search),
        "e": escape_like(search),
    }
    with db.connect() as conn:
        row = conn.execute(sa.text(sql), params).one()
    assert tuple(bool(v) for v in row) == (
        search in text,
        text.startswith(search),
        text.endswith(search),
        text == search,
    )


def test_sqlalchemy_form_checks_its_default_on_every_call_not_only_on_empty_requests() -> None:
    allowed = {"title": posts.c.title}
    with pytest.raises(ConfigurationError) as caught:
        sa_order_by("title", allowed, default="-created")  # a typo'd default, request given
    assert caught.value.setting == "default"
    with pytest.raises(ConfigurationError):
        sa_order_by("", allowed, default="-created")
    [term] = sa_order_by(None, allowed, default="-title")
    assert str(term.compile()) == "adv_like_posts.title DESC"
