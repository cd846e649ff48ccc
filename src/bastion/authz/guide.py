"""The guide's API: ``has_permission``, ``has_role`` and ``require_permission``, as written.

::

    guide = runtime.authz.guide            # or Guide(policy) in a script or a test

    user = {"id": "u1", "roles": ["moderator"], "permissions": ["reports:export"]}
    guide.has_permission(user, "posts:delete")                    # True through moderator
    guide.has_permission(user, "write", {"type": "posts", "owner_id": "u1"})
    guide.has_role(user, "user")                                  # inherited roles count

    @guide.require_permission("posts:delete")
    async def delete_post(post_id: str, *, user: dict) -> None: ...

The guide calls them as plain functions; bind them once and its code runs unchanged (there is
no module-level policy to forget to set, and two apps in one process never share one)::

    has_permission, has_role = guide.has_permission, guide.has_role
    require_permission = guide.require_permission

``user`` is the guide's dict or a :class:`~bastion.core.authz.subjects.Subject`; its roles
are the ones it holds (nothing is read from a store here, unlike
:meth:`Authorizer.check <bastion.authz.service.Authorizer.check>`).
:meth:`Guide.require_permission` finds the user in the ``user`` (or ``current_user``)
keyword argument, else in the one positional argument that is a Subject (or, without one, the
one mapping with an ``"id"``); without one, or with two candidates (``f(post, user)``, where
the post could be taken for the user), the call raises
:class:`~bastion.errors.ConfigurationError` (a view wired wrongly never runs unchecked). A
denial raises :class:`~bastion.errors.Forbidden`, whose ``decision`` explains it, and is
audited when the guide belongs to an authorizer.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from bastion.core.authz.permission import Permission
from bastion.core.authz.subjects import Subject
from bastion.errors import ConfigurationError, Forbidden

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.authz.service import Authorizer
    from bastion.core.authz.decision import Decision
    from bastion.core.authz.policy import Policy

__all__ = ["Guide"]

P = ParamSpec("P")
R = TypeVar("R")

_USER_KEYWORDS = ("user", "current_user")


class Guide:
    """The guide's functions over ``policy`` (see the module docstring); ``authorizer``, when
    given, audits the denials of :meth:`require_permission`."""

    __slots__ = ("_authorizer", "policy")

    def __init__(self, policy: Policy, *, authorizer: Authorizer | None = None) -> None:
        self.policy = policy
        self._authorizer = authorizer

    def __repr__(self) -> str:
        return f"Guide(policy={self.policy.name!r})"

    def has_permission(self, user: object, permission: str, resource: object = None) -> bool:
        """Whether ``user`` may ``permission`` (on ``resource``, when given)."""
        return self.policy.evaluate(Subject.of(user), resource, permission).allowed

    def has_role(self, user: object, role: str, tenant: str | None = None) -> bool:
        """Whether ``user`` holds ``role``, directly or through a role that inherits it."""
        return self.policy.has_role(Subject.of(user), role, tenant)

    def evaluate(
        self,
        subject: object,
        resource: object,
        action: str,
        context: Mapping[str, object] | None = None,
    ) -> Decision:
        """The guide's ``evaluate(subject, resource, action, context)``: the decision."""
        return self.policy.evaluate(subject, resource, action, context)

    def require_permission(self, permission: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a sync or async function so it runs only for a user holding
        ``permission`` (checked now: a malformed permission fails at import)."""
        Permission.parse(permission, setting="require_permission")

        def decorate(function: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(function):

                @functools.wraps(function)
                async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                    self._require(_user_of(args, kwargs, function), permission)
                    return await function(*args, **kwargs)

                return guarded_async  # type: ignore[return-value]  # same signature, async

            @functools.wraps(function)
            def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
                self._require(_user_of(args, kwargs, function), permission)
                return function(*args, **kwargs)

            return guarded

        return decorate

    def _require(self, user: object, permission: str) -> None:
        subject = Subject.of(user)
        if self._authorizer is not None:
            decision = self._authorizer.decide(subject, permission)
        else:
            decision = self.policy.evaluate(subject, None, permission)
        if not decision.allowed:
            raise Forbidden(decision.explain(), decision=decision)


def _user_of(args: tuple[object, ...], kwargs: Mapping[str, object], function: object) -> object:
    for name in _USER_KEYWORDS:
        if name in kwargs:
            return kwargs[name]
    name = getattr(function, "__qualname__", repr(function))
    found: list[object] = [v for v in args if isinstance(v, Subject)]
    found = found or [v for v in args if isinstance(v, Mapping) and "id" in v]
    if len(found) > 1:
        # f(post, user): the post (a mapping with an "id", perhaps the request's body, with
        # "roles" of the client's choosing) would be taken for the user.
        raise ConfigurationError(
            f"require_permission on {name}: {len(found)} positional arguments could be the "
            "user; pass it as user= (a Subject or the guide's dict)",
            setting="require_permission",
        )
    if found:
        return found[0]
    raise ConfigurationError(
        f"require_permission on {name} found no user: pass user= (a Subject or the guide's "
        "dict) or make it the first argument",
        setting="require_permission",
    )
