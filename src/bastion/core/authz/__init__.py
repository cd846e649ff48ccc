"""Authorization, sans-I/O: permissions, subjects and resources, roles, ABAC conditions, the
policy that decides, and the decision that explains itself.

No store, no asyncio, no file reading here: roles held by a user come in on the
:class:`Subject` (``bastion.engine.authz`` reads them from the store), files are read by
``bastion.authz.files``. See ``Policy`` for the order of a decision.
"""

from __future__ import annotations

from bastion.core.authz.conditions import (
    AllOf,
    AnyOf,
    Compiled,
    Condition,
    ConditionError,
    Expression,
    Not,
    Operator,
    Ref,
    compile_condition,
)
from bastion.core.authz.decision import AuthzReason, Decision
from bastion.core.authz.permission import Permission
from bastion.core.authz.policy import CompiledRule, Effect, Match, Policy, Rule
from bastion.core.authz.roles import Held, Role, RoleGraph
from bastion.core.authz.subjects import Resource, Subject

__all__ = [
    "AllOf",
    "AnyOf",
    "AuthzReason",
    "Compiled",
    "CompiledRule",
    "Condition",
    "ConditionError",
    "Decision",
    "Effect",
    "Expression",
    "Held",
    "Match",
    "Not",
    "Operator",
    "Permission",
    "Policy",
    "Ref",
    "Resource",
    "Role",
    "RoleGraph",
    "Rule",
    "Subject",
    "compile_condition",
]
