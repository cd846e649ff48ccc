"""Subjects built from the store's records, kept by the bytes they were built from.

A checked request reads the user's record from the store every time (one ``get``: that read
is what makes a demotion count on the next request), but the same bytes always give the same
:class:`~bastion.core.authz.subjects.Subject`: parsing the JSON, validating it and building the
subject cost more than the read and the decision together. So the record's bytes, with the
user id, are the key of a bounded table of subjects. A change rewrites the record with a new
version, so its bytes are new, the next request misses the table and builds the new subject:
nothing here can serve roles the store no longer holds.

Beside each subject: the passing verdicts of the type-level checks whose decision reads only
the subject (:meth:`~bastion.core.authz.policy.Policy.subject_only`: no rule condition, which
might read the request's context, covers the permission). A repeat of such a check is one
dictionary lookup. Denials are never kept: each one is decided and audited again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bastion.core.authz.subjects import Subject

if TYPE_CHECKING:
    from bastion.authz.service import Verdict
    from bastion.engine.authz import Assignments
    from bastion.engine.authz.record import Assignment

__all__ = ["Known", "KnownSubjects", "subject_of"]

_SUBJECTS: Final = 4096
"""Subjects kept (one per user whose record was read lately; emptied when full)."""
_VERDICTS: Final = 64
"""Passing verdicts kept per subject: one per distinct permission set the app checks."""


def subject_of(user_id: str, assignment: Assignment) -> Subject:
    """The subject the policy decides for: ``assignment`` held by ``user_id``."""
    return Subject(
        id=user_id,
        roles=assignment.roles,
        tenant_roles=assignment.tenant_roles,
        grants=assignment.grants,
        denies=assignment.denies,
        version=assignment.version,
    )


class Known:
    """One subject built from one record, and its passing subject-only verdicts."""

    __slots__ = ("passed", "subject", "version")

    def __init__(self, subject: Subject, version: int) -> None:
        self.subject = subject
        self.version = version
        self.passed: dict[tuple[str, ...], Verdict] = {}

    def keep(self, permissions: tuple[str, ...], verdict: Verdict) -> None:
        """Keep a passing ``verdict`` of a subject-only check of ``permissions``."""
        if len(self.passed) < _VERDICTS:
            self.passed[permissions] = verdict


class KnownSubjects:
    """The table of :class:`Known` subjects of one :class:`~bastion.authz.service.Authorizer`
    (safe to share between threads: an entry, once in, never changes its subject)."""

    __slots__ = ("_assignments", "_entries")

    def __init__(self, assignments: Assignments) -> None:
        self._assignments = assignments
        self._entries: dict[tuple[str, bytes | None], Known] = {}

    def get(self, user_id: str, raw: bytes | None, carried: int | None) -> Known:
        """The subject of ``user_id`` whose record read as ``raw``. ``carried`` is the
        version the request carries: one above the record's is
        :class:`~bastion.errors.StoreCorrupt`, a malformed one
        :class:`~bastion.errors.AuthzInputError`, kept or not
        (:meth:`~bastion.engine.authz.Assignments.current_from` decides both)."""
        entry = self._entries.get((user_id, raw))
        if entry is not None and (
            carried is None or (type(carried) is int and 0 <= carried <= entry.version)
        ):
            return entry
        assignment = self._assignments.current_from(raw, carried)
        if entry is None:
            entry = Known(subject_of(user_id, assignment), assignment.version)
            if len(self._entries) >= _SUBJECTS:
                self._entries.clear()
            self._entries[(user_id, raw)] = entry
        return entry
