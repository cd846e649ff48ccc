"""The SQLAlchemy form of :func:`bastion.query.safe_order_by`: clauses for ``.order_by(*...)``.

::

    SORTABLE = {"title": posts.c.title, "created": posts.c.created_at}
    query = select(posts).order_by(*safe_order_by(request.args.get("sort"), SORTABLE,
                                                  default="-created"))

The request is parsed by the same rules as the plain form (``bastion.query.order``); only the
app's column objects reach the statement. Strings are refused as columns: a string here would
become SQL text. For ``LIKE``, SQLAlchemy's own ``column.contains(q, autoescape=True)`` escapes
the wildcards.

Needs the ``sqlalchemy`` extra (``pip install 'bastion[sqlalchemy]'``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bastion.errors import ConfigurationError
from bastion.query.order import UnsafeOrderBy, check_public_names, parse_order

try:
    import sqlalchemy as sa
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "bastion.query.sqlalchemy needs SQLAlchemy: pip install 'bastion[sqlalchemy]'"
    ) from exc

__all__ = ["safe_order_by"]

Columns = Mapping[str, "sa.ColumnElement[Any]"] | Iterable["sa.ColumnElement[Any]"]


def _named(allowed_columns: Columns) -> dict[str, sa.ColumnElement[Any]]:
    if isinstance(allowed_columns, Mapping):
        mapping = dict(allowed_columns)
    else:
        mapping = {}
        for column in allowed_columns:
            key = getattr(column, "key", None)
            if not isinstance(key, str):
                raise ConfigurationError(
                    f"allowed_columns: {column!r} has no name; pass a mapping "
                    "{request name: column}",
                    setting="allowed_columns",
                )
            mapping[key] = column
    check_public_names(mapping, "allowed_columns")
    for name, column in mapping.items():
        if not isinstance(column, sa.ColumnElement):
            raise ConfigurationError(
                f"allowed_columns[{name!r}] must be a SQLAlchemy column or expression, "
                f"not {type(column).__name__} (a string would be written into the SQL)",
                setting="allowed_columns",
            )
    return mapping


def safe_order_by(
    requested: str | None,
    allowed_columns: Columns,
    *,
    default: str | None = None,
    max_terms: int = 3,
) -> tuple[sa.UnaryExpression[Any], ...]:
    """``column.asc()`` / ``column.desc()`` for each column ``requested`` names; ``default``
    when the request is empty; :class:`~bastion.query.order.UnsafeOrderBy` (a ``BadData``, a
    400) when it names anything else. ``allowed_columns`` is a mapping from request names to
    columns, or columns (named by their ``key``)."""
    mapping = _named(allowed_columns)
    names = frozenset(mapping)
    fallback: tuple[tuple[str, bool], ...] = ()
    if default is not None:  # checked on every call: a bad default is the app's error, found
        try:  # on the first request, not on the first one that happens to send no sort
            fallback = parse_order(default, names, max_terms=max_terms)
        except UnsafeOrderBy as error:
            raise ConfigurationError(
                f"default: {error} (reason {error.reason})", setting="default"
            ) from error
    terms: tuple[tuple[str, bool], ...] = ()
    if requested is not None:
        terms = parse_order(requested, names, max_terms=max_terms)
    terms = terms or fallback
    return tuple(
        mapping[name].desc() if descending else mapping[name].asc() for name, descending in terms
    )
