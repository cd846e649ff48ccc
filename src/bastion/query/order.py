"""``ORDER BY`` from a request, through an allow-list.

A sort order cannot be a bound parameter: ``ORDER BY ?`` sorts by a constant. So the column has
to be written into the SQL text, and the one safe way to do that is to never write what the
request said: the request *names* a column, the name is looked up in an allow-list the app wrote,
and only the app's own identifier reaches the SQL. Anything else (an unknown name, an expression,
a subquery, a second statement) is refused with :class:`UnsafeOrderBy`, a
:class:`~bastion.errors.BadData` the app turns into a 400.

The allow-list is also a privacy decision: sorting by a column leaks its order even when the
column is never shown (sort by ``password_hash`` and page through the results, and the hashes'
order is known). List only the columns a user may sort by.

Accepted spellings, comma-separated (at most ``max_terms``): ``name``, ``-name`` (descending),
``+name``, ``name desc``, ``name asc``, ``name:desc``, ``name:asc`` (direction words in any case).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from bastion.errors import BadData, ConfigurationError

__all__ = [
    "OrderBy",
    "OrderColumns",
    "OrderTerm",
    "UnsafeOrderBy",
    "parse_order",
    "safe_order_by",
]

MAX_REQUEST: Final = 256
"""Longest sort request read (characters); a longer one is refused before it is split."""

_PUBLIC_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?")
_TERM: Final = re.compile(
    r"(?P<sign>[+\-]?)(?P<name>[^\s:,+\-][^\s:,]*)(?:(?:\s+|:)(?P<direction>[A-Za-z]+))?"
)


class UnsafeOrderBy(BadData):
    """A requested sort order is refused.

    ``reason`` is stable: ``"not_text"``, ``"too_long"``, ``"malformed"``, ``"unknown_column"``,
    ``"duplicate_column"`` or ``"too_many_terms"``. The request is not echoed (it is
    attacker-chosen); the message names the columns that may be used.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_order(
    requested: str, names: frozenset[str], *, max_terms: int
) -> tuple[tuple[str, bool], ...]:
    """``requested`` as ``(name, descending)`` pairs, every name one of ``names``.

    The shared parser of :class:`OrderColumns` and ``bastion.query.sqlalchemy``; an empty request
    gives ``()``.
    """
    if not isinstance(requested, str):
        raise UnsafeOrderBy("a sort order must be text", reason="not_text")
    if len(requested) > MAX_REQUEST:
        raise UnsafeOrderBy(f"a sort order is at most {MAX_REQUEST} characters", reason="too_long")
    if not requested.strip():
        return ()
    parts = requested.split(",")
    if len(parts) > max_terms:
        raise UnsafeOrderBy(f"at most {max_terms} sort columns", reason="too_many_terms")
    terms: list[tuple[str, bool]] = []
    for part in parts:
        found = _TERM.fullmatch(part.strip())
        direction = (found.group("direction") or "").lower() if found else "?"
        if found is None or direction not in {"", "asc", "desc"}:
            raise UnsafeOrderBy(
                "a sort column is written name, -name, 'name asc' or 'name desc'",
                reason="malformed",
            )
        name = found.group("name")
        if name not in names:
            raise UnsafeOrderBy(
                f"sorting is possible by {sorted(names)} only", reason="unknown_column"
            )
        if any(seen == name for seen, _ in terms):
            raise UnsafeOrderBy("a sort column is named twice", reason="duplicate_column")
        descending = found.group("sign") == "-"
        if direction:
            if found.group("sign"):
                raise UnsafeOrderBy(
                    "a sort column has a sign or a direction word, not both", reason="malformed"
                )
            descending = direction == "desc"
        terms.append((name, descending))
    return tuple(terms)


def check_public_names(names: Iterable[str], setting: str) -> frozenset[str]:
    """The allow-list's request-side names, checked (they are matched, never written to SQL)."""
    checked = frozenset(names)
    for name in sorted(checked):
        if not isinstance(name, str) or not _PUBLIC_NAME.fullmatch(name):
            raise ConfigurationError(
                f"{setting}: {name!r} is not a sort name (letters, digits, '_', '.', '-'; "
                "not starting with '-')",
                setting=setting,
            )
    if not checked:
        raise ConfigurationError(f"{setting} names no column", setting=setting)
    return checked


@dataclass(frozen=True, slots=True)
class OrderTerm:
    """One sort key: the request's ``name``, the app's SQL ``column``, the direction."""

    name: str
    column: str
    descending: bool = False

    @property
    def sql(self) -> str:
        return f"{self.column} {'DESC' if self.descending else 'ASC'}"


@dataclass(frozen=True, slots=True)
class OrderBy:
    """A checked sort order. ``sql`` is the text after ``ORDER BY`` (``""`` when empty): only
    the app's identifiers and ``ASC``/``DESC``, never a character of the request."""

    terms: tuple[OrderTerm, ...] = ()

    @property
    def sql(self) -> str:
        return ", ".join(term.sql for term in self.terms)

    def __str__(self) -> str:
        return self.sql

    def __bool__(self) -> bool:
        return bool(self.terms)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderColumns:
    """An allow-list of sort columns, checked once (build it at import time, use it per request).

    ``columns`` maps each name a request may use to the SQL identifier written for it
    (``column`` or ``table.column``); an iterable of names uses each name as its identifier.
    ``default`` (a request in the same spelling, e.g. ``"-created_at"``) is used when the
    request is empty or absent.
    """

    columns: Mapping[str, str] | Iterable[str]
    default: str | None = None
    max_terms: int = 3
    _columns: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _names: frozenset[str] = field(init=False, repr=False, compare=False)
    _default: OrderBy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        columns = self.columns
        mapping = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
        check_public_names(mapping, "allowed_columns")
        for name, identifier in mapping.items():
            if not isinstance(identifier, str) or not _IDENTIFIER.fullmatch(identifier):
                raise ConfigurationError(
                    f"allowed_columns[{name!r}]: {identifier!r} is not a plain SQL identifier "
                    "(column or table.column)",
                    setting="allowed_columns",
                )
        max_terms = self.max_terms
        if isinstance(max_terms, bool) or not isinstance(max_terms, int) or max_terms < 1:
            raise ConfigurationError("max_terms must be a positive integer", setting="max_terms")
        object.__setattr__(self, "columns", MappingProxyType(mapping))
        object.__setattr__(self, "_columns", self.columns)
        object.__setattr__(self, "_names", frozenset(mapping))
        object.__setattr__(self, "_default", OrderBy())
        if self.default is not None:
            try:
                checked = self.parse(self.default)
            except UnsafeOrderBy as error:
                raise ConfigurationError(
                    f"default: {error} (reason {error.reason})", setting="default"
                ) from error
            object.__setattr__(self, "_default", checked)

    def parse(self, requested: str | None) -> OrderBy:
        """The checked order for ``requested`` (``default`` when empty); :class:`UnsafeOrderBy`
        when it names anything outside the allow-list."""
        if requested is None:
            return self._default
        terms = parse_order(requested, self._names, max_terms=self.max_terms)
        if not terms:
            return self._default
        columns = self._columns
        return OrderBy(tuple(OrderTerm(name, columns[name], desc) for name, desc in terms))


def safe_order_by(
    requested: str | None,
    allowed_columns: Mapping[str, str] | Iterable[str],
    *,
    default: str | None = None,
    max_terms: int = 3,
) -> OrderBy:
    """``OrderColumns(columns=allowed_columns, ...).parse(requested)`` in one
    call: the guide's shape. Build an :class:`OrderColumns` once instead when the same list
    serves many requests (the list is then checked once, at start-up)."""
    columns = OrderColumns(columns=allowed_columns, default=default, max_terms=max_terms)
    return columns.parse(requested)
