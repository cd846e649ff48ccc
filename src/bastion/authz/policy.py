"""``AuthzPolicy``: the authorization slice of ``Bastion(authz=...)``, frozen and validated.

::

    AuthzPolicy(
        policy=Policy(roles=(...), rules=(...)),     # or a path: "policy.yaml"
        routes=(
            RouteRule(path="/login", public=True),
            RouteRule(path="/admin/*", permission="admin:access"),
            RouteRule(path="/*"),                     # any signed-in user
        ),
    )

Everything is checked when the slice is built: a route rule's pattern, methods and permission,
the administrator permission, where roles live. A policy named by a path is read once, when the
:class:`~bastion.authz.service.Authorizer` is built (:meth:`AuthzPolicy.load`), with errors
naming the file and the line; never at request time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

from bastion.core.authz.permission import Permission
from bastion.core.authz.policy import Policy
from bastion.core.authz.routes import RouteRule, RouteTable
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from bastion.core.authz.subjects import Subject

__all__ = ["AuthzPolicy", "RoleLoader", "RouteRule"]

RoleLoader: TypeAlias = "Callable[[str], Subject | Mapping[str, object]]"
"""The app's own loader of a user's roles: the user id in, a
:class:`~bastion.core.authz.subjects.Subject` or the guide's dict out (read on every request
that needs it; keep it to one query)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthzPolicy:
    """The authorization settings (see the module docstring).

    ``policy`` is a :class:`~bastion.core.authz.policy.Policy`, or the path of a JSON, YAML
    or TOML file holding one. ``routes`` is the route table of the authorization middleware
    (:mod:`bastion.core.authz.routes`; empty: no route table, only the dependencies and
    decorators check). ``roles`` says where a user's roles live: ``"store"`` (bastion's store,
    changed through :class:`~bastion.engine.authz.Assignments`), or a callable of the app
    (:data:`RoleLoader`). ``admin_permission`` is the permission an actor needs to change
    another user's roles and grants. ``method_override`` accepts method-override headers (the
    request is then checked as every method it names); by default they are refused.
    """

    policy: Policy | str | Path
    routes: tuple[RouteRule, ...] = ()
    roles: Literal["store"] | RoleLoader = "store"
    admin_permission: str = "authz:admin"
    method_override: bool = False
    table: RouteTable = field(init=False, repr=False, compare=False)
    """The compiled route table."""

    def __post_init__(self) -> None:
        policy = self.policy
        if isinstance(policy, str):
            if not policy.strip():
                raise ConfigurationError(
                    "authz.policy is an empty path; give a Policy or a policy file",
                    setting="authz.policy",
                )
        elif not isinstance(policy, (Policy, Path)):
            raise ConfigurationError(
                "authz.policy must be a bastion.core.authz.Policy or the path of a .json, "
                f".yaml or .toml policy file, got {type(policy).__name__}",
                setting="authz.policy",
            )
        routes = self.routes
        if isinstance(routes, RouteRule):
            routes = (routes,)
        if not isinstance(routes, (tuple, list)):
            raise ConfigurationError(
                f"authz.routes must be a tuple of RouteRule, got {type(routes).__name__}",
                setting="authz.routes",
            )
        object.__setattr__(self, "routes", tuple(routes))
        object.__setattr__(
            self, "table", RouteTable(self.routes, method_override=self.method_override)
        )
        roles = self.roles
        if roles != "store" and (isinstance(roles, str) or not callable(roles)):
            raise ConfigurationError(
                "authz.roles must be 'store' (bastion's store) or a callable taking a user id "
                f"and returning a Subject or a mapping, got {roles!r}",
                setting="authz.roles",
            )
        Permission.parse(self.admin_permission, setting="authz.admin_permission")

    @property
    def roles_in_store(self) -> bool:
        """Whether users' roles live in bastion's store."""
        return self.roles == "store"

    def load(self) -> Policy:
        """The :class:`~bastion.core.authz.policy.Policy`: as given, or read from its file
        (errors name the file and the line)."""
        policy = self.policy
        if isinstance(policy, Policy):
            return policy
        from bastion.authz.files import (  # noqa: PLC0415 (only for a file)
            policy_from_file,
        )

        loaded: Policy = policy_from_file(policy)
        return loaded
