"""The stored, tamper-evident, queryable audit trail.

Configure it with ``Bastion(audit=AuditPolicy(store="sqlite:///audit.db"))``, or build an
:class:`AuditTrail` yourself; query, verify and purge it from Python or with ``bastion audit
query|verify|purge``. See docs/audit.md.
"""

from __future__ import annotations

from bastion.audit.policy import AuditPolicy
from bastion.audit.trail import PURGE_EVENT, AuditRecord, AuditTrail, TeeSink
from bastion.engine.audit import (
    DROPPED_EVENT,
    AuditUnavailable,
    BrokenLink,
    Fault,
    StoreAuditSink,
    VerifyReport,
    ecs_document,
    otel_event,
)

__all__ = [
    "DROPPED_EVENT",
    "PURGE_EVENT",
    "AuditPolicy",
    "AuditRecord",
    "AuditTrail",
    "AuditUnavailable",
    "BrokenLink",
    "Fault",
    "StoreAuditSink",
    "TeeSink",
    "VerifyReport",
    "ecs_document",
    "otel_event",
]
