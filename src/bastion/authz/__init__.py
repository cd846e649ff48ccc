"""Authorization: roles, permissions, ownership and ABAC policies behind ``Bastion(authz=...)``.

::

    from bastion.authz import AuthzPolicy, Policy, Role, Rule, Condition, Ref

    policy = Policy(
        roles=(
            Role("user", permissions=("posts:read", "posts:write:own")),
            Role("moderator", inherits=("user",), permissions=("posts:*",)),
        ),
        rules=(
            Rule("no-locked-writes", effect="deny", actions=("posts:write",), resource="posts",
                 when=Condition(Ref.parse("resource.locked"), "equals", True)),
        ),
    )
    config = Bastion(store="sqlite:///app.db", authz=AuthzPolicy(policy=policy))
    decision = await runtime.authz.check("u1", "posts:write", post)   # explains itself

The model is sans-I/O in :mod:`bastion.core.authz`; the users' roles live in bastion's store
(:mod:`bastion.engine.authz`) or in the app's own data; :class:`Authorizer` is the service
(``runtime.authz``); the adapters are :mod:`bastion.asgi.authz`, :mod:`bastion.wsgi.authz`,
:mod:`bastion.flask.authz`, ``bastion.fastapi.require`` and ``bastion.starlette``'s
decorator. Policies load from JSON, YAML or TOML files (:func:`policy_from_file`); query
filters become SQLAlchemy expressions in :mod:`bastion.authz.sqlalchemy` (the ``sqlalchemy``
extra).
"""

from __future__ import annotations

from bastion.authz.files import policy_from_file
from bastion.authz.policy import AuthzPolicy, RouteRule
from bastion.authz.service import Authorizer
from bastion.core.authz.conditions import AllOf, AnyOf, Condition, Not, Operator, Ref
from bastion.core.authz.decision import AuthzReason, Decision
from bastion.core.authz.loader import PolicyError, load_policy
from bastion.core.authz.permission import Permission
from bastion.core.authz.policy import Effect, Policy, Rule
from bastion.core.authz.roles import Role
from bastion.core.authz.subjects import Resource, Subject

__all__ = [
    "AllOf",
    "AnyOf",
    "Authorizer",
    "AuthzPolicy",
    "AuthzReason",
    "Condition",
    "Decision",
    "Effect",
    "Not",
    "Operator",
    "Permission",
    "Policy",
    "PolicyError",
    "Ref",
    "Resource",
    "Role",
    "RouteRule",
    "Rule",
    "Subject",
    "load_policy",
    "policy_from_file",
]
