"""The outcome of one authorization check, able to say why.

Every :class:`Decision` carries a stable :class:`AuthzReason` (for responses, audit events and
tests) and the evidence behind it: the rule or permission that decided, the role that held it,
the inheritance chain it came through, the condition that failed or could not be evaluated.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

__all__ = ["AuthzReason", "Decision", "make_decision"]


class AuthzReason(enum.StrEnum):
    """Why a check allowed or denied (distinct from the other features' reasons)."""

    ALLOWED_BY_ROLE = "allowed_by_role"
    ALLOWED_BY_GRANT = "allowed_by_grant"
    ALLOWED_BY_RULE = "allowed_by_rule"
    ALLOWED_AS_OWNER = "allowed_as_owner"
    DENIED_BY_GRANT = "denied_by_grant"
    DENIED_BY_RULE = "denied_by_rule"
    NOT_OWNER = "not_owner"
    CONDITION_FAILED = "condition_failed"
    CONDITION_ERROR = "condition_error"
    NO_MATCH = "no_match"
    WRONG_TENANT = "wrong_tenant"
    NO_ROUTE_RULE = "no_route_rule"
    UNAUTHENTICATED = "unauthenticated"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One check's outcome. Truthy when allowed.

    ``rule`` is the rule name or the permission text that decided; ``role`` the role that held
    it; ``via`` the chain from the subject's role down to ``role``; ``condition`` the text of
    the condition that failed or errored; ``error`` why it errored.
    """

    allowed: bool
    reason: AuthzReason
    action: str
    subject: str
    resource: str | None = None
    rule: str | None = None
    role: str | None = None
    via: tuple[str, ...] = ()
    condition: str | None = None
    error: str | None = None

    def __bool__(self) -> bool:
        return self.allowed

    def explain(self) -> str:  # noqa: PLR0911 (one sentence per reason)
        """One sentence: ``"allowed: posts:write granted to role moderator (via admin ->
        moderator)"``, ``"denied: rule no-locked-writes: resource.locked equals true"``."""
        on = f" on {self.resource}" if self.resource else ""
        what = self.resource or "the resource"
        head = f"{'allowed' if self.allowed else 'denied'}: "
        via = f" (via {' -> '.join(self.via)})" if len(self.via) > 1 else ""
        reason = self.reason
        if reason is AuthzReason.ALLOWED_BY_ROLE:
            return f"{head}{self.rule} granted to role {self.role}{via}"
        if reason is AuthzReason.ALLOWED_AS_OWNER:
            holder = f"role {self.role}{via}" if self.role else f"{self.subject} directly"
            return f"{head}{self.rule} granted to {holder}, and {self.subject} owns {what}"
        if reason is AuthzReason.ALLOWED_BY_GRANT:
            return f"{head}{self.rule} granted to {self.subject} directly"
        if reason is AuthzReason.ALLOWED_BY_RULE:
            when = f": {self.condition}" if self.condition else ""
            return f"{head}rule {self.rule}{when}"
        if reason is AuthzReason.DENIED_BY_GRANT:
            return f"{head}{self.rule} denied to {self.subject} directly"
        if reason is AuthzReason.DENIED_BY_RULE:
            when = f": {self.condition}" if self.condition else ""
            return f"{head}rule {self.rule}{when}"
        if reason is AuthzReason.NOT_OWNER:
            return f"{head}{self.rule} needs ownership and {self.subject} does not own {what}"
        if reason is AuthzReason.CONDITION_FAILED:
            return f"{head}rule {self.rule} did not hold: {self.condition}"
        if reason is AuthzReason.CONDITION_ERROR:
            return f"{head}rule {self.rule} could not be evaluated ({self.condition}): {self.error}"
        if reason is AuthzReason.WRONG_TENANT:
            return f"{head}{self.action}{on}: {self.subject} holds it only in another tenant"
        if reason is AuthzReason.NO_ROUTE_RULE:
            return f"{head}no route rule covers {self.action}"
        if reason is AuthzReason.UNAUTHENTICATED:
            return f"{head}{self.action} needs a signed-in user"
        return f"{head}nothing grants {self.action}{on} to {self.subject}"


_SLOTS: Final = tuple(
    Decision.__dict__[name].__set__
    for name in (
        "allowed",
        "reason",
        "action",
        "subject",
        "resource",
        "rule",
        "role",
        "via",
        "condition",
        "error",
    )
)


def make_decision(  # noqa: PLR0917 (positional on purpose: the hot path of every check)
    allowed: bool,
    reason: AuthzReason,
    action: str,
    subject: str,
    resource: str | None,
    rule: str | None = None,
    role: str | None = None,
    via: tuple[str, ...] = (),
    condition: str | None = None,
    error: str | None = None,
) -> Decision:
    """A :class:`Decision`, built for the hot path: a frozen dataclass's ``__init__`` pays
    one ``object.__setattr__`` per field (ten here, about two microseconds, the largest cost
    of an RBAC check); writing the slots through their descriptors costs a third of that.
    The fields are the same, unchecked (the policy passes only its own values)."""
    decision = object.__new__(Decision)
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9 = _SLOTS
    s0(decision, allowed)
    s1(decision, reason)
    s2(decision, action)
    s3(decision, subject)
    s4(decision, resource)
    s5(decision, rule)
    s6(decision, role)
    s7(decision, via)
    s8(decision, condition)
    s9(decision, error)
    return decision
