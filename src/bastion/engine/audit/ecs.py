"""Audit events as Elastic Common Schema documents and as OpenTelemetry events.

Both take the plain form of an event (:meth:`~bastion.core.audit.AuditEvent.to_dict`), so they
work on an event just emitted and on one read back from the store.

ECS (https://www.elastic.co/guide/en/ecs/current/): ``event.action`` is the OWASP name,
``event.category`` and ``event.type`` come from its prefix (``authn_`` is ``authentication``,
``session_`` is ``session``, ``user_`` and ``authz_`` are ``iam``, ``malicious_`` is
``intrusion_detection``), ``event.outcome`` is ``success`` or ``failure`` (bastion's
``blocked`` is a ``failure`` with ``event.type`` ``denied``). The hashed user goes to
``user.id`` (a pseudonymous id is still an id); the hashed client address and session have no
ECS field that accepts a digest (``source.ip`` must be an address), so they go under
``bastion.*`` with the details, the sequence number and the chain MAC.

OpenTelemetry: the event name is ``bastion.<name>`` (event names are namespaced), the severity
number follows the log data model (``info`` 9, ``warn`` 13, ``critical`` 17), attributes use
the semantic conventions where one fits (``user.id``, ``session.id``) and ``bastion.*``
otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ECS_VERSION", "OTEL_SEVERITY", "ecs_document", "otel_event"]

ECS_VERSION: Final = "8.11.0"

OTEL_SEVERITY: Final = {"info": 9, "warn": 13, "critical": 17}
"""OpenTelemetry SeverityNumber of each level (INFO, WARN, ERROR)."""

_ECS_SEVERITY: Final = {"info": 1, "warn": 2, "critical": 3}

# prefix of the OWASP name -> (event.category, default event.type)
_CATEGORIES: Final[tuple[tuple[str, list[str], list[str]], ...]] = (
    ("authn_login", ["authentication"], ["start"]),
    ("authn_token", ["authentication"], ["info"]),
    ("authn_password", ["authentication", "iam"], ["change"]),
    ("authn_", ["authentication"], ["info"]),
    ("authz_change", ["iam"], ["change"]),
    ("authz_admin", ["iam"], ["admin"]),
    ("authz_", ["iam"], ["access"]),
    ("session_created", ["session"], ["start"]),
    ("session_destroyed", ["session"], ["end"]),
    ("session_expired", ["session"], ["end"]),
    ("session_", ["session"], ["info"]),
    ("user_created", ["iam"], ["user", "creation"]),
    ("user_deleted", ["iam"], ["user", "deletion"]),
    ("user_", ["iam"], ["user", "change"]),
    ("malicious_", ["intrusion_detection", "web"], ["indicator"]),
    ("sensitive_", ["database", "web"], ["access"]),
    ("sys_", ["process"], ["info"]),
    ("audit_", ["configuration"], ["info"]),
)


def _category(name: str) -> tuple[list[str], list[str]]:
    for prefix, category, kinds in _CATEGORIES:
        if name.startswith(prefix):
            return list(category), list(kinds)
    return ["web"], ["info"]


def ecs_document(
    event: Mapping[str, Any], *, sequence: int | None = None, mac: str | None = None
) -> dict[str, Any]:
    """The ECS document of ``event`` (its ``to_dict`` form); ``sequence`` and ``mac`` are
    the stored event's place in the chain, when it has one."""
    name = str(event["event"])
    outcome = str(event["outcome"])
    category, kinds = _category(name)
    if outcome == "blocked":
        kinds = [*kinds, "denied"]
    document: dict[str, Any] = {
        "@timestamp": event["time"],
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "action": name,
            "category": category,
            "type": kinds,
            "outcome": "success" if outcome == "success" else "failure",
            "severity": _ECS_SEVERITY.get(str(event["level"]), 2),
            "dataset": "bastion.audit",
        },
        "log": {"level": event["level"], "logger": "bastion.audit"},
    }
    if sequence is not None:
        document["event"]["sequence"] = sequence
    if event.get("user") is not None:
        document["user"] = {"id": event["user"]}
    if event.get("request_id") is not None:
        document["http"] = {"request": {"id": event["request_id"]}}
    if event.get("user_agent") is not None:
        document["user_agent"] = {"original": event["user_agent"]}
    extra: dict[str, Any] = {"outcome": outcome}
    for field in ("client_ip", "session", "previous"):
        if event.get(field) is not None:
            extra[field] = event[field]
    if event.get("details"):
        extra["details"] = dict(event["details"])
    if mac is not None:
        extra["chain_mac"] = mac
    document["bastion"] = extra
    return document


def otel_event(event: Mapping[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """``(event name, severity number, attributes)`` of ``event`` for an OpenTelemetry log
    record or span event. Attribute values are scalars, as OpenTelemetry requires."""
    name = str(event["event"])
    attributes: dict[str, Any] = {
        "event.name": f"bastion.{name}",
        "bastion.outcome": str(event["outcome"]),
        "bastion.level": str(event["level"]),
    }
    if event.get("user") is not None:
        attributes["user.id"] = event["user"]
    if event.get("session") is not None:
        attributes["session.id"] = event["session"]
    if event.get("client_ip") is not None:
        attributes["bastion.client_ip"] = event["client_ip"]
    if event.get("request_id") is not None:
        attributes["bastion.request_id"] = event["request_id"]
    if event.get("user_agent") is not None:
        attributes["user_agent.original"] = event["user_agent"]
    for key, value in (event.get("details") or {}).items():
        if value is not None:
            attributes[f"bastion.detail.{key}"] = value
    return f"bastion.{name}", OTEL_SEVERITY.get(str(event["level"]), 13), attributes
