"""Store-backed authorization assignments: roles, grants and denies per user, and the per-user
permission version (see :mod:`bastion.engine.authz.assignments`)."""

from bastion.engine.authz.assignments import Assignments
from bastion.engine.authz.record import (
    MAX_ENTRIES,
    MAX_USER_ID_LENGTH,
    Assignment,
    ChangeKind,
    assignment_key,
)

__all__ = [
    "MAX_ENTRIES",
    "MAX_USER_ID_LENGTH",
    "Assignment",
    "Assignments",
    "ChangeKind",
    "assignment_key",
]
