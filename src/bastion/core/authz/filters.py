"""Query filters: "which rows may this subject read", as an expression over resource attributes.

A list endpoint must return exactly the rows a per-row check would allow. Loading every row
and calling :meth:`Policy.evaluate` on each is correct but reads the whole table; a filter
pushes the same decision into the database's ``WHERE`` clause. :func:`filter_for` takes what
the policy knows about the subject (roles, grants, denies, subject and context attributes) and
leaves the residual: a :data:`Filter` that mentions only the resource's attributes.

The tree is neutral (no SQL here; :mod:`bastion.authz.sqlalchemy` translates it) and
two-valued: every node is true or false for every row, never unknown. Conditions that would
raise for a row (a NULL or missing attribute, a value of the wrong type) are the reason this
matters: the per-row check denies such a row (``condition_error``), so the filter must exclude
it, whether the condition sat in an allow or a deny rule. A leaf therefore comes in two kinds:

- :class:`Compare` holds when the comparison EVALUATES TO TRUE (it is false when the row's
  value would make the condition raise);
- :class:`Comparable` holds when the comparison evaluates at all (to true or false).

"Evaluates to false" is ``Comparable & ~Compare``, which a database can compute without ever
taking ``NOT`` of an unknown value: SQL's three-valued logic lets ``NOT (level > 3)`` drop a
NULL row out of a deny and into the result, which this tree makes impossible to write.

Each node can also judge one :class:`Resource` in Python (:meth:`matches`), with the core's own
compiled conditions, so a filter can be checked against the per-row decision without a
database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

from bastion.core.authz.conditions import (
    AllOf,
    Condition,
    ConditionError,
    Expression,
    Not,
    Operator,
    Ref,
    compile_condition,
)
from bastion.core.authz.subjects import Resource, Subject
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "FALSE",
    "TRUE",
    "Both",
    "Comparable",
    "Compare",
    "Constant",
    "Either",
    "Filter",
    "Negate",
    "Outcome",
    "all_of",
    "any_of",
    "negate",
    "outcome_of",
]


@dataclass(frozen=True, slots=True)
class Constant:
    """Every row (``TRUE``) or none (``FALSE``)."""

    value: bool

    def matches(self, resource: Resource) -> bool:
        return self.value

    def __str__(self) -> str:
        return "true" if self.value else "false"


TRUE = Constant(True)
FALSE = Constant(False)


_PROBE_SUBJECT = Subject(id="filter")
_NO_CONTEXT: Mapping[str, object] = MappingProxyType({})


def _probe(attribute: str, operator: Operator, value: object) -> Callable[[Resource], bool]:
    """The core's compiled condition ``resource.<attribute> <operator> <value>``.

    Leaves judge rows with the very code the per-row check runs, so that the SQL translation
    can ask it what a NULL, or a value of the column's type, does.
    """
    condition = Condition(
        attribute=Ref(root="resource", path=(attribute,)), operator=operator, value=value
    )
    compiled = compile_condition(condition)

    def run(resource: Resource) -> bool:
        return compiled(_PROBE_SUBJECT, resource, _NO_CONTEXT)

    return run


def _check_leaf(attribute: object, operator: object) -> None:
    if not isinstance(attribute, str) or not attribute:
        raise ConfigurationError(f"filter attribute: expected a non-empty str, got {attribute!r}")
    if not isinstance(operator, Operator):
        raise ConfigurationError(f"filter operator: expected an Operator, got {operator!r}")


@dataclass(frozen=True, slots=True)
class Compare:
    """``resource.<attribute> <operator> <value>`` evaluates to true for the row.

    False for a row where the per-row condition would raise (NULL or missing attribute, wrong
    type, NaN): such a row is never let through by this leaf. ``value`` is a plain value:
    references to the subject or the context were replaced by their values.
    """

    attribute: str
    operator: Operator
    value: object
    _run: Callable[[Resource], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_leaf(self.attribute, self.operator)
        object.__setattr__(self, "_run", _probe(self.attribute, self.operator, self.value))

    def matches(self, resource: Resource) -> bool:
        try:
            return self._run(resource)
        except ConditionError:
            return False

    def __str__(self) -> str:
        return f"{self.attribute} {self.operator.value} {self.value!r}"


@dataclass(frozen=True, slots=True)
class Comparable:
    """``resource.<attribute> <operator> <value>`` evaluates (to true or false) for the row.

    The complement is the set of rows where the condition would raise; those rows are denied
    by the per-row check, so a filter keeps them out of every branch.
    """

    attribute: str
    operator: Operator
    value: object
    _run: Callable[[Resource], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_leaf(self.attribute, self.operator)
        object.__setattr__(self, "_run", _probe(self.attribute, self.operator, self.value))

    @property
    def compare(self) -> Compare:
        return Compare(self.attribute, self.operator, self.value)

    def matches(self, resource: Resource) -> bool:
        try:
            self._run(resource)
        except ConditionError:
            return False
        return True

    def __str__(self) -> str:
        return f"{self.attribute} {self.operator.value} {self.value!r} evaluates"


@dataclass(frozen=True, slots=True)
class Both:
    """Every item holds (build with :func:`all_of`, which simplifies)."""

    items: tuple[Filter, ...]

    def matches(self, resource: Resource) -> bool:
        return all(item.matches(resource) for item in self.items)

    def __str__(self) -> str:
        return "(" + " and ".join(str(item) for item in self.items) + ")"


@dataclass(frozen=True, slots=True)
class Either:
    """At least one item holds (build with :func:`any_of`, which simplifies)."""

    items: tuple[Filter, ...]

    def matches(self, resource: Resource) -> bool:
        return any(item.matches(resource) for item in self.items)

    def __str__(self) -> str:
        return "(" + " or ".join(str(item) for item in self.items) + ")"


@dataclass(frozen=True, slots=True)
class Negate:
    """The item does not hold. Safe in SQL: every node below is two-valued."""

    item: Filter

    def matches(self, resource: Resource) -> bool:
        return not self.item.matches(resource)

    def __str__(self) -> str:
        return f"not {self.item}"


Filter: TypeAlias = Constant | Compare | Comparable | Both | Either | Negate
"""A filter over one resource type's attributes: true or false for every row."""


def _key(node: Filter) -> tuple[object, ...]:
    # Leaves may hold unhashable values (lists for ``in``): compare by repr-able structure.
    if isinstance(node, Compare | Comparable):
        return (type(node).__name__, node.attribute, node.operator, repr(node.value))
    if isinstance(node, Negate):
        return ("not", _key(node.item))
    if isinstance(node, Both | Either):
        return (type(node).__name__, tuple(_key(item) for item in node.items))
    return ("const", node.value)


def _unique(items: Iterable[Filter]) -> list[Filter]:
    seen: set[tuple[object, ...]] = set()
    kept: list[Filter] = []
    for item in items:
        key = _key(item)
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def negate(item: Filter) -> Filter:
    """``not item``, simplified: constants flip, a double negation cancels."""
    if isinstance(item, Constant):
        return FALSE if item.value else TRUE
    if isinstance(item, Negate):
        return item.item
    return Negate(item)


def all_of(*items: Filter) -> Filter:
    """``item and item ...``, simplified.

    Nested ``Both`` flatten, ``TRUE`` drops out, ``FALSE`` wins, duplicates go, ``x and not x``
    is ``FALSE``, and a ``Comparable`` next to the ``Compare`` of the same comparison drops
    (a comparison that is true certainly evaluates).
    """
    flat: list[Filter] = []
    for item in items:
        if isinstance(item, Both):
            flat.extend(item.items)
        elif isinstance(item, Constant):
            if not item.value:
                return FALSE
        else:
            flat.append(item)
    kept = _unique(flat)
    keys = {_key(item) for item in kept}
    if any(isinstance(item, Negate) and _key(item.item) in keys for item in kept):
        return FALSE
    kept = [
        item
        for item in kept
        if not (isinstance(item, Comparable) and _key(item.compare) in keys)
    ]
    if not kept:
        return TRUE
    if len(kept) == 1:
        return kept[0]
    return Both(tuple(kept))


def any_of(*items: Filter) -> Filter:
    """``item or item ...``, simplified (the dual of :func:`all_of`)."""
    flat: list[Filter] = []
    for item in items:
        if isinstance(item, Either):
            flat.extend(item.items)
        elif isinstance(item, Constant):
            if item.value:
                return TRUE
        else:
            flat.append(item)
    kept = _unique(flat)
    keys = {_key(item) for item in kept}
    if any(isinstance(item, Negate) and _key(item.item) in keys for item in kept):
        return TRUE
    if not kept:
        return FALSE
    if len(kept) == 1:
        return kept[0]
    return Either(tuple(kept))


# -- conditions -> filters ------------------------------------------------------------------

_MISSING = object()
_FLIPPED = {
    Operator.EQUALS: Operator.EQUALS,
    Operator.NOT_EQUALS: Operator.NOT_EQUALS,
    Operator.GREATER_THAN: Operator.LESS_THAN,
    Operator.LESS_THAN: Operator.GREATER_THAN,
    Operator.GREATER_OR_EQUAL: Operator.LESS_OR_EQUAL,
    Operator.LESS_OR_EQUAL: Operator.GREATER_OR_EQUAL,
    Operator.CONTAINS: Operator.IN,  # subject.tags contains resource.tag: tag in tags
    Operator.IN: Operator.CONTAINS,  # subject.tag in resource.tags: tags contains tag
}
"""``x OP resource.a`` rewritten as ``resource.a OP' x`` (the core's checks are symmetric)."""

_SEQUENCES = (list, tuple, set, frozenset)


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where an expression evaluates to true and where to false; elsewhere it raises."""

    true: Filter
    false: Filter


_ALWAYS_TRUE = Outcome(TRUE, FALSE)
_ALWAYS_FALSE = Outcome(FALSE, TRUE)
_ALWAYS_ERROR = Outcome(FALSE, FALSE)


def _resolve(
    ref: Ref, subject: Subject, context: Mapping[str, object], resource_type: str
) -> object:
    """The value of a subject or context reference (``_MISSING`` when the core would raise).

    Follows the core's lookup: subject attributes first, then ``id`` and ``roles``; then
    mapping steps. ``resource.type`` is the resource type the filter is for.
    """
    first, rest = ref.path[0], ref.path[1:]
    value: object
    if ref.root == "resource":
        value = resource_type  # only ever asked for ("type",): see _condition
    elif ref.root == "subject":
        value = subject.attributes.get(first, _MISSING)
        if value is _MISSING:
            if first == "id":
                value = subject.id
            elif first == "roles":
                value = subject.roles
    else:
        value = context.get(first, _MISSING)
    for name in rest:
        if not isinstance(value, Mapping):
            return _MISSING
        value = value.get(name, _MISSING)
    return value


def _is_row_ref(ref: object) -> bool:
    return isinstance(ref, Ref) and ref.root == "resource" and ref.path != ("type",)


def _leaf(attribute: str, operator: Operator, value: object) -> Outcome:
    """``resource.<attribute> <operator> <value>`` for a plain value."""
    if isinstance(value, _SEQUENCES) and operator in (Operator.IN, Operator.NOT_IN):
        # Items the core can never find (a dict, a NaN) are dropped; the rest are literals.
        value = tuple(item for item in value if _literal_item(item))
    try:
        compare = Compare(attribute, operator, value)
    except ConfigurationError:
        # The core accepts no such literal here (a list for equals, a bool for greater_than,
        # a NaN): the per-row check raises for every row.
        return _ALWAYS_ERROR
    comparable = Comparable(attribute, operator, value)
    return Outcome(compare, all_of(comparable, negate(compare)))


def _literal_item(item: object) -> bool:
    if item is None or isinstance(item, bool | str | int):
        return True
    return isinstance(item, float) and item == item  # NaN never equals itself


def _condition(
    condition: Condition,
    subject: Subject,
    context: Mapping[str, object],
    resource_type: str,
    rule: str,
) -> Outcome:
    attribute, operator, value = condition.attribute, condition.operator, condition.value
    left_row, right_row = _is_row_ref(attribute), _is_row_ref(value)
    if not left_row and not right_row:
        compiled = compile_condition(condition)
        probe = Resource(type=resource_type)
        try:
            return _ALWAYS_TRUE if compiled(subject, probe, context) else _ALWAYS_FALSE
        except ConditionError:
            return _ALWAYS_ERROR
    if left_row and right_row:
        raise ConfigurationError(
            f"rule {rule!r}: {condition} compares two resource attributes, which a query "
            f"filter does not express yet"
        )
    negated = False
    if right_row:
        if not isinstance(value, Ref):  # pragma: no cover - _is_row_ref checked it
            raise TypeError(value)
        row_ref, other = value, attribute
        if operator is Operator.NOT_IN:
            operator, negated = Operator.CONTAINS, True
        elif operator in _FLIPPED:
            operator = _FLIPPED[operator]
        else:
            raise ConfigurationError(
                f"rule {rule!r}: {condition} has the resource attribute on the value side of "
                f"{operator}, which a query filter does not express"
            )
    else:
        row_ref, other = attribute, value
    if len(row_ref.path) != 1:
        raise ConfigurationError(
            f"rule {rule!r}: {condition} reaches into {row_ref}, but a query filter compares "
            f"top-level resource attributes (columns) only"
        )
    plain = _resolve(other, subject, context, resource_type) if isinstance(other, Ref) else other
    if plain is _MISSING:
        return _ALWAYS_ERROR
    outcome = _leaf(row_ref.path[0], operator, plain)
    return Outcome(outcome.false, outcome.true) if negated else outcome


def outcome_of(
    expression: Expression,
    subject: Subject,
    context: Mapping[str, object],
    resource_type: str,
    *,
    rule: str = "condition",
) -> Outcome:
    """Where ``expression`` is true and where false, over the rows of ``resource_type``.

    Follows the core's evaluation order: ``all`` stops at its first false item and ``any``
    at its first true one, so an item after the stop cannot raise; ``not`` keeps errors.
    """
    if isinstance(expression, Condition):
        return _condition(expression, subject, context, resource_type, rule)
    if isinstance(expression, Not):
        inner = outcome_of(expression.item, subject, context, resource_type, rule=rule)
        return Outcome(inner.false, inner.true)
    parts = [
        outcome_of(item, subject, context, resource_type, rule=rule) for item in expression.items
    ]
    if isinstance(expression, AllOf):
        true = all_of(*(part.true for part in parts))
        false = any_of(
            *(all_of(*(p.true for p in parts[:k]), part.false) for k, part in enumerate(parts))
        )
        return Outcome(true, false)
    true = any_of(
        *(all_of(*(p.false for p in parts[:k]), part.true) for k, part in enumerate(parts))
    )
    return Outcome(true, all_of(*(part.false for part in parts)))
