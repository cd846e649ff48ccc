"""The node types of query filters and their simplifying constructors.

Kept apart from :mod:`bastion.core.authz.filters` (which builds filters from a policy and
re-exports everything here) so that each file stays readable; import from ``filters``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias

from bastion.core.authz.conditions import (
    Condition,
    ConditionError,
    Operator,
    Ref,
    compile_condition,
)
from bastion.core.authz.subjects import Resource, Subject
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

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
    "all_of",
    "any_of",
    "negate",
]


@dataclass(frozen=True, slots=True)
class Constant:
    """Every row (``TRUE``) or none (``FALSE``)."""

    value: bool

    def matches(self, resource: Resource) -> bool:  # noqa: ARG002 (every row alike)
        return self.value

    def __str__(self) -> str:
        return "true" if self.value else "false"


TRUE = Constant(value=True)
FALSE = Constant(value=False)


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
        # absorption: a disjunction implied by the other conjuncts adds nothing
        and not (isinstance(item, Either) and any(_implied(part, keys) for part in item.items))
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
    if any(isinstance(item, Both) for item in kept):
        # x or (c and not x and r) is x or (c and r): "not x" adds nothing beside x
        simpler = [_drop_negations(item, keys) if isinstance(item, Both) else item for item in kept]
        if [_key(item) for item in simpler] != [_key(item) for item in kept]:
            return any_of(*simpler)
    # x or "x evaluates" is "x evaluates" (a true comparison evaluates)
    evaluates = {_key(item.compare) for item in kept if isinstance(item, Comparable)}
    kept = [
        item
        for item in kept
        if _key(item) not in evaluates
        # absorption: a conjunction containing another disjunct adds nothing
        and not (isinstance(item, Both) and any(_key(part) in keys for part in item.items))
    ]
    if not kept:
        return FALSE
    if len(kept) == 1:
        return kept[0]
    return Either(tuple(kept))


def _drop_negations(item: Both, others: set[tuple[object, ...]]) -> Filter:
    return all_of(
        *(
            part
            for part in item.items
            if not (isinstance(part, Negate) and _key(part.item) in others)
        )
    )


def _implied(item: Filter, conjuncts: set[tuple[object, ...]]) -> bool:
    """Whether ``item`` holds wherever every one of ``conjuncts`` holds (syntactically)."""
    if isinstance(item, Both):
        return all(_key(part) in conjuncts for part in item.items)
    return _key(item) in conjuncts
