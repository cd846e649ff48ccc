"""The decision procedure behind :meth:`bastion.core.authz.policy.Policy.evaluate`.

Kept apart from the policy's configuration so that the hot path reads top to bottom: plain
functions over precomputed plans, with the rule and grant steps skipped when a plan or a
subject has none (an RBAC check is then two set intersections and one Decision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.core.authz.conditions import ConditionError
from bastion.core.authz.decision import AuthzReason, Decision, make_decision
from bastion.core.authz.permission import OWN, WILDCARD, Permission

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.core.authz.conditions import Compiled
    from bastion.core.authz.policy import Rule
    from bastion.core.authz.roles import RoleGraph
    from bastion.core.authz.subjects import Resource, Subject

__all__ = [
    "CompiledRule",
    "Match",
    "Plan",
    "decide",
    "deny_reaches",
    "keys_for",
    "match_grant",
    "role_plan",
]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready for decisions: its position in ``Policy.rules``, its condition compiled
    (None when it has none), and ``holders``, the roles that satisfy its ``roles``
    (inheriting roles included; None means anyone)."""

    rule: Rule
    index: int
    condition: Compiled | None
    holders: frozenset[str] | None

    def applies_to(self, held: frozenset[str]) -> bool:
        """Whether a subject holding ``held`` (its roles, as held) is one this rule is for."""
        return self.holders is None or not self.holders.isdisjoint(held)

    def match(self, required: Permission) -> Permission | None:
        """The first action of this rule that reaches ``required``, None if none does. An
        allow rule's action must cover it (:meth:`Permission.covers`), a deny rule's overlap
        it (:meth:`Permission.overlaps`); either may reach it through ownership only
        (``action.needs_owner(required)``: the caller checks the owner)."""
        deny = self.rule.effect == "deny"
        for permission in self.rule.permissions:
            if permission.scope == OWN and permission.covers_as_owner(required):
                return permission
            if permission.overlaps(required) if deny else permission.covers(required):
                return permission
        return None


@dataclass(frozen=True, slots=True)
class Match:
    """A grant (per-user, or held through a role) that covers a required permission.

    ``needs_owner`` is True for an ``:own`` grant: it applies only to a resource whose owner
    is the subject (and, with no resource, only to a required ``:own`` permission).
    ``role`` is None for a per-user grant; ``via`` the inheritance path to ``role``.
    """

    permission: Permission
    role: str | None
    via: tuple[str, ...]
    needs_owner: bool


def match_grant(
    permission: Permission, required: Permission, role: str | None, via: tuple[str, ...]
) -> Match | None:
    """``permission`` as a :class:`Match` for ``required``, or None if it does not cover it."""
    if permission.scope == OWN:
        if permission.covers_as_owner(required):
            return Match(permission, role, via, needs_owner=True)
        return None
    if permission.covers(required):
        return Match(permission, role, via, needs_owner=False)
    return None


def deny_reaches(deny: Permission, required: Permission) -> bool:
    """Whether a per-user ``deny`` reaches ``required`` (through ownership when
    ``deny.needs_owner(required)``)."""
    if deny.scope == OWN and deny.covers_as_owner(required):
        return True
    return deny.overlaps(required)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one required permission needs, computed once per (action, resource type): the
    rules with a covering action, and the roles whose own permissions cover it fully
    (``full``) or once ownership holds (``owner``), each with the permission's text."""

    required: Permission
    text: str
    keys: tuple[tuple[str, str], ...]
    denies: tuple[CompiledRule, ...]
    allows: tuple[CompiledRule, ...]
    full: Mapping[str, str]
    full_roles: frozenset[str]
    owner: Mapping[str, str]
    owner_roles: frozenset[str]


def keys_for(required: Permission) -> tuple[tuple[str, str], ...]:
    """The ``(resource, action)`` index keys a grant covering ``required`` can sit under."""
    return tuple(
        (res, act)
        for res in dict.fromkeys((required.resource, WILDCARD))
        for act in dict.fromkeys((required.action, WILDCARD))
    )


def role_plan(
    graph: RoleGraph, required: Permission, keys: tuple[tuple[str, str], ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """The roles given a permission covering ``required`` (fully; through ownership), each
    with the text of the first such permission (exact keys before wildcard ones)."""
    full: dict[str, str] = {}
    owner: dict[str, str] = {}
    for key in keys:
        for role in sorted(graph.origins(key), key=graph.rank):
            for permission in graph.own(role, key):
                if permission.scope == OWN:
                    if permission.covers_as_owner(required):
                        owner.setdefault(role, str(permission))
                elif permission.covers(required):
                    full.setdefault(role, str(permission))
    return full, owner


def _owns(subject: Subject, resource: Resource | None, required: Permission) -> bool:
    if resource is None:
        return required.scope == OWN  # type-level: holding the :own permission itself
    return resource.owner is not None and resource.owner == subject.id


def _as_owner(resource: Resource | None, plain: AuthzReason) -> AuthzReason:
    """``allowed_as_owner`` when ownership of a resource decided; ``plain`` for a type-level
    check of an ``:own`` permission (there is no resource to own)."""
    return plain if resource is None else AuthzReason.ALLOWED_AS_OWNER


def _holds(
    rule: CompiledRule,
    required: Permission,
    s: Subject,
    r: Resource | None,
    *,
    held: frozenset[str],
    ctx: Mapping[str, object],
) -> bool | ConditionError | None:
    """True/False for an applicable rule's condition, the error it raised, or None when the
    rule does not apply to this subject or resource (roles, ownership)."""
    if not rule.applies_to(held):
        return None
    action = rule.match(required)
    if action is None or (action.needs_owner(required) and not _owns(s, r, required)):
        return None
    if rule.condition is None:
        return True
    try:
        return rule.condition(s, r, ctx)
    except ConditionError as exc:
        return exc


def decide(  # noqa: PLR0911, PLR0912 (the documented order, one step a branch)
    graph: RoleGraph,
    plan: Plan,
    s: Subject,
    r: Resource | None,
    *,
    label: str | None,
    ctx: Mapping[str, object],
) -> Decision:
    """One decision in the order of ``bastion.core.authz.policy``'s docstring."""
    required, text, sid = plan.required, plan.text, s.id
    for deny in s.denies:
        if deny_reaches(deny, required) and (
            not deny.needs_owner(required) or _owns(s, r, required)
        ):
            return make_decision(
                allowed=False,
                reason=AuthzReason.DENIED_BY_GRANT,
                action=text,
                subject=sid,
                resource=label,
                rule=str(deny),
            )
    held = s.roles if r is None or r.tenant is None else s.roles_in(r.tenant)
    allowed_rule: CompiledRule | None = None
    failed_rule: CompiledRule | None = None
    if plan.denies or plan.allows:
        error: tuple[CompiledRule, ConditionError] | None = None
        for rule in plan.denies:
            outcome = _holds(rule, required, s, r, held=held, ctx=ctx)
            if isinstance(outcome, ConditionError):
                error = error or (rule, outcome)
            elif outcome:
                return make_decision(
                    allowed=False,
                    reason=AuthzReason.DENIED_BY_RULE,
                    action=text,
                    subject=sid,
                    resource=label,
                    rule=rule.rule.name,
                    condition=rule.condition.text if rule.condition else None,
                )
        for rule in plan.allows:
            outcome = _holds(rule, required, s, r, held=held, ctx=ctx)
            if isinstance(outcome, ConditionError):
                error = error or (rule, outcome)
            elif outcome:
                allowed_rule = allowed_rule or rule
            elif outcome is False:
                failed_rule = failed_rule or rule
        if error is not None:
            return make_decision(
                allowed=False,
                reason=AuthzReason.CONDITION_ERROR,
                action=text,
                subject=sid,
                resource=label,
                rule=error[0].rule.name,
                condition=error[1].condition,
                error=error[1].why,
            )
    not_owner: Match | None = None
    for grant in s.grants:
        m = match_grant(grant, required, None, ())
        if m is None:
            continue
        if not m.needs_owner or _owns(s, r, required):
            reason = AuthzReason.ALLOWED_BY_GRANT
            if m.needs_owner:
                reason = _as_owner(r, reason)
            return make_decision(
                allowed=True,
                reason=reason,
                action=text,
                subject=sid,
                resource=label,
                rule=str(grant),
            )
        not_owner = not_owner or m
    roles = sorted(held) if len(held) > 1 else held
    if plan.full_roles:
        for role in roles:
            hit = graph.closure(role) & plan.full_roles
            if hit:
                origin = graph.first(hit)
                return make_decision(
                    allowed=True,
                    reason=AuthzReason.ALLOWED_BY_ROLE,
                    action=text,
                    subject=sid,
                    resource=label,
                    rule=plan.full[origin],
                    role=origin,
                    via=graph.via(role, origin),
                )
    if plan.owner_roles:
        owns = _owns(s, r, required)
        for role in roles:
            hit = graph.closure(role) & plan.owner_roles
            if hit:
                origin = graph.first(hit)
                if owns:
                    return make_decision(
                        allowed=True,
                        reason=_as_owner(r, AuthzReason.ALLOWED_BY_ROLE),
                        action=text,
                        subject=sid,
                        resource=label,
                        rule=plan.owner[origin],
                        role=origin,
                        via=graph.via(role, origin),
                    )
                if not_owner is None:
                    permission = Permission.parse(plan.owner[origin])
                    not_owner = Match(permission, origin, graph.via(role, origin), needs_owner=True)
    if allowed_rule is not None:
        return make_decision(
            allowed=True,
            reason=AuthzReason.ALLOWED_BY_RULE,
            action=text,
            subject=sid,
            resource=label,
            rule=allowed_rule.rule.name,
            condition=allowed_rule.condition.text if allowed_rule.condition else None,
        )
    return _refuse(graph, plan, s, r, label=label, not_owner=not_owner, failed_rule=failed_rule)


def _refuse(
    graph: RoleGraph,
    plan: Plan,
    s: Subject,
    r: Resource | None,
    *,
    label: str | None,
    not_owner: Match | None,
    failed_rule: CompiledRule | None,
) -> Decision:
    """The deny when nothing allowed, with the reason that explains it best."""
    if not_owner is not None:
        return make_decision(
            allowed=False,
            reason=AuthzReason.NOT_OWNER,
            action=plan.text,
            subject=s.id,
            resource=label,
            rule=str(not_owner.permission),
            role=not_owner.role,
            via=not_owner.via,
        )
    if failed_rule is not None:
        return make_decision(
            allowed=False,
            reason=AuthzReason.CONDITION_FAILED,
            action=plan.text,
            subject=s.id,
            resource=label,
            rule=failed_rule.rule.name,
            condition=failed_rule.condition.text if failed_rule.condition else None,
        )
    reason = AuthzReason.NO_MATCH
    if r is not None and r.tenant is not None:
        wanted = plan.full_roles | plan.owner_roles
        for tenant, roles in s.tenant_roles.items():
            if tenant != r.tenant and any(
                not graph.closure(role).isdisjoint(wanted) for role in roles
            ):
                reason = AuthzReason.WRONG_TENANT
                break
    return make_decision(
        allowed=False, reason=reason, action=plan.text, subject=s.id, resource=label
    )
