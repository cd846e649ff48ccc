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

"Evaluates to false" is ``Comparable & ~Compare``, and every leaf is two-valued, so a ``NOT``
never meets an unknown. A naive translation gets this wrong both ways: a deny rule ``level
greater_than 3 and locked equals true`` becomes ``NOT (level > 3 AND locked)``, TRUE for a NULL
level on an unlocked row (``NULL AND FALSE`` is FALSE) although the core raises on the NULL
first and denies; and a role that grants the action becomes ``TRUE OR ...``, letting through
rows on which an applicable allow rule's condition raises (the core denies those too).

Each node can also judge one :class:`Resource` in Python (:meth:`matches`), with the core's own
compiled conditions, so a filter can be checked against the per-row decision without a
database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from bastion.core.authz._filter_tree import (
    FALSE,
    TRUE,
    Both,
    Comparable,
    Compare,
    Constant,
    Either,
    Filter,
    Negate,
    all_of,
    any_of,
    negate,
)
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
from bastion.core.authz.permission import OWN
from bastion.core.authz.subjects import Resource, Subject
from bastion.errors import AuthzInputError, ConfigurationError

if TYPE_CHECKING:
    from bastion.core.authz.permission import Permission
    from bastion.core.authz.policy import CompiledRule, Policy

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
    "filter_for",
    "negate",
    "outcome_of",
]

_NO_CONTEXT: Mapping[str, object] = MappingProxyType({})

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
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        value = tuple(item for item in items if _literal_item(item))  # sets: a stable text
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
    return isinstance(item, float) and math.isfinite(item)


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
        row_ref: Ref = value
        other: object = attribute
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


# -- the policy's residual ------------------------------------------------------------------


def filter_for(
    policy: Policy,
    subject: object,
    action: str,
    resource_type: str,
    context: Mapping[str, object] | None = None,
) -> Filter:
    """The rows of ``resource_type`` on which ``policy.evaluate(subject, row, action,
    context)`` allows, as a :data:`Filter` over the row's attributes.

    The per-row decision, step by step (``bastion.core.authz.policy``): a per-user deny
    (``:own``: on owned rows) refuses; an applicable deny rule whose condition is true, or
    any applicable rule whose condition raises, refuses; then a grant, a role permission
    (``:own``: on owned rows) or an allow rule whose condition is true allows. Ownership is
    ``owner equals subject.id`` (false on a NULL owner). Roles held in a tenant apply to rows
    whose ``tenant`` is that tenant, so a subject with tenant roles gets one branch per tenant.

    Raises :class:`ConfigurationError` for a condition a filter cannot express (two resource
    attributes compared, a nested resource attribute, a resource attribute on the value side
    of ``starts_with``), and :class:`~bastion.errors.AuthzInputError` for a malformed
    subject, action or context, as ``evaluate`` would.
    """
    s = Subject.of(subject)
    if context is None:
        context = _NO_CONTEXT
    elif not isinstance(context, Mapping):
        raise AuthzInputError(f"context must be a mapping, not {type(context).__name__}")
    builder = _Residual(policy, s, policy.required(action, resource_type), context, resource_type)
    base = builder.for_roles(None)
    tenants = [t for t in s.tenant_roles if s.roles_in(t) != s.roles]
    if not tenants:
        return base
    in_tenant = {t: Compare("tenant", Operator.EQUALS, t) for t in tenants}
    branches = [all_of(in_tenant[t], builder.for_roles(t)) for t in tenants]
    elsewhere = all_of(negate(any_of(*in_tenant.values())), base)
    return any_of(*branches, elsewhere)


class _Residual:
    """The filter of one (subject, permission) pair, built once per role set."""

    def __init__(
        self,
        policy: Policy,
        subject: Subject,
        required: Permission,
        context: Mapping[str, object],
        resource_type: str,
    ) -> None:
        self.policy = policy
        self.subject = subject
        self.required = required
        self.owned = Compare("owner", Operator.EQUALS, subject.id)
        self.denies, self.allows = policy.rules_for(required)
        self.outcomes: dict[int, Outcome] = {}
        self.context = context
        self.resource_type = resource_type
        self.not_denied = all_of(
            *(
                negate(self.owned) if deny.needs_owner else FALSE
                for deny in policy.denies_for(subject, required)
            )
        )

    def outcome(self, rule: CompiledRule) -> Outcome:
        """Where the rule's condition is true / false (computed once per rule)."""
        found = self.outcomes.get(rule.index)
        if found is None:
            when = rule.rule.when
            found = (
                _ALWAYS_TRUE
                if when is None
                else outcome_of(
                    when, self.subject, self.context, self.resource_type, rule=rule.rule.name
                )
            )
            self.outcomes[rule.index] = found
        return found

    def applies(self, rule: CompiledRule, held: frozenset[str]) -> Filter:
        """The rows the rule applies to (FALSE: not to this subject; ``:own``: owned rows)."""
        if not rule.applies_to(held):
            return FALSE
        action = rule.match(self.required)
        if action is None:
            return FALSE
        return self.owned if action.scope == OWN else TRUE

    def for_roles(self, tenant: str | None) -> Filter:
        held = self.subject.roles_in(tenant)
        guards: list[Filter] = [self.not_denied]
        for rule in self.denies:
            applies = self.applies(rule, held)
            if applies is not FALSE:
                # not applicable here, or its condition evaluated to false
                guards.append(any_of(negate(applies), self.outcome(rule).false))
        allowed: list[Filter] = []
        for rule in self.allows:
            applies = self.applies(rule, held)
            if applies is not FALSE:
                outcome = self.outcome(rule)
                guards.append(any_of(negate(applies), outcome.true, outcome.false))
                allowed.append(all_of(applies, outcome.true))
        allowed.extend(
            self.owned if grant.needs_owner else TRUE
            for grant in self.policy.grants_for(self.subject, self.required, tenant)
        )
        return all_of(*guards, any_of(*allowed))
