"""The stored audit trail's engine: the hash chain, the queueing sink, the backends, the
verifier and the ECS / OpenTelemetry mappings. Use it through :mod:`bastion.audit`."""

from __future__ import annotations

from bastion.engine.audit.chain import Chain, ChainKeys
from bastion.engine.audit.ecs import ecs_document, otel_event
from bastion.engine.audit.model import AuditUnavailable, Query, Row
from bastion.engine.audit.sink import DROPPED_EVENT, StoreAuditSink
from bastion.engine.audit.url import open_backend
from bastion.engine.audit.verify import BrokenLink, Fault, VerifyReport, verify_trail

__all__ = [
    "DROPPED_EVENT",
    "AuditUnavailable",
    "BrokenLink",
    "Chain",
    "ChainKeys",
    "Fault",
    "Query",
    "Row",
    "StoreAuditSink",
    "VerifyReport",
    "ecs_document",
    "open_backend",
    "otel_event",
    "verify_trail",
]
