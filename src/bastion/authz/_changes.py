"""Changes of roles and grants through an :class:`~bastion.authz.service.Authorizer`.

Mixed into the Authorizer: the actor must hold ``AuthzPolicy.admin_permission`` (in the tenant
changed, for a tenant role), may not be the target
(:class:`~bastion.errors.SelfGrantRefused`), may only give or take what they hold
(:mod:`bastion.authz._escalation`), and must still hold all that once the change has landed
(the check :meth:`~bastion.engine.authz.Assignments.change_flow` makes again after its write).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.authz._escalation import needs_target, not_held, refuse_escalation
from bastion.authz._known import subject_of
from bastion.core.authz.subjects import Resource
from bastion.engine.authz.record import ChangeKind
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.authz.policy import AuthzPolicy
    from bastion.core.audit import Auditor
    from bastion.core.authz.policy import Policy
    from bastion.core.authz.subjects import Subject
    from bastion.engine.authz import Assignments
    from bastion.engine.authz.assignments import StillAllowed
    from bastion.engine.authz.record import Assignment

__all__ = ["Changes"]


class Changes:
    """The change methods of :class:`~bastion.authz.service.Authorizer`."""

    __slots__ = ()

    if TYPE_CHECKING:
        policy: AuthzPolicy
        engine: Policy
        assignments: Assignments | None
        _auditor: Auditor

        async def subject_for(self, user_id: str, *, version: int | None = None) -> Subject: ...

        def subject_for_sync(self, user_id: str, *, version: int | None = None) -> Subject: ...

    def _store(self) -> Assignments:
        if self.assignments is None:
            raise ConfigurationError(
                "roles live in the app's own data (authz.roles is a loader); change them there",
                setting="authz.roles",
            )
        return self.assignments

    def _may_administer(self, actor: Subject, tenant: str | None) -> bool:
        resource = None if tenant is None else Resource(type="authz", tenant=tenant)
        return self.engine.evaluate(actor, resource, self.policy.admin_permission).allowed

    def _still_allowed(
        self,
        actor: str,
        user_id: str,
        kind: ChangeKind,
        wanted: tuple[str, ...],
        tenant: str | None,
    ) -> StillAllowed:
        """The check the change makes again once it has landed, on the actor's record read
        after its write (see :meth:`Assignments.change_flow`): the actor still administers
        assignments (in ``tenant``) and still holds all the change gives or takes."""

        def check(actor_now: Assignment, target_before: Assignment) -> bool:
            subject = subject_of(actor, actor_now)
            target = subject_of(user_id, target_before) if needs_target(kind) else None
            return self._may_administer(subject, tenant) and (
                not_held(self.engine, subject, kind, wanted, tenant=tenant, target=target) is None
            )

        return check

    async def change(
        self,
        actor: str,
        user_id: str,
        kind: ChangeKind,
        values: Iterable[str],
        *,
        tenant: str | None = None,
        client_ip: str | None = None,
    ) -> Assignment:
        """Change ``user_id``'s assignment as ``actor``, who must hold the administrator
        permission (in ``tenant`` for a tenant change), may not be ``user_id``, and may only
        give or take roles and permissions they hold (:mod:`bastion.authz._escalation`)."""
        store = self._store()
        subject = await self.subject_for(actor)
        allowed = self._may_administer(subject, tenant)
        wanted = tuple(values)
        if allowed and actor != user_id:  # else the store refuses, and audits why
            target = await self.subject_for(user_id) if needs_target(kind) else None
            refuse_escalation(
                self.engine, self._auditor, subject, kind, wanted, tenant, target, client_ip
            )
        return await store.change(
            actor,
            user_id,
            kind,
            wanted,
            tenant=tenant,
            may_administer=allowed,
            client_ip=client_ip,
            still_allowed=self._still_allowed(actor, user_id, kind, wanted, tenant),
        )

    def change_sync(
        self,
        actor: str,
        user_id: str,
        kind: ChangeKind,
        values: Iterable[str],
        *,
        tenant: str | None = None,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`change` for WSGI apps."""
        store = self._store()
        subject = self.subject_for_sync(actor)
        allowed = self._may_administer(subject, tenant)
        wanted = tuple(values)
        if allowed and actor != user_id:  # else the store refuses, and audits why
            target = self.subject_for_sync(user_id) if needs_target(kind) else None
            refuse_escalation(
                self.engine, self._auditor, subject, kind, wanted, tenant, target, client_ip
            )
        return store.change_sync(
            actor,
            user_id,
            kind,
            wanted,
            tenant=tenant,
            may_administer=allowed,
            client_ip=client_ip,
            still_allowed=self._still_allowed(actor, user_id, kind, wanted, tenant),
        )

    async def assign_role(
        self, actor: str, user_id: str, role: str, *, tenant: str | None = None
    ) -> Assignment:
        """Give ``user_id`` the role ``role`` (see :meth:`change`)."""
        return await self.change(actor, user_id, ChangeKind.ASSIGN_ROLE, (role,), tenant=tenant)

    async def revoke_role(
        self, actor: str, user_id: str, role: str, *, tenant: str | None = None
    ) -> Assignment:
        """Take the role ``role`` from ``user_id`` (see :meth:`change`)."""
        return await self.change(actor, user_id, ChangeKind.REVOKE_ROLE, (role,), tenant=tenant)

    async def set_role(
        self, actor: str, user_id: str, role: str, *, tenant: str | None = None
    ) -> Assignment:
        """Make ``role`` the only role of ``user_id`` (a demotion; see :meth:`change`)."""
        return await self.change(actor, user_id, ChangeKind.SET_ROLES, (role,), tenant=tenant)

    async def grant(self, actor: str, user_id: str, permission: str) -> Assignment:
        """Give ``user_id`` the per-user permission ``permission`` (see :meth:`change`)."""
        return await self.change(actor, user_id, ChangeKind.GRANT, (permission,))

    async def deny(self, actor: str, user_id: str, permission: str) -> Assignment:
        """Deny ``user_id`` ``permission`` whatever their roles (see :meth:`change`)."""
        return await self.change(actor, user_id, ChangeKind.DENY, (permission,))
