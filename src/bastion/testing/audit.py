"""An audit sink for tests: every event kept in memory, in order.

Pass it to an :class:`~bastion.core.audit.Auditor` in an app's own tests to assert what bastion
reported (a refused CSRF check, a rate-limit refusal, a login failure)::

    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(key), system_clock, sink)
    ...
    assert sink.names() == ["malicious_csrf"]

It is a real sink (the :class:`~bastion.core.audit.AuditSink` protocol), not a mock: events
arrive exactly as a production sink would receive them. It grows without bound, so keep it to
tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.core.audit import AuditEvent

__all__ = ["RecordingAuditSink"]


class RecordingAuditSink:
    """Keeps every emitted :class:`~bastion.core.audit.AuditEvent` in :attr:`events`."""

    __slots__ = ("events",)

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)  # list.append is atomic: threads may share one sink

    def names(self) -> list[str]:
        """The event names, in the order they were emitted."""
        return [str(event.name) for event in self.events]

    def clear(self) -> None:
        self.events.clear()

    def __repr__(self) -> str:
        return f"RecordingAuditSink({len(self.events)} events)"
