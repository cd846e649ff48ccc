"""Pictures of a database for :mod:`bastion.testing.sqli`: compare two, and a stacked ``DROP``
or ``DELETE`` shows, as does a stacked ``CREATE TRIGGER`` or ``CREATE VIEW`` (a trigger is how
an injection outlives the request: it runs on the app's next write)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["SCHEMA_OBJECTS", "sqlalchemy_snapshot", "sqlite_snapshot"]


def _rows(rows: Iterable[Sequence[object]]) -> tuple[tuple[object, ...], ...]:
    return tuple(sorted((tuple(row) for row in rows), key=repr))


SCHEMA_OBJECTS = "(triggers and views)"
"""The name of the snapshot entry that lists a database's triggers and views (present only when
it has some, so a database without any pictures as its tables alone)."""

_SQLITE_OBJECTS = (
    "SELECT type, name, tbl_name, sql FROM sqlite_master "
    "WHERE type IN ('trigger', 'view') ORDER BY type, name"
)
_POSTGRES_OBJECTS = (
    "SELECT 'trigger', trigger_name, event_object_table, action_statement "
    "FROM information_schema.triggers WHERE trigger_schema = current_schema() "
    "UNION ALL SELECT 'view', table_name, table_name, view_definition "
    "FROM information_schema.views WHERE table_schema = current_schema() ORDER BY 1, 2"
)


def _with_objects(
    found: Sequence[tuple[str, object]], objects: Iterable[Sequence[object]]
) -> tuple[tuple[str, object], ...]:
    rows = _rows(objects)
    return (*found, (SCHEMA_OBJECTS, rows)) if rows else tuple(found)


def sqlite_snapshot(path: str, *, tables: Sequence[str] | None = None) -> Callable[[], object]:
    """A snapshot of a SQLite file: every table's name and sorted rows, then its triggers and
    views (stdlib ``sqlite3``).

    ``tables`` limits it to those tables (leave out the ones the endpoints write on purpose); a
    dropped one still shows, as missing.
    """

    def take() -> object:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            if tables is not None:
                names = [name for name in names if name in tables]
            found = []
            for name in names:
                quoted = '"' + name.replace('"', '""') + '"'  # a name from sqlite_master
                found.append((name, _rows(conn.execute(f"SELECT * FROM {quoted}"))))  # noqa: S608
            return _with_objects(found, conn.execute(_SQLITE_OBJECTS))

    return take


def sqlalchemy_snapshot(
    engine: Any, *, tables: Sequence[str] | None = None, schema: str | None = None
) -> Callable[[], object]:
    """A snapshot through a SQLAlchemy engine (SQLite, PostgreSQL, ...): every table's name and
    sorted rows, read afresh each time (a dropped table shows), then, on SQLite and PostgreSQL,
    the triggers and views (of ``schema``'s search path on PostgreSQL). ``tables`` as for
    :func:`sqlite_snapshot`. Needs SQLAlchemy."""
    import sqlalchemy as sa  # noqa: PLC0415 (only this helper needs the extra)

    def take() -> object:
        with engine.connect() as conn:
            quote_name = conn.dialect.identifier_preparer.quote
            names = sorted(sa.inspect(conn).get_table_names(schema=schema))
            found = []
            for name in names:
                if tables is not None and name not in tables:
                    continue
                qualified = (
                    quote_name(name)
                    if schema is None
                    else f"{quote_name(schema)}.{quote_name(name)}"
                )
                rows = conn.execute(sa.text(f"SELECT * FROM {qualified}"))  # noqa: S608 (quoted names)
                found.append((name, _rows(rows)))
            dialect = conn.dialect.name
            if dialect == "sqlite":
                return _with_objects(found, conn.execute(sa.text(_SQLITE_OBJECTS)))
            if dialect == "postgresql":
                return _with_objects(found, conn.execute(sa.text(_POSTGRES_OBJECTS)))
            return tuple(found)

    return take
