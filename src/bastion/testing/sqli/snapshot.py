"""Pictures of a database for :mod:`bastion.testing.sqli`: compare two, and a stacked ``DROP``
or ``DELETE`` shows."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["sqlalchemy_snapshot", "sqlite_snapshot"]


def _rows(rows: Iterable[Sequence[object]]) -> tuple[tuple[object, ...], ...]:
    return tuple(sorted((tuple(row) for row in rows), key=repr))


def sqlite_snapshot(path: str, *, tables: Sequence[str] | None = None) -> Callable[[], object]:
    """A snapshot of a SQLite file: every table's name and sorted rows (stdlib ``sqlite3``).

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
            return tuple(found)

    return take


def sqlalchemy_snapshot(
    engine: Any, *, tables: Sequence[str] | None = None, schema: str | None = None
) -> Callable[[], object]:
    """A snapshot through a SQLAlchemy engine (SQLite, PostgreSQL, ...): every table's name and
    sorted rows, read afresh each time (a dropped table shows). ``tables`` as for
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
            return tuple(found)

    return take
