"""Authorization query filters as SQLAlchemy ``WHERE`` clauses (extra ``bastion[sqlalchemy]``).

::

    readable = policy.filter(subject, "read", "document")
    rows = session.scalars(select(Document).where(to_sqlalchemy(readable, Document)))

returns exactly the documents for which ``policy.evaluate(subject, <row>, "read")`` allows.

Every clause built here is two-valued: it is TRUE or FALSE for every row, never NULL. What a
leaf does with a NULL, and whether a value of the column's type can be compared with the
literal at all, is asked once of the core's own condition code (most comparisons with
``None`` raise, so the row is denied; ``in`` a list is merely false), never left to the
database's casts: ``level equals "3"`` raises in the core for every row, where PostgreSQL
would read ``'3'`` as the integer ``3`` and SQLite compares anything with anything. Literals
are bound with their own type (``level equals -0.5`` never reaches the database as ``0``). Text is
compared by code point, as Python compares ``str``: ``COLLATE "C"`` on PostgreSQL and
``COLLATE BINARY`` on SQLite, so a database collation cannot widen ``starts_with`` or
``greater_than``; other dialects compare with the column's own collation.

SQLite keeps whatever was inserted, whatever the column's type (text ``'abc'`` or a blob in an
INTEGER column), and orders every text and blob above every number, so ``level > 3`` would
pass them; the per-row check refuses them (a text is not ordered against a number). A value
stored in another class than the column's kind (``typeof``) therefore never passes a leaf,
as if the condition raised: never looser than the per-row check, stricter only where the
core compares across kinds without raising (``in``/``not_in`` with such a value).

Limitations: columns must be Boolean, Integer, Float or String/Text typed (``python_type``
``bool``, ``int``, ``float`` or ``str``; a float column's NaN counts as no value, as the
core's NaN check has it); integer literals must fit in 64 bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bastion.core.authz.conditions import Operator
from bastion.core.authz.filters import Both, Comparable, Compare, Constant, Either, Negate
from bastion.core.authz.subjects import Resource
from bastion.errors import ConfigurationError

try:
    import sqlalchemy as sa
    from sqlalchemy.ext.compiler import compiles
    from sqlalchemy.sql.functions import FunctionElement
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "bastion.authz.sqlalchemy needs SQLAlchemy: pip install 'bastion[sqlalchemy]'"
    ) from exc

if TYPE_CHECKING:
    from sqlalchemy.sql.compiler import SQLCompiler
    from sqlalchemy.sql.elements import ColumnElement

    from bastion.core.authz.filters import Filter

__all__ = ["columns_of", "to_sqlalchemy"]

_KINDS: dict[type, object] = {bool: False, int: 0, float: 0.0, str: ""}
"""Column kinds supported, each with a probe value handed to the core's condition code."""

_ORDERING = {
    Operator.GREATER_THAN: "__gt__",
    Operator.LESS_THAN: "__lt__",
    Operator.GREATER_OR_EQUAL: "__ge__",
    Operator.LESS_OR_EQUAL: "__le__",
}

_COLLECTIONS = (list, tuple, set, frozenset)


class _codepoint(FunctionElement[str]):  # noqa: N801 (SQLAlchemy names constructs in lower case)
    """A text expression compared by code point (see the module docstring)."""

    inherit_cache = True
    name = "codepoint"
    type = sa.String()


@compiles(_codepoint)
def _codepoint_default(element: _codepoint, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(_codepoint, "postgresql")
def _codepoint_postgresql(element: _codepoint, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


@compiles(_codepoint, "sqlite")
def _codepoint_sqlite(element: _codepoint, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)}) COLLATE BINARY"


class _not_nan(FunctionElement[bool]):  # noqa: N801 (SQLAlchemy names constructs in lower case)
    """A float column's value is not NaN (PostgreSQL stores NaN; SQLite turns it into NULL)."""

    inherit_cache = True
    name = "not_nan"
    type = sa.Boolean()


@compiles(_not_nan)
def _not_nan_default(element: _not_nan, compiler: SQLCompiler, **kw: Any) -> str:
    inner = compiler.process(element.clauses, **kw)
    return f"({inner}) = ({inner})"  # NaN never equals itself where it exists by IEEE rules


@compiles(_not_nan, "postgresql")
def _not_nan_postgresql(element: _not_nan, compiler: SQLCompiler, **kw: Any) -> str:
    # PostgreSQL orders NaN above every number and makes it equal to itself
    return f"({compiler.process(element.clauses, **kw)}) <> 'NaN'::float8"


class _stored_as(FunctionElement[bool]):  # noqa: N801 (SQLAlchemy names constructs in lower case)
    """Whether the column's value is stored as its kind (see the module docstring)."""

    inherit_cache = True
    name = "stored_as"
    type = sa.Boolean()

    def __init__(self, column: ColumnElement[Any], storage: str) -> None:
        # ``storage`` is not in the cache key: it follows from the column's type, which is.
        super().__init__(column)
        self.storage = storage


_SQLITE_STORAGE: dict[type, str] = {
    bool: "'integer'",
    int: "'integer', 'real'",
    float: "'integer', 'real'",
    str: "'text'",
}
"""The SQLite storage classes a value of each column kind comes back from the per-row load
as (an INTEGER column's ``4.5`` is still a number; its ``'abc'`` is a text)."""


@compiles(_stored_as)
def _stored_as_default(_element: _stored_as, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "1 = 1"  # a typed database: the column only holds its own type


@compiles(_stored_as, "sqlite")
def _stored_as_sqlite(element: _stored_as, compiler: SQLCompiler, **kw: Any) -> str:
    return f"typeof({compiler.process(element.clauses, **kw)}) IN ({element.storage})"


def columns_of(model: object) -> dict[str, ColumnElement[Any]]:
    """The columns of a mapped class or a ``Table``, by attribute name.

    For a mapped class the names are the ORM attribute keys (``Document.owner_id``), which
    are the names a policy's ``resource.<name>`` uses.
    """
    if isinstance(model, sa.FromClause):
        return {column.key: column for column in model.c}
    try:
        mapper = sa.inspect(model)
    except sa.exc.NoInspectionAvailable:
        raise ConfigurationError(
            f"filter columns: expected a mapped class, a Table or a mapping of attribute name "
            f"to column, got {model!r:.80}"
        ) from None
    attributes = getattr(mapper, "column_attrs", None)
    if attributes is None:
        raise ConfigurationError(f"filter columns: {model!r:.80} is not a mapped class")
    return {prop.key: getattr(model, prop.key) for prop in attributes}


def to_sqlalchemy(filter: Filter, columns: object) -> ColumnElement[bool]:  # noqa: A002
    """``filter`` as a boolean SQLAlchemy clause over ``columns``.

    ``columns`` is a mapped class, a ``Table``, or a mapping from attribute name to column.
    A filter naming an attribute that ``columns`` lacks is a :class:`ConfigurationError`
    naming it (never a silently dropped condition). ``owner`` and ``owner_id`` stand for each
    other, as they do on :class:`Resource`.
    """
    named = dict(columns) if isinstance(columns, Mapping) else columns_of(columns)
    return _Translator(named).visit(filter)


class _Translator:
    def __init__(self, columns: dict[str, ColumnElement[Any]]) -> None:
        self._columns = columns

    def visit(self, node: Filter) -> ColumnElement[bool]:
        if isinstance(node, Constant):
            return sa.true() if node.value else sa.false()
        if isinstance(node, Both):
            return sa.and_(*(self.visit(item) for item in node.items))
        if isinstance(node, Either):
            return sa.or_(*(self.visit(item) for item in node.items))
        if isinstance(node, Negate):
            return sa.not_(self.visit(node.item))
        return self._leaf(node)

    def _column(self, attribute: str) -> tuple[ColumnElement[Any], type]:
        column = self._columns.get(attribute)
        if column is None and attribute in ("owner", "owner_id"):
            column = self._columns.get("owner_id" if attribute == "owner" else "owner")
        if column is None:
            known = ", ".join(sorted(self._columns)) or "none"
            raise ConfigurationError(
                f"filter attribute {attribute!r} has no column (columns: {known}); map it, or "
                f"drop the condition on resource.{attribute} from the policy"
            )
        try:
            kind = column.type.python_type
        except NotImplementedError:
            kind = object
        if kind not in _KINDS:
            raise ConfigurationError(
                f"filter attribute {attribute!r}: column type {column.type!r} is not supported "
                f"(Boolean, Integer, Float or String columns only)"
            )
        return column, kind

    def _leaf(self, node: Compare | Comparable) -> ColumnElement[bool]:
        column, kind = self._column(node.attribute)
        compare = node if isinstance(node, Compare) else node.compare
        # Ask the core what it does with a NULL, and whether a value of the column's kind
        # can be compared at all (the kinds decide that; the value only decides true/false).
        null, sample = (_probe_resource(node.attribute, v) for v in (None, _KINDS[kind]))
        when_null = node.matches(null)
        evaluates = Comparable(node.attribute, node.operator, node.value).matches(sample)
        when_set: ColumnElement[bool]
        if not evaluates:
            when_set = sa.false()
        elif isinstance(node, Comparable):
            when_set = sa.true()
        else:
            built = _comparison(column, kind, compare.operator, compare.value)
            if built is None:  # pragma: no cover - the core raises for every such pair today
                built = sa.true() if compare.matches(sample) else sa.false()
            when_set = built
        return _nullable(column, kind, when_null=when_null, when_set=when_set)


_FIELDS = {"owner": "owner", "owner_id": "owner", "tenant": "tenant", "id": "id"}
"""Attributes that are :class:`Resource` fields (always text or None in the per-row check)."""


def _probe_resource(attribute: str, value: object) -> Resource:
    field = _FIELDS.get(attribute)
    if field is None:
        return Resource(type="probe", attributes={attribute: value})
    if value is None:
        return Resource(type="probe")
    if not isinstance(value, str):
        raise ConfigurationError(
            f"filter attribute {attribute!r}: the resource's {field} is text, so its column "
            f"must be a String column"
        )
    text = value or "probe"  # a field is never empty; any text has the same kind
    if field == "owner":
        return Resource(type="probe", owner=text)
    if field == "tenant":
        return Resource(type="probe", tenant=text)
    return Resource(type="probe", id=text)


def _nullable(
    column: ColumnElement[Any], kind: type, *, when_null: bool, when_set: ColumnElement[bool]
) -> ColumnElement[bool]:
    """``when_set`` for rows with a value of the column's ``kind``, ``when_null`` for NULL,
    false for a value of another storage class (SQLite): never NULL itself.

    A float column's NaN is no value either: the core raises on it whatever the operator.
    """
    is_set: ColumnElement[bool] = sa.and_(
        column.is_not(None), _stored_as(column, _SQLITE_STORAGE[kind])
    )
    if kind is float:
        is_set = sa.and_(is_set, _not_nan(column))
    if isinstance(when_set, sa.False_):
        return column.is_(None) if when_null else sa.false()
    guarded = is_set if isinstance(when_set, sa.True_) else sa.and_(is_set, when_set)
    return sa.or_(column.is_(None), guarded) if when_null else guarded


def _same_kind(kind: type, value: object) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind in (int, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


def _bound(value: object, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``value`` as a parameter of its own type: typed as an Integer column, ``-0.5`` would be
    sent as ``0`` (and ``level equals -0.5`` would match ``level = 0``)."""
    if isinstance(value, float):
        return sa.literal(value, sa.Float())
    if isinstance(value, int) and not isinstance(value, bool):
        return sa.literal(value, sa.BigInteger())
    return sa.literal(value, column.type)


def _text(column: ColumnElement[Any], kind: type) -> ColumnElement[Any]:
    return _codepoint(column) if kind is str else column


def _comparison(  # noqa: PLR0911 (one return per operator family)
    column: ColumnElement[Any], kind: type, operator: Operator, value: object
) -> ColumnElement[bool] | None:
    """The comparison for a non-NULL value of ``kind``; None when the kinds never compare."""
    if operator in (Operator.EQUALS, Operator.NOT_EQUALS):
        if not _same_kind(kind, value):
            return None
        left = _text(column, kind)
        bound = _bound(value, column)
        return left == bound if operator is Operator.EQUALS else left != bound
    if operator in _ORDERING:
        if kind is bool or not _same_kind(kind, value):
            return None
        left = _text(column, kind)
        result: ColumnElement[bool] = getattr(left, _ORDERING[operator])(_bound(value, column))
        return result
    if operator is Operator.STARTS_WITH:
        if kind is not str or not isinstance(value, str):
            return None
        prefix = sa.literal(value, sa.String())
        head = sa.func.substr(column, 1, len(value))
        return _codepoint(head) == _codepoint(prefix)
    if operator is Operator.CONTAINS:
        if kind is not str or not isinstance(value, str):
            return None
        return _has_substring(column, sa.literal(value, sa.String()), empty=not value)
    if operator in (Operator.IN, Operator.NOT_IN):
        inside = _membership(column, kind, value)
        if inside is None:
            return None
        return inside if operator is Operator.IN else sa.not_(inside)
    return None


def _membership(
    column: ColumnElement[Any], kind: type, value: object
) -> ColumnElement[bool] | None:
    if isinstance(value, str):
        if kind is not str:
            return None
        whole = sa.literal(value, sa.String())
        # column is a substring of the literal; the empty text is in every text
        return sa.or_(column == "", _has_substring(whole, column, empty=False))
    if isinstance(value, _COLLECTIONS):
        items = [item for item in value if _same_kind(kind, item)]
        if not items:
            return sa.false()
        return _text(column, kind).in_([_bound(item, column) for item in items])
    return None


def _has_substring(
    whole: ColumnElement[Any], part: ColumnElement[Any], *, empty: bool
) -> ColumnElement[bool]:
    # Portable and case-sensitive (LIKE is case-insensitive on SQLite and needs escaping):
    # removing every occurrence of `part` shortens `whole` exactly when `part` occurs in it.
    if empty:
        return sa.true()
    removed = sa.func.replace(_codepoint(whole), _codepoint(part), "")
    shorter = sa.func.length(removed) < sa.func.length(whole)
    return sa.and_(part != "", shorter)
