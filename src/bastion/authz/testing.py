"""``check_policy``: a table of (subject, action, resource, expected) cases for an app's tests.

::

    from bastion.authz.testing import check_policy

    def test_document_policy():
        check_policy(policy, [
            ({"id": "u1"}, "read", {"type": "document", "owner_id": "u1"}, True),
            ({"id": "u2"}, "read", {"type": "document", "owner_id": "u1"}, False),
            ({"id": "u1"}, "write", DOC_LOCKED, AuthzReason.DENIED_BY_RULE),
        ])

Every row is evaluated (a failing row does not hide the next), and one ``AssertionError``
lists each failing row with what was expected, what was decided and the decision's own
explanation, so a policy change that breaks three cases says so in one run. ``expected`` is a
bool (allowed or not) or an :class:`~bastion.core.authz.decision.AuthzReason` (the exact
reason, which also fixes allowed or not). A row may carry a fifth item, the context. A row whose
subject or resource is malformed fails with the error, it does not stop the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from bastion.core.authz.decision import AuthzReason, Decision
from bastion.errors import BastionError

if TYPE_CHECKING:
    from bastion.core.authz.policy import Policy

__all__ = ["Case", "check_policy"]


class Case(NamedTuple):
    """One row: ``subject`` may act ``action`` on ``resource`` (``expected``), given ``context``."""

    subject: Any
    action: str
    resource: Any
    expected: bool | AuthzReason
    context: Mapping[str, object] | None = None


def _case(index: int, row: object) -> Case:
    if isinstance(row, Case):
        case = row
    elif isinstance(row, tuple | list) and len(row) in (4, 5):
        case = Case(*row)
    else:
        raise TypeError(
            f"check_policy row {index} must be (subject, action, resource, expected[, context]),"
            f" got {row!r}"
        )
    if not isinstance(case.expected, bool | AuthzReason):
        raise TypeError(
            f"check_policy row {index}: expected must be True, False or an AuthzReason, "
            f"got {case.expected!r}"
        )
    return case


def _describe(case: Case) -> str:
    subject = case.subject.get("id") if isinstance(case.subject, Mapping) else case.subject
    subject = getattr(subject, "id", subject)
    resource = case.resource
    if isinstance(resource, Mapping):
        resource = ":".join(str(resource[k]) for k in ("type", "id") if k in resource)
    else:
        resource = getattr(resource, "type", resource)
    return f"{subject!s} {case.action} {resource!s}"


def _want(expected: bool | AuthzReason) -> str:
    if isinstance(expected, AuthzReason):
        return f"reason {expected.value}"
    return "allowed" if expected else "denied"


def _matches(decision: Decision, expected: bool | AuthzReason) -> bool:
    if isinstance(expected, AuthzReason):
        return decision.reason is expected
    return decision.allowed is expected


def check_policy(policy: Policy, cases: Iterable[object]) -> list[Decision]:
    """Evaluate every case against ``policy``; raise one ``AssertionError`` naming each failure.

    Returns the decisions, in order, when every case holds. An empty table is a ``ValueError``
    (a test that checks nothing cannot fail).
    """
    rows = [_case(index, row) for index, row in enumerate(cases)]
    if not rows:
        raise ValueError("check_policy needs at least one case")
    decisions: list[Decision] = []
    failures: list[str] = []
    for index, case in enumerate(rows):
        label = f"row {index} ({_describe(case)})"
        try:
            decision = policy.evaluate(case.subject, case.resource, case.action, case.context)
        except BastionError as exc:
            failures.append(f"{label}: expected {_want(case.expected)}, raised {exc!r}")
            continue
        decisions.append(decision)
        if not _matches(decision, case.expected):
            got = "allowed" if decision.allowed else "denied"
            failures.append(
                f"{label}: expected {_want(case.expected)}, got {got} "
                f"({decision.reason.value}): {decision.explain()}"
            )
    if failures:
        count = f"{len(failures)} of {len(rows)} policy cases failed"
        raise AssertionError("\n  ".join([count, *failures]))
    return decisions
