"""The policy: roles, ABAC rules, and the one decision procedure over them.

Order of a decision (:meth:`Policy.evaluate`), fixed so that it can be explained:

1. a per-user deny that covers the action -> ``denied_by_grant``;
2. a deny rule that applies and whose condition is true -> ``denied_by_rule``;
3. any applicable rule (allow or deny) whose condition raised -> ``condition_error`` (fail
   closed: a condition that cannot be evaluated never lets a request through, nor lets it
   slip past a deny);
4. a per-user grant -> ``allowed_by_grant``; a role permission -> ``allowed_by_role``; either
   through an ``:own`` permission on a resource the subject owns -> ``allowed_as_owner``; an
   allow rule whose condition holds -> ``allowed_by_rule``;
5. nothing -> deny (``not_owner``, ``condition_failed``, ``wrong_tenant`` or ``no_match``,
   whichever explains it best).

Ownership: an ``:own`` permission (held, granted, or a rule's action) applies only when the
resource's ``owner`` (as the app loaded it) is the subject's id, exact text; with no resource
(a type-level check) it grants only the ``:own`` permission itself.

Everything that can be computed before a request is computed in ``__post_init__``: the role
graph (each role's closure, each permission's origins), every rule's condition compiled, an
index of rules by ``(resource, action)``; then, once per distinct (action, resource type), a
plan: the rules whose actions cover it and the roles given a permission that covers it. An
RBAC decision is then one set intersection per role the subject holds; it never scans the
rules or the role graph.

For the query-filter builder (``bastion.core.authz.filters``) the policy exposes:

* :attr:`Policy.graph` (the :class:`~bastion.core.authz.roles.RoleGraph`) and
  :attr:`Policy.rules`; :attr:`Policy.compiled`, one :class:`CompiledRule` per rule, with its
  ``condition`` (a :class:`~bastion.core.authz.conditions.Compiled` whose ``source`` is the
  condition as data), ``holders`` and :meth:`CompiledRule.applies_to`;
* :meth:`Policy.required` (the permission a check asks for), :meth:`Policy.rules_for` (the
  deny and allow rules that cover it, in policy order), :meth:`Policy.grants_for` and
  :meth:`Policy.denies_for` (a subject's covering grants and denies, each a :class:`Match`
  that says whether it needs ownership).
"""

from __future__ import annotations

import enum
import gc
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from bastion.core.authz._evaluate import (
    CompiledRule,
    Match,
    Plan,
    decide,
    deny_reaches,
    keys_for,
    match_grant,
    role_plan,
)
from bastion.core.authz.conditions import (
    AllOf,
    AnyOf,
    Condition,
    Expression,
    Not,
    compile_condition,
)
from bastion.core.authz.permission import WILDCARD, Permission, is_segment
from bastion.core.authz.roles import Role, RoleGraph
from bastion.core.authz.subjects import Resource, Subject
from bastion.errors import AuthzInputError, ConfigurationError

if TYPE_CHECKING:
    from bastion.core.authz.decision import Decision

    # filters.py belongs to helper authz-filters; until it lands the import is unresolved.
    from bastion.core.authz.filters import Filter

__all__ = ["CompiledRule", "Effect", "Match", "Policy", "Rule"]

_RULE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}", re.ASCII)
_NO_CONTEXT: Final[Mapping[str, object]] = MappingProxyType({})
_PLAN_CACHE: Final = 4096
"""Distinct (action, resource type) plans kept per policy (the app's vocabulary is small)."""


class Effect(enum.StrEnum):
    """What a rule does when it applies."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Rule:
    """An ABAC rule: ``effect`` on ``actions`` (of ``resource``, a type, or of any type when
    None) for subjects holding one of ``roles`` (anyone when empty), when ``when`` holds.

    An action without ``:`` is a bare action of ``resource`` (``"read"`` with resource
    ``document`` is ``document:read``; ``"*"`` is every action of it); with ``:`` it is a
    whole permission, whose resource must then be ``resource``.
    """

    name: str
    effect: Effect
    actions: tuple[str | Permission, ...]
    resource: str | None = None
    when: Expression | None = None
    roles: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _RULE_NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"rule name must match [A-Za-z0-9][A-Za-z0-9_.-]* (128 at most), "
                f"got {self.name!r:.80}",
                setting="rules.name",
            )
        where = f"rules.{self.name}"
        try:
            object.__setattr__(self, "effect", Effect(self.effect))
        except ValueError:
            raise ConfigurationError(
                f"rule {self.name}: effect must be allow or deny, got {self.effect!r:.40}",
                setting=f"{where}.effect",
            ) from None
        if self.resource is not None and not is_segment(self.resource):
            raise ConfigurationError(
                f"rule {self.name}: resource must match [a-z0-9][a-z0-9_.-]*, "
                f"got {self.resource!r:.80}",
                setting=f"{where}.resource",
            )
        if isinstance(self.actions, str | Permission) or not self.actions:
            raise ConfigurationError(
                f"rule {self.name}: actions must be a non-empty tuple", setting=f"{where}.actions"
            )
        object.__setattr__(self, "actions", tuple(self._action(a) for a in self.actions))
        if self.when is not None and not isinstance(self.when, Condition | AllOf | AnyOf | Not):
            raise ConfigurationError(
                f"rule {self.name}: when must be a condition, got {type(self.when).__name__}",
                setting=f"{where}.when",
            )
        roles = tuple(self.roles) if not isinstance(self.roles, str) else None
        if roles is None or not all(is_segment(r) for r in roles):
            raise ConfigurationError(
                f"rule {self.name}: roles must be a tuple of role names",
                setting=f"{where}.roles",
            )
        object.__setattr__(self, "roles", roles)

    def _action(self, action: object) -> Permission:
        setting = f"rules.{self.name}.actions"
        if isinstance(action, Permission):
            permission = action
        elif isinstance(action, str) and ":" not in action and self.resource is not None:
            permission = Permission.parse(f"{self.resource}:{action}", setting=setting)
        elif isinstance(action, str) and ":" not in action and action != WILDCARD:
            raise ConfigurationError(
                f"rule {self.name}: the bare action {action!r:.40} needs a resource type "
                f"(or write a whole permission such as 'posts:{action:.20}')",
                setting=setting,
            )
        else:
            permission = Permission.parse(action, setting=setting)
        if self.resource is not None and permission.resource != self.resource:
            raise ConfigurationError(
                f"rule {self.name}: action {permission} is not an action of resource "
                f"{self.resource}",
                setting=setting,
            )
        return permission

    @property
    def permissions(self) -> tuple[Permission, ...]:
        """The actions as parsed permissions."""
        return tuple(a for a in self.actions if isinstance(a, Permission))


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Roles and rules, validated and compiled when built. See the module docstring.

    Read-only once built, and safe to share between threads and tasks (the plan and path
    caches only ever gain entries, each computed from read-only data).
    """

    # Not in the repr: a policy of 10,000 rules would print all of them in a traceback.
    roles: tuple[Role, ...] = field(default=(), repr=False)
    rules: tuple[Rule, ...] = field(default=(), repr=False)
    max_depth: int = 16
    name: str = "policy"
    graph: RoleGraph = field(init=False, repr=False, compare=False)
    compiled: tuple[CompiledRule, ...] = field(init=False, repr=False, compare=False)
    _index: Mapping[tuple[str, str], tuple[CompiledRule, ...]] = field(
        init=False, repr=False, compare=False
    )
    _plans: dict[tuple[str, str | None], Plan] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _RULE_NAME.fullmatch(self.name):
            raise ConfigurationError(
                f"policy name must match [A-Za-z0-9][A-Za-z0-9_.-]*, got {self.name!r:.80}",
                setting="name",
            )
        roles, rules = tuple(self.roles), tuple(self.rules)
        object.__setattr__(self, "roles", roles)
        object.__setattr__(self, "rules", rules)
        graph = RoleGraph(roles, max_depth=self.max_depth)
        object.__setattr__(self, "graph", graph)
        enabled = gc.isenabled()
        # Compiling allocates a few closures per condition (about 100,000 for 10,000 rules)
        # and none of them form cycles: the cyclic collector, triggered over and over while
        # the heap grows, would triple the build time. Paused for the build only.
        gc.disable()
        try:
            compiled, index = self._compile(rules, graph)
        finally:
            if enabled:
                gc.enable()
        object.__setattr__(self, "compiled", compiled)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_plans", {})

    @staticmethod
    def _compile(
        rules: tuple[Rule, ...], graph: RoleGraph
    ) -> tuple[tuple[CompiledRule, ...], Mapping[tuple[str, str], tuple[CompiledRule, ...]]]:
        compiled: list[CompiledRule] = []
        names: set[str] = set()
        index: dict[tuple[str, str], list[CompiledRule]] = {}
        for position, rule in enumerate(rules):
            if not isinstance(rule, Rule):
                raise ConfigurationError(
                    f"rules must be Rule objects, got {type(rule).__name__}", setting="rules"
                )
            if rule.name in names:
                raise ConfigurationError(
                    f"rule {rule.name} is defined twice", setting=f"rules.{rule.name}"
                )
            names.add(rule.name)
            holders: frozenset[str] | None = None
            if rule.roles:
                for role in rule.roles:
                    if role not in graph:
                        raise ConfigurationError(
                            f"rule {rule.name} names unknown role {role}",
                            setting=f"rules.{rule.name}.roles",
                        )
                holders = frozenset().union(*(graph.holders(r) for r in rule.roles))
            condition = None if rule.when is None else compile_condition(rule.when)
            entry = CompiledRule(rule, position, condition, holders)
            compiled.append(entry)
            for key in dict.fromkeys((p.resource, p.action) for p in rule.permissions):
                index.setdefault(key, []).append(entry)
        return tuple(compiled), MappingProxyType({k: tuple(v) for k, v in index.items()})

    # -- what the filter builder and the facade use -------------------------------------

    def required(self, action: object, resource_type: str | None = None) -> Permission:
        """The permission a check asks for: ``action`` as a whole permission text, or a
        bare action of ``resource_type``. An :class:`~bastion.errors.AuthzInputError` if it
        is not one, or names another resource type than ``resource_type``."""
        return self._plan(action, resource_type).required

    def _plan(self, action: object, resource_type: str | None) -> Plan:
        if not isinstance(action, str):
            raise AuthzInputError(f"an action must be a text, not {type(action).__name__}")
        plan = self._plans.get((action, resource_type))
        if plan is not None:
            return plan
        text = action
        if ":" not in action and resource_type is not None:
            text = f"{resource_type}:{action}"
        try:
            required = Permission.parse(text, setting="action")
        except ConfigurationError as exc:
            raise AuthzInputError(str(exc)) from None
        if resource_type is not None and required.resource != resource_type:
            raise AuthzInputError(
                f"action {required} is not an action of resource type {resource_type}"
            )
        keys = keys_for(required)
        if WILDCARD in (required.resource, required.action):
            # A wildcard requirement (posts:*) can be reached by a deny rule on any one of
            # its actions: those sit under keys the index cannot list, so scan (once: the
            # plan is kept).
            found = list(self.compiled)
        else:
            found = sorted(
                {id(r): r for key in keys for r in self._index.get(key, ())}.values(),
                key=lambda r: r.index,
            )
        applicable = [r for r in found if r.match(required) is not None]
        full, owner = role_plan(self.graph, required, keys)
        plan = Plan(
            required=required,
            text=str(required),
            keys=keys,
            denies=tuple(r for r in applicable if r.rule.effect is Effect.DENY),
            allows=tuple(r for r in applicable if r.rule.effect is Effect.ALLOW),
            full=MappingProxyType(full),
            full_roles=frozenset(full),
            owner=MappingProxyType(owner),
            owner_roles=frozenset(owner),
        )
        if len(self._plans) < _PLAN_CACHE:
            self._plans[(action, resource_type)] = plan
        return plan

    def subject_only(self, action: str) -> bool:
        """Whether a type-level check of ``action`` (no resource) reads nothing but the
        subject: no rule with a condition covers it, so the decision is the same for every
        request of one subject (its roles, grants and denies). The facade keeps such a
        passing decision beside the subject it read from the store (keyed by the record's
        bytes, so a demotion or a deny reaches the next request)."""
        plan = self._plan(action, None)
        return all(rule.condition is None for rule in (*plan.denies, *plan.allows))

    def rules_for(
        self, required: Permission
    ) -> tuple[tuple[CompiledRule, ...], tuple[CompiledRule, ...]]:
        """The deny rules and the allow rules (in policy order) with an action reaching
        ``required`` (:meth:`CompiledRule.match`; through ownership when
        ``match(required).needs_owner(required)``); whether each applies to a subject is
        :meth:`CompiledRule.applies_to`."""
        plan = self._plan(str(required), None)
        return plan.denies, plan.allows

    def grants_for(
        self, subject: object, required: Permission, tenant: str | None = None
    ) -> tuple[Match, ...]:
        """Every per-user grant and role permission of ``subject`` (in ``tenant``) that
        covers ``required``, fully or through ownership (``needs_owner``)."""
        s = Subject.of(subject)
        keys = keys_for(required)
        out = [m for g in s.grants if (m := match_grant(g, required, None, ())) is not None]
        for role in sorted(s.roles_in(tenant)):
            for key in keys:
                matches = (
                    match_grant(h.permission, required, h.role, h.via)
                    for h in self.graph.held(role, key)
                )
                out.extend(m for m in matches if m is not None)
        return tuple(out)

    def denies_for(self, subject: object, required: Permission) -> tuple[Match, ...]:
        """The per-user denies of ``subject`` that reach ``required`` (overlap it, see
        :meth:`Permission.overlaps`; ``needs_owner`` when only through ownership)."""
        s = Subject.of(subject)
        return tuple(
            Match(d, None, (), needs_owner=d.needs_owner(required))
            for d in s.denies
            if deny_reaches(d, required)
        )

    # -- the guide's API ----------------------------------------------------------------

    def has_role(self, subject: object, role: str, tenant: str | None = None) -> bool:
        """Whether ``subject`` holds ``role`` in ``tenant``, directly or by inheritance (an
        ``admin`` has ``user`` when admin inherits user). A user id is never a role."""
        held = Subject.of(subject).roles_in(tenant)
        if role in held:
            return True
        return not self.graph.holders(role).isdisjoint(held)

    def permissions_of(self, subject: object, tenant: str | None = None) -> frozenset[str]:
        """The texts of every permission ``subject`` holds in ``tenant`` (roles, inherited
        ones and per-user grants; per-user denies are not subtracted: see ``evaluate``)."""
        s = Subject.of(subject)
        out = {str(g) for g in s.grants}
        for role in s.roles_in(tenant):
            out |= self.graph.permissions(role)
        return frozenset(out)

    def allows(
        self,
        subject: object,
        resource: object,
        action: str,
        context: Mapping[str, object] | None = None,
    ) -> bool:
        """``evaluate(...).allowed``."""
        return self.evaluate(subject, resource, action, context).allowed

    def filter(
        self,
        subject: object,
        action: str,
        resource_type: str,
        context: Mapping[str, object] | None = None,
    ) -> Filter:
        """The residual filter over resources of ``resource_type`` that ``subject`` may
        ``action`` (see :mod:`bastion.core.authz.filters`)."""
        from bastion.core.authz.filters import (  # noqa: PLC0415 (loaded when asked: filters imports this module)
            filter_for,
        )

        return filter_for(self, subject, action, resource_type, context)

    def evaluate(
        self,
        subject: object,
        resource: object,
        action: str,
        context: Mapping[str, object] | None = None,
    ) -> Decision:
        """Decide whether ``subject`` may do ``action`` on ``resource`` (a Resource, the
        guide's dict, a resource type name for a type-level check, or None). ``action`` is a
        whole permission text, or a bare action of the resource's type. Malformed input is an
        :class:`~bastion.errors.AuthzInputError`."""
        s = subject if type(subject) is Subject else Subject.of(subject)
        r: Resource | None
        if resource is None:
            r, rtype = None, None
        elif isinstance(resource, str):
            if not is_segment(resource):
                raise AuthzInputError(f"resource type {resource!r:.60} is not a type name")
            r, rtype = None, resource
        else:
            r = resource if type(resource) is Resource else Resource.of(resource)
            rtype = r.type
        if context is None:
            ctx = _NO_CONTEXT
        elif isinstance(context, Mapping):
            ctx = context
        else:
            raise AuthzInputError(f"context must be a mapping, not {type(context).__name__}")
        plan = self._plans.get((action, rtype)) or self._plan(action, rtype)
        return decide(self.graph, plan, s, r, label=rtype if r is None else r.label, ctx=ctx)
