"""No escalation through role administration: an actor hands out only what they hold.

Holding the administrator permission (``authz:admin``) lets an actor change other users'
assignments, never their own (:class:`~bastion.errors.SelfGrantRefused`). Without the rule
here that refusal is two calls away: an ``admin`` gives ``super_admin`` to a second account
they control, which gives it back. So :class:`~bastion.authz.service.Authorizer` also checks,
before any write, that the actor:

* holds every role they assign (directly or by inheritance, in the tenant changed);
* holds every role the change takes away (a revoke, or the roles a ``set`` replaces), so an
  administrator cannot demote someone above them;
* is allowed every permission a grant, a deny or the revocation of either names (a deny of
  ``*`` would lock out a super administrator as surely as a demotion).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bastion.core.audit import EventName, Outcome
from bastion.engine.authz.record import ChangeKind
from bastion.errors import Forbidden

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.core.audit import Auditor
    from bastion.core.authz.policy import Policy
    from bastion.core.authz.subjects import Subject

__all__ = ["needs_target", "not_held", "refuse_escalation"]

_ROLE_KINDS: Final = frozenset(
    {ChangeKind.ASSIGN_ROLE, ChangeKind.REVOKE_ROLE, ChangeKind.SET_ROLES}
)


def needs_target(kind: ChangeKind) -> bool:
    """Whether checking ``kind`` needs the target's current roles (a ``set`` replaces them)."""
    return kind is ChangeKind.SET_ROLES


def not_held(
    policy: Policy,
    actor: Subject,
    kind: ChangeKind,
    values: Iterable[str],
    *,
    tenant: str | None,
    target: Subject | None = None,
) -> str | None:
    """The first role or permission of the change that ``actor`` does not hold, or ``None``.
    ``target`` is the changed user as the store holds them now (for a ``set``)."""
    wanted = tuple(str(v) for v in values)
    if kind not in _ROLE_KINDS:
        return next((p for p in wanted if not policy.allows(actor, None, p)), None)
    roles = list(wanted)
    if kind is ChangeKind.SET_ROLES and target is not None:
        current = target.roles if tenant is None else target.tenant_roles.get(tenant, ())
        roles += sorted(set(current) - set(wanted))
    return next((r for r in roles if not policy.has_role(actor, r, tenant)), None)


def refuse_escalation(  # noqa: PLR0917 (private: one call per driver of Authorizer.change)
    policy: Policy,
    auditor: Auditor,
    actor: Subject,
    kind: ChangeKind,
    values: Iterable[str],
    tenant: str | None,
    target: Subject | None,
    client_ip: str | None,
) -> None:
    """Refuse a change giving or taking what ``actor`` does not hold: ``authz_fail`` with
    reason ``beyond_actor`` (and the role or permission), then
    :class:`~bastion.errors.Forbidden`. Nothing when the actor holds it all."""
    missing = not_held(policy, actor, kind, values, tenant=tenant, target=target)
    if missing is None:
        return
    auditor.emit(
        EventName.AUTHZ_FAIL,
        outcome=Outcome.BLOCKED,
        user=actor.id,
        client_ip=client_ip,
        details={"reason": "beyond_actor", "change": str(kind), "value": missing},
    )
    raise Forbidden(
        f"an administrator may only give or take roles and permissions they hold themselves "
        f"({missing!r} is not theirs)",
        decision=None,
    )
