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

Everything that can be computed before a request is computed in ``__post_init__``: the role
graph with flattened permissions, every rule's condition compiled, and an index of rules by
``(resource, action)``; a decision looks up at most four keys (``*`` in either segment) per
role the subject holds, and never scans every rule.

For the query-filter builder (``bastion.core.authz.filters``) the policy exposes
:attr:`Policy.graph`, :attr:`Policy.compiled`, :meth:`Policy.required`,
:meth:`Policy.rules_for`, :meth:`Policy.grants_for` and :meth:`Policy.denies_for`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from bastion.core.authz.conditions import (
    AllOf,
    AnyOf,
    Compiled,
    Condition,
    ConditionError,
    Expression,
    Not,
    compile_condition,
)
from bastion.core.authz.decision import AuthzReason, Decision
from bastion.core.authz.permission import OWN, WILDCARD, Permission, is_segment
from bastion.core.authz.roles import Role, RoleGraph
from bastion.core.authz.subjects import Resource, Subject
from bastion.errors import AuthzInputError, ConfigurationError

if TYPE_CHECKING:
    # filters.py belongs to helper authz-filters; until it lands the import is unresolved.
    from bastion.core.authz.filters import Filter  # type: ignore[import-not-found, unused-ignore]

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


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready for decisions: its position in :attr:`Policy.rules`, its condition
    compiled (None when it has none), and ``holders``, the roles that satisfy its ``roles``
    (inheriting roles included; None means anyone)."""

    rule: Rule
    index: int
    condition: Compiled | None
    holders: frozenset[str] | None

    def applies_to(self, held: frozenset[str]) -> bool:
        """Whether a subject holding ``held`` (roles, not closed) is one this rule is for."""
        return self.holders is None or not self.holders.isdisjoint(held)

    def match(self, required: Permission) -> Permission | None:
        """The first action of this rule that covers ``required``: fully, or (``:own``)
        once ownership is checked by the caller. None if none does."""
        for permission in self.rule.permissions:
            if permission.scope == OWN:
                if permission.covers_as_owner(required):
                    return permission
            elif permission.covers(required):
                return permission
        return None


@dataclass(frozen=True, slots=True)
class Match:
    """A grant (per-user, or held through a role) that covers a required permission.

    ``needs_owner`` is True for an ``:own`` grant: it applies only to a resource whose owner
    is the subject (and, with no resource, only to a required ``:own`` permission).
    """

    permission: Permission
    role: str | None
    via: tuple[str, ...]
    needs_owner: bool


@dataclass(frozen=True, slots=True)
class _Plan:
    required: Permission
    keys: tuple[tuple[str, str], ...]
    denies: tuple[CompiledRule, ...]
    allows: tuple[CompiledRule, ...]


def _keys(required: Permission) -> tuple[tuple[str, str], ...]:
    return tuple(
        (res, act)
        for res in dict.fromkeys((required.resource, WILDCARD))
        for act in dict.fromkeys((required.action, WILDCARD))
    )


def _owns(subject: Subject, resource: Resource | None, required: Permission) -> bool:
    if resource is None:
        return required.scope == OWN  # type-level: holding the :own permission itself
    return resource.owner is not None and resource.owner == subject.id


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Roles and rules, validated and compiled when built. See the module docstring."""

    roles: tuple[Role, ...] = ()
    rules: tuple[Rule, ...] = ()
    max_depth: int = 16
    name: str = "policy"
    graph: RoleGraph = field(init=False, repr=False, compare=False)
    compiled: tuple[CompiledRule, ...] = field(init=False, repr=False, compare=False)
    _index: Mapping[tuple[str, str], tuple[CompiledRule, ...]] = field(
        init=False, repr=False, compare=False
    )
    _plans: dict[tuple[str, str | None], _Plan] = field(init=False, repr=False, compare=False)

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
        object.__setattr__(self, "compiled", tuple(compiled))
        object.__setattr__(
            self, "_index", MappingProxyType({k: tuple(v) for k, v in index.items()})
        )
        object.__setattr__(self, "_plans", {})

    # -- what the filter builder and the facade use -------------------------------------

    def required(self, action: object, resource_type: str | None = None) -> Permission:
        """The permission a check asks for: ``action`` as a whole permission text, or a
        bare action of ``resource_type``. An :class:`~bastion.errors.AuthzInputError` if it
        is not one, or names another resource type than ``resource_type``."""
        return self._plan(action, resource_type).required

    def _plan(self, action: object, resource_type: str | None) -> _Plan:
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
        keys = _keys(required)
        found = sorted(
            {id(r): r for key in keys for r in self._index.get(key, ())}.values(),
            key=lambda r: r.index,
        )
        applicable = [r for r in found if r.match(required) is not None]
        plan = _Plan(
            required=required,
            keys=keys,
            denies=tuple(r for r in applicable if r.rule.effect is Effect.DENY),
            allows=tuple(r for r in applicable if r.rule.effect is Effect.ALLOW),
        )
        if len(self._plans) < _PLAN_CACHE:
            self._plans[(action, resource_type)] = plan
        return plan

    def rules_for(
        self, required: Permission
    ) -> tuple[tuple[CompiledRule, ...], tuple[CompiledRule, ...]]:
        """The deny rules and the allow rules (in policy order) with an action covering
        ``required`` (an ``:own`` action included: check ``match(required).scope``); whether
        each applies to a subject is :meth:`CompiledRule.applies_to`."""
        plan = self._plan(str(required), None)
        return plan.denies, plan.allows

    def grants_for(
        self, subject: object, required: Permission, tenant: str | None = None
    ) -> tuple[Match, ...]:
        """Every per-user grant and role permission of ``subject`` (in ``tenant``) that
        covers ``required``, fully or through ownership (``needs_owner``)."""
        s = Subject.of(subject)
        keys = _keys(required)
        out = [m for g in s.grants if (m := self._match(g, required, None, ())) is not None]
        for role in sorted(s.roles_in(tenant)):
            for key in keys:
                matches = (
                    self._match(h.permission, required, h.role, h.via)
                    for h in self.graph.held(role, key)
                )
                out.extend(m for m in matches if m is not None)
        return tuple(out)

    def denies_for(self, subject: object, required: Permission) -> tuple[Match, ...]:
        """The per-user denies of ``subject`` that cover ``required``."""
        s = Subject.of(subject)
        return tuple(m for d in s.denies if (m := self._match(d, required, None, ())) is not None)

    @staticmethod
    def _match(
        permission: Permission, required: Permission, role: str | None, via: tuple[str, ...]
    ) -> Match | None:
        if permission.scope == OWN:
            if permission.covers_as_owner(required):
                return Match(permission, role, via, needs_owner=True)
            return None
        if permission.covers(required):
            return Match(permission, role, via, needs_owner=False)
        return None

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
        from bastion.core.authz.filters import (  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 (loaded when asked: filters imports this module)
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
        s = Subject.of(subject)
        r: Resource | None
        if resource is None:
            r, rtype = None, None
        elif isinstance(resource, str):
            if not is_segment(resource):
                raise AuthzInputError(f"resource type {resource!r:.60} is not a type name")
            r, rtype = None, resource
        else:
            r = Resource.of(resource)
            rtype = r.type
        if context is None:
            ctx = _NO_CONTEXT
        elif isinstance(context, Mapping):
            ctx = context
        else:
            raise AuthzInputError(f"context must be a mapping, not {type(context).__name__}")
        plan = self._plan(action, rtype)
        return _Evaluation(self, plan, subject=s, resource=r, rtype=rtype, ctx=ctx).run()


class _Evaluation:
    """One decision, step by step (see the module docstring for the order)."""

    __slots__ = ("ctx", "label", "plan", "policy", "required", "resource", "subject", "text")

    def __init__(
        self,
        policy: Policy,
        plan: _Plan,
        *,
        subject: Subject,
        resource: Resource | None,
        rtype: str | None,
        ctx: Mapping[str, object],
    ) -> None:
        self.policy, self.plan, self.subject, self.resource, self.ctx = (
            policy,
            plan,
            subject,
            resource,
            ctx,
        )
        self.required = plan.required
        self.text = str(plan.required)
        self.label = resource.label if resource is not None else rtype

    def allow(self, reason: AuthzReason, **evidence: object) -> Decision:
        return self._decide(reason, evidence, allowed=True)

    def deny(self, reason: AuthzReason, **evidence: object) -> Decision:
        return self._decide(reason, evidence, allowed=False)

    def _decide(
        self, reason: AuthzReason, evidence: dict[str, object], *, allowed: bool
    ) -> Decision:
        return Decision(
            allowed=allowed,
            reason=reason,
            action=self.text,
            subject=self.subject.id,
            resource=self.label,
            **evidence,  # type: ignore[arg-type]
        )

    def run(self) -> Decision:  # noqa: PLR0911, PLR0912 (the documented order, one step a branch)
        s, r, required = self.subject, self.resource, self.required
        for deny in s.denies:
            if Policy._match(deny, required, None, ()) is not None and (
                deny.scope != OWN or _owns(s, r, required)
            ):
                return self.deny(AuthzReason.DENIED_BY_GRANT, rule=str(deny))
        held = s.roles_in(r.tenant if r is not None else None)
        error: tuple[CompiledRule, ConditionError] | None = None
        for rule in self.plan.denies:
            outcome = self.holds(rule, held)
            if isinstance(outcome, ConditionError):
                error = error or (rule, outcome)
            elif outcome:
                return self.deny(
                    AuthzReason.DENIED_BY_RULE,
                    rule=rule.rule.name,
                    condition=rule.condition.text if rule.condition else None,
                )
        allowed_rule: CompiledRule | None = None
        failed_rule: CompiledRule | None = None
        for rule in self.plan.allows:
            outcome = self.holds(rule, held)
            if isinstance(outcome, ConditionError):
                error = error or (rule, outcome)
            elif outcome:
                allowed_rule = allowed_rule or rule
            elif outcome is False:
                failed_rule = failed_rule or rule
        if error is not None:
            rule, exc = error
            return self.deny(
                AuthzReason.CONDITION_ERROR,
                rule=rule.rule.name,
                condition=exc.condition,
                error=exc.why,
            )
        not_owner: Match | None = None
        for grant in s.grants:
            m = Policy._match(grant, required, None, ())
            if m is None:
                continue
            if not m.needs_owner:
                return self.allow(AuthzReason.ALLOWED_BY_GRANT, rule=str(grant))
            if _owns(s, r, required):
                return self.allow(AuthzReason.ALLOWED_AS_OWNER, rule=str(grant))
            not_owner = not_owner or m
        graph = self.policy.graph
        for role in sorted(held) if len(held) > 1 else held:
            for key in self.plan.keys:
                for h in graph.held(role, key):
                    p = h.permission
                    if p.scope != OWN:
                        if p.covers(required):
                            return self.allow(
                                AuthzReason.ALLOWED_BY_ROLE,
                                rule=str(p),
                                role=h.role,
                                via=h.via,
                            )
                    elif p.covers_as_owner(required):
                        if _owns(s, r, required):
                            return self.allow(
                                AuthzReason.ALLOWED_AS_OWNER,
                                rule=str(p),
                                role=h.role,
                                via=h.via,
                            )
                        not_owner = not_owner or Match(p, h.role, h.via, needs_owner=True)
        if allowed_rule is not None:
            return self.allow(
                AuthzReason.ALLOWED_BY_RULE,
                rule=allowed_rule.rule.name,
                condition=allowed_rule.condition.text if allowed_rule.condition else None,
            )
        return self.refuse(not_owner, failed_rule)

    def holds(self, rule: CompiledRule, held: frozenset[str]) -> bool | ConditionError | None:
        """True/False for an applicable rule's condition, the error it raised, or None when
        the rule does not apply to this subject or resource (roles, ownership)."""
        if not rule.applies_to(held):
            return None
        action = rule.match(self.required)
        if action is None or (
            action.scope == OWN and not _owns(self.subject, self.resource, self.required)
        ):
            return None
        if rule.condition is None:
            return True
        try:
            return rule.condition(self.subject, self.resource, self.ctx)
        except ConditionError as exc:
            return exc

    def refuse(self, not_owner: Match | None, failed_rule: CompiledRule | None) -> Decision:
        if not_owner is not None:
            return self.deny(
                AuthzReason.NOT_OWNER,
                rule=str(not_owner.permission),
                role=not_owner.role,
                via=not_owner.via,
            )
        if failed_rule is not None:
            return self.deny(
                AuthzReason.CONDITION_FAILED,
                rule=failed_rule.rule.name,
                condition=failed_rule.condition.text if failed_rule.condition else None,
            )
        r = self.resource
        if r is not None and r.tenant is not None:
            for tenant, roles in self.subject.tenant_roles.items():
                if tenant != r.tenant and self._any_role_covers(roles):
                    return self.deny(AuthzReason.WRONG_TENANT)
        return self.deny(AuthzReason.NO_MATCH)

    def _any_role_covers(self, roles: frozenset[str]) -> bool:
        graph = self.policy.graph
        for role in roles:
            for key in self.plan.keys:
                for h in graph.held(role, key):
                    if h.permission.covers(self.required) or h.permission.covers_as_owner(
                        self.required
                    ):
                        return True
        return False
