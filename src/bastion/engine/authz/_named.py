"""The named forms of :meth:`~bastion.engine.authz.assignments.Assignments.change`, async
and sync: one line of intent each over the one change flow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.engine.authz.record import ChangeKind

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.core.authz.permission import Permission
    from bastion.engine.authz.record import Assignment

__all__ = ["NamedChanges"]


class NamedChanges:
    """Mixed into :class:`~bastion.engine.authz.assignments.Assignments`, which provides
    ``change`` and ``change_sync``."""

    __slots__ = ()

    if TYPE_CHECKING:

        async def change(
            self,
            actor: str,
            user_id: str,
            kind: ChangeKind,
            values: Iterable[str | Permission],
            *,
            tenant: str | None = None,
            may_administer: bool,
            client_ip: str | None = None,
        ) -> Assignment: ...

        def change_sync(
            self,
            actor: str,
            user_id: str,
            kind: ChangeKind,
            values: Iterable[str | Permission],
            *,
            tenant: str | None = None,
            may_administer: bool,
            client_ip: str | None = None,
        ) -> Assignment: ...

    async def assign_role(
        self,
        actor: str,
        user_id: str,
        role: str,
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """Give ``user_id`` the role ``role`` (globally, or in ``tenant`` only)."""
        return await self.change(
            actor,
            user_id,
            ChangeKind.ASSIGN_ROLE,
            (role,),
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
        )

    async def revoke_role(
        self,
        actor: str,
        user_id: str,
        role: str,
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """Take ``role`` from ``user_id`` (globally, or in ``tenant``)."""
        return await self.change(
            actor,
            user_id,
            ChangeKind.REVOKE_ROLE,
            (role,),
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
        )

    async def set_roles(
        self,
        actor: str,
        user_id: str,
        roles: Iterable[str],
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """Replace ``user_id``'s roles (globally, or in ``tenant``) with exactly ``roles``."""
        return await self.change(
            actor,
            user_id,
            ChangeKind.SET_ROLES,
            roles,
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
        )

    async def set_role(
        self,
        actor: str,
        user_id: str,
        role: str,
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """Replace ``user_id``'s roles with the one ``role`` (a promotion or a demotion)."""
        return await self.change(
            actor,
            user_id,
            ChangeKind.SET_ROLES,
            (role,),
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
        )

    async def grant(
        self,
        actor: str,
        user_id: str,
        permission: str | Permission,
        *,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """Give ``user_id`` the extra permission ``permission``."""
        return await self.change(
            actor,
            user_id,
            ChangeKind.GRANT,
            (permission,),
            may_administer=may_administer,
            client_ip=client_ip,
        )

    async def revoke_grant(
        self,
        actor: str,
        user_id: str,
        permission: str | Permission,
        *,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """Take back the extra permission ``permission`` from ``user_id``."""
        return await self.change(
            actor,
            user_id,
            ChangeKind.REVOKE_GRANT,
            (permission,),
            may_administer=may_administer,
            client_ip=client_ip,
        )

    async def deny(
        self,
        actor: str,
        user_id: str,
        permission: str | Permission,
        *,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """Deny ``permission`` to ``user_id`` whatever their roles grant."""
        return await self.change(
            actor,
            user_id,
            ChangeKind.DENY,
            (permission,),
            may_administer=may_administer,
            client_ip=client_ip,
        )

    async def revoke_deny(
        self,
        actor: str,
        user_id: str,
        permission: str | Permission,
        *,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """Lift the per-user deny of ``permission``."""
        return await self.change(
            actor,
            user_id,
            ChangeKind.REVOKE_DENY,
            (permission,),
            may_administer=may_administer,
            client_ip=client_ip,
        )

    # -- sync twins ------------------------------------------------------------------------

    def assign_role_sync(
        self,
        actor: str,
        user_id: str,
        role: str,
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`assign_role` on the store's synchronous side."""
        return self.change_sync(
            actor,
            user_id,
            ChangeKind.ASSIGN_ROLE,
            (role,),
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
        )

    def revoke_role_sync(
        self,
        actor: str,
        user_id: str,
        role: str,
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`revoke_role` on the store's synchronous side."""
        return self.change_sync(
            actor,
            user_id,
            ChangeKind.REVOKE_ROLE,
            (role,),
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
        )

    def set_roles_sync(
        self,
        actor: str,
        user_id: str,
        roles: Iterable[str],
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`set_roles` on the store's synchronous side."""
        return self.change_sync(
            actor,
            user_id,
            ChangeKind.SET_ROLES,
            roles,
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
        )

    def set_role_sync(
        self,
        actor: str,
        user_id: str,
        role: str,
        *,
        tenant: str | None = None,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`set_role` on the store's synchronous side."""
        return self.change_sync(
            actor,
            user_id,
            ChangeKind.SET_ROLES,
            (role,),
            tenant=tenant,
            may_administer=may_administer,
            client_ip=client_ip,
        )

    def grant_sync(
        self,
        actor: str,
        user_id: str,
        permission: str | Permission,
        *,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`grant` on the store's synchronous side."""
        return self.change_sync(
            actor,
            user_id,
            ChangeKind.GRANT,
            (permission,),
            may_administer=may_administer,
            client_ip=client_ip,
        )

    def revoke_grant_sync(
        self,
        actor: str,
        user_id: str,
        permission: str | Permission,
        *,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`revoke_grant` on the store's synchronous side."""
        return self.change_sync(
            actor,
            user_id,
            ChangeKind.REVOKE_GRANT,
            (permission,),
            may_administer=may_administer,
            client_ip=client_ip,
        )

    def deny_sync(
        self,
        actor: str,
        user_id: str,
        permission: str | Permission,
        *,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`deny` on the store's synchronous side."""
        return self.change_sync(
            actor,
            user_id,
            ChangeKind.DENY,
            (permission,),
            may_administer=may_administer,
            client_ip=client_ip,
        )

    def revoke_deny_sync(
        self,
        actor: str,
        user_id: str,
        permission: str | Permission,
        *,
        may_administer: bool,
        client_ip: str | None = None,
    ) -> Assignment:
        """:meth:`revoke_deny` on the store's synchronous side."""
        return self.change_sync(
            actor,
            user_id,
            ChangeKind.REVOKE_DENY,
            (permission,),
            may_administer=may_administer,
            client_ip=client_ip,
        )
