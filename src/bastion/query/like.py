"""``LIKE`` patterns from user text: the wildcards escaped, so a search for ``50%`` finds "50%".

A bound parameter stops injection, but inside ``LIKE`` the value is still a *pattern*: ``%`` and
``_`` in a user's search match anything, so ``%`` lists every row and ``_%_%_%...`` makes the
database do needless work. :func:`escape_like` makes every character literal; the query must
name the escape character, on every database (SQLite has no default escape; PostgreSQL's is the
backslash, MySQL's too)::

    cursor.execute("SELECT id FROM posts WHERE title LIKE ? ESCAPE '\\'", (like_contains(q),))

With SQLAlchemy, ``column.contains(q, autoescape=True)`` does the same.
"""

from __future__ import annotations

from typing import Final

from bastion.errors import ConfigurationError

__all__ = ["ESCAPE", "escape_like", "like_contains", "like_prefix", "like_suffix"]

ESCAPE: Final = "\\"
"""The escape character the patterns use: write ``ESCAPE '\\'`` after ``LIKE``."""


def escape_like(value: str, escape: str = ESCAPE) -> str:
    """``value`` with ``%``, ``_`` and the escape character itself preceded by ``escape``.

    The result matches exactly ``value`` under ``LIKE ... ESCAPE '<escape>'``; add wildcards
    around it (or use :func:`like_contains` and friends). Still pass it as a bound parameter:
    escaping wildcards is not quoting.
    """
    if not isinstance(value, str):
        raise TypeError(f"escape_like takes text (str), not {type(value).__name__}")
    if not isinstance(escape, str) or len(escape) != 1 or escape in "%_'":
        raise ConfigurationError(
            "escape must be one character other than '%', '_' and a quote", setting="escape"
        )
    return (
        value.replace(escape, escape + escape).replace("%", escape + "%").replace("_", escape + "_")
    )


def like_contains(value: str) -> str:
    """A pattern matching text that contains ``value`` (escape character :data:`ESCAPE`)."""
    return f"%{escape_like(value)}%"


def like_prefix(value: str) -> str:
    """A pattern matching text that starts with ``value`` (escape character :data:`ESCAPE`)."""
    return f"{escape_like(value)}%"


def like_suffix(value: str) -> str:
    """A pattern matching text that ends with ``value`` (escape character :data:`ESCAPE`)."""
    return f"%{escape_like(value)}"
