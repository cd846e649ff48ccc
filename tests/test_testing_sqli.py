"""bastion.testing.sqli against real apps over real databases: the safe shop (parameterised
queries, OrderColumns, escaped LIKE) passes as Starlette and Flask apps on SQLite and PostgreSQL;
the f-string shop is caught (500s, leaked rows, leaked SQL errors, a dropped table), each finding
asserted exactly. Apps in tests/sqli_apps.py."""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from starlette.exceptions import StarletteDeprecationWarning
from tests.sql_support import postgres_fixture  # noqa: F401 (the postgres fixture)
from tests.sqli_apps import (
    CANARY,
    SafeShop,
    VulnerableShop,
    flask_app,
    reset,
    starlette_app,
)

with warnings.catch_warnings():
    # Starlette announces a move of its test client to httpx2 at import time (as in
    # tests/test_csrf_asgi.py); only that import-time notice is silenced.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion.errors import ConfigurationError
from bastion.testing.sqli import (
    PAYLOADS,
    SCHEMA_OBJECTS,
    TABLE_PAYLOADS,
    Answer,
    Finding,
    SqliReport,
    Target,
    probe_sql_injection,
    sqlalchemy_snapshot,
    sqlite_snapshot,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

    from sqlalchemy.engine import Engine

    from bastion.testing.postgres_server import PostgresServer

TARGETS = (
    Target(
        path="/items",
        query=("owner", "q", "sort"),
        values={"owner": "alice", "q": "", "sort": "name"},
    ),
    Target(path="/items/{item_id}", values={"item_id": "1"}),
    Target(
        path="/notes", method="POST", form=("owner", "note"), values={"owner": "a", "note": "hi"}
    ),
)
POINTS = 3 + 1 + 2
CORPUS = len(PAYLOADS) + len(TABLE_PAYLOADS)  # tables=("items",)
EXPECTED_REQUESTS = len(TARGETS) + POINTS * CORPUS


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('sqli') / 'shop.sqlite3'}")
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
    reset(found)
    return found


@contextmanager
def client_for(framework: str, shop: SafeShop | VulnerableShop) -> Iterator[Any]:
    if framework == "starlette":
        # entered: one event-loop portal for the whole probe, not one per request
        with TestClient(starlette_app(shop), raise_server_exceptions=False) as client:
            yield client
    else:
        yield flask_app(shop).test_client()


def probe(client: Any, engine: Engine) -> SqliReport:
    return probe_sql_injection(
        client,
        TARGETS,
        snapshot=sqlalchemy_snapshot(engine, tables=("items",)),
        canaries=(CANARY,),
        tables=("items",),
        columns=("owner",),
    )


def where(report: SqliReport, problem: str) -> set[tuple[str, str]]:
    return {(f.target, f.where) for f in report.findings if f.problem == problem}


def first(report: SqliReport, problem: str, place: str) -> Finding:
    return next(f for f in report.findings if f.problem == problem and f.where == place)


@pytest.mark.parametrize("framework", ["starlette", "flask"])
def test_the_safe_shop_passes(framework: str, engine: Engine) -> None:
    with client_for(framework, SafeShop(engine)) as client:
        report = probe(client, engine)
    report.assert_clean()
    assert report.ok
    assert report.requests == EXPECTED_REQUESTS
    assert set(report.statuses) <= {200, 201, 400, 404}
    assert report.statuses[400] >= CORPUS - 2  # sort payloads refused by the allow-list
    assert report.statuses[404] >= CORPUS - 2  # item ids that are not numbers
    with engine.connect() as conn:  # the notes endpoint stored every payload as plain text
        stored = set(conn.scalars(sa.text("SELECT note FROM notes")))
        assert stored >= {"'; DROP TABLE items; --", "'" * 300}
        assert conn.scalar(sa.text("SELECT count(*) FROM items")) == 3


@pytest.mark.parametrize(
    ("framework", "database"), [("starlette", "sqlite"), ("flask", "postgres")]
)
def test_the_vulnerable_shop_is_caught(
    framework: str, database: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(f"{database}_engine")
    reset(engine)
    with client_for(framework, VulnerableShop(engine)) as client:
        report = probe(client, engine)
    assert not report.ok
    quote = first(report, "server_error", "query:owner")
    assert (quote.payload, quote.status) == ("'", 500)
    leak = first(report, "canary_leaked", "query:owner")
    assert leak.payload == "' OR '1'='1"
    assert leak.detail == f"the answer contains {CANARY!r}"
    shown = first(report, "error_leaked", "path:item_id")
    assert (shown.payload, shown.status) == ("'", 400)
    expected = (
        "unterminated quoted" if engine.dialect.name == "postgresql" else "unrecognized token"
    )
    assert shown.detail == f"the answer shows {expected!r}"
    assert ("GET /items", "query:sort") in where(report, "server_error")
    changed = [f for f in report.findings if f.problem == "database_changed"]
    assert changed, "a stacked DROP TABLE must be seen"
    if engine.dialect.name == "postgresql":  # psycopg runs stacked statements in a plain execute
        assert (changed[0].where, changed[0].payload) == ("query:owner", "'; DROP TABLE items; --")
    else:  # sqlite3 runs one statement per execute(); the notes endpoint uses executescript
        assert (changed[0].where, changed[0].payload) == ("form:note", "'); DROP TABLE items; --")
    with pytest.raises(AssertionError, match=r"SQL injection probe: \d+ finding\(s\) in \d+"):
        report.assert_clean()


def test_a_raising_test_client_counts_as_a_server_error(sqlite_engine: Engine) -> None:
    reset(sqlite_engine)
    client = TestClient(starlette_app(VulnerableShop(sqlite_engine)))  # re-raises app errors
    report = probe_sql_injection(client, [TARGETS[0]], payloads=["'"])
    assert report.findings[0] == Finding(
        "server_error", "GET /items", "query:owner", "'", None, "the client raised OperationalError"
    )
    assert str(report.findings[0]) == (
        'server_error at GET /items query:owner (no answer) with "\'": '
        "the client raised OperationalError"
    )


def test_a_probe_of_a_wrong_path_cannot_pass(sqlite_engine: Engine) -> None:
    reset(sqlite_engine)
    client = TestClient(starlette_app(SafeShop(sqlite_engine)))
    report = probe_sql_injection(
        client, [Target(path="/itemz", query=("owner",), values={"owner": "a"})], payloads=["'"]
    )
    assert report.findings[0].problem == "baseline_failed"
    assert report.findings[0].status == 404


def test_redirects_are_findings_unless_allowed() -> None:
    def sender(method: str, path: str, **parts: Mapping[str, str] | None) -> Answer:
        return Answer(303 if parts["query"] and parts["query"].get("x") == "'" else 200, "ok")

    target = Target(path="/r", query=("x",), values={"x": "1"})
    report = probe_sql_injection(sender, [target], payloads=["'", "1"])
    assert [(f.problem, f.status, f.payload) for f in report.findings] == [
        ("unexpected_status", 303, "'")
    ]
    assert probe_sql_injection(sender, [target], payloads=["'"], redirects_ok=True).ok


def test_json_bodies_and_headers_are_sent(sqlite_engine: Engine) -> None:
    seen: list[tuple[Any, ...]] = []

    def sender(method: str, path: str, **parts: Any) -> Answer:
        seen.append((method, path, parts["json"], parts["form"], dict(parts["headers"])))
        return Answer(200, "[]")

    target = Target(
        path="/api/{kind}", method="put", json=("name",),
        values={"name": "n", "kind": "k"}, headers={"Authorization": "Bearer t"},
    )  # fmt: skip
    report = probe_sql_injection(sender, [target], payloads=["a/b'"])
    assert report.ok
    assert seen == [
        ("PUT", "/api/k", {"name": "n"}, None, {"Authorization": "Bearer t"}),
        ("PUT", "/api/a%2Fb%27", {"name": "n"}, None, {"Authorization": "Bearer t"}),
        ("PUT", "/api/k", {"name": "a/b'"}, None, {"Authorization": "Bearer t"}),
    ]


def test_the_sqlite_snapshot_sees_a_drop(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    reset(engine)
    take = sqlite_snapshot(str(path), tables=("items",))
    before = take()
    assert before == sqlalchemy_snapshot(engine, tables=("items",))()
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO notes (owner, note) VALUES ('a', 'b')"))
    assert take() == before  # notes is not watched
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE items"))
    assert take() == ()
    engine.dispose()


@pytest.mark.parametrize(
    ("options", "setting", "message"),
    [
        ({"path": "items", "query": ("q",), "values": {"q": ""}}, "path", "must start with '/'"),
        (
            {"path": "/x", "method": "TRACE", "query": ("q",), "values": {"q": ""}},
            "method",
            "one of",
        ),
        ({"path": "/x"}, "query", "nothing to inject into"),
        ({"path": "/x", "query": ("q",)}, "values", r"needs a benign value for \['q'\]"),
        (
            {"path": "/x", "form": ("a",), "json": ("b",), "values": {"a": "", "b": ""}},
            "json",
            "not both",
        ),
    ],
)
def test_a_bad_target_is_refused(options: dict[str, Any], setting: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        Target(**options)
    assert caught.value.setting == setting


def test_bad_probe_arguments() -> None:
    with pytest.raises(ConfigurationError, match="at least one Target"):
        probe_sql_injection(lambda *a, **k: Answer(200, ""), [])
    with pytest.raises(ConfigurationError, match="canaries must be non-empty"):
        probe_sql_injection(lambda *a, **k: Answer(200, ""), TARGETS, canaries=("",))
    with pytest.raises(TypeError, match="needs an httpx-style client"):
        probe_sql_injection(object(), TARGETS)


def test_the_snapshots_see_a_stacked_trigger_or_view(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite3"
    engine = sa.create_engine(f"sqlite:///{path}")
    reset(engine)
    take = sqlite_snapshot(str(path), tables=("items",))
    before = take()
    assert all(name != SCHEMA_OBJECTS for name, _ in before)  # none yet: the tables alone
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TRIGGER leak AFTER INSERT ON notes BEGIN UPDATE items SET name = 'x'; END"
            )
        )
    after = take()
    assert after != before
    assert after == sqlalchemy_snapshot(engine, tables=("items",))()
    (objects,) = [rows for name, rows in after if name == SCHEMA_OBJECTS]
    assert [row[:3] for row in objects] == [("trigger", "leak", "notes")]
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER leak"))
        conn.execute(sa.text("CREATE VIEW everything AS SELECT * FROM items"))
    assert [row[:2] for row in dict(take())[SCHEMA_OBJECTS]] == [("view", "everything")]
    engine.dispose()


def test_the_postgres_snapshot_sees_a_stacked_trigger(postgres_engine: Engine) -> None:
    reset(postgres_engine)
    take = sqlalchemy_snapshot(postgres_engine, tables=("items",))
    before = take()
    with postgres_engine.begin() as conn:
        conn.execute(sa.text("DROP VIEW IF EXISTS everything"))
        conn.execute(
            sa.text(
                "CREATE OR REPLACE FUNCTION leak() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN UPDATE items SET name = 'x'; RETURN NEW; END $$"
            )
        )
        conn.execute(
            sa.text(
                "CREATE TRIGGER leak AFTER INSERT ON notes FOR EACH ROW EXECUTE FUNCTION leak()"
            )
        )
    try:
        after = take()
        assert after != before
        (objects,) = [rows for name, rows in after if name == SCHEMA_OBJECTS]
        assert [row[:3] for row in objects] == [("trigger", "leak", "notes")]
    finally:
        with postgres_engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER IF EXISTS leak ON notes"))
            conn.execute(sa.text("DROP FUNCTION IF EXISTS leak()"))
    assert take() == before
