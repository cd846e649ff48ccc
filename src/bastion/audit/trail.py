"""``AuditTrail``: the stored audit trail of one app (sink, queries, verification, purges).

::

    trail = AuditTrail(AuditPolicy(store="sqlite:///audit.db"), keyring=ring)
    auditor = trail.auditor()                   # or Bastion(audit=...) wires it for you
    auditor.emit(EventName.AUTHN_LOGIN_FAIL, outcome=Outcome.FAILURE, user="alice")
    trail.flush()
    trail.query(event="authn_login_fail", user="alice")   # the user is hashed, as stored
    trail.verify().ok
    trail.close()

Queries take the raw user name and hash it with the trail's
:class:`~bastion.core.audit.IdentifierHasher` under every key of the ring, so the store holds
only pseudonyms and a search still finds events written before a key rotation. The hasher must
be the auditor's (both default to ``IdentifierHasher(keyring)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from bastion.audit.policy import AuditPolicy
from bastion.core.audit import (
    AuditAggregation,
    AuditEvent,
    Auditor,
    EventName,
    IdentifierHasher,
    Level,
    LoggingAuditSink,
    Outcome,
)
from bastion.core.clock import system_clock
from bastion.engine.audit import (
    Chain,
    ChainKeys,
    Query,
    StoreAuditSink,
    ecs_document,
    open_backend,
    otel_event,
    verify_trail,
)
from bastion.engine.audit.model import time_ms
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    from bastion.core.audit import AuditSink, DetailValue
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.engine.audit import Row, VerifyReport

__all__ = ["PURGE_EVENT", "AuditRecord", "AuditTrail", "TeeSink"]

PURGE_EVENT = "audit_log_purged"
"""The event a purge writes into the chain: ``purged_through`` (the last segment deleted)."""

_MAX_LIMIT = 100_000
_AGGREGATION = AuditAggregation()


class TeeSink:
    """Sends each event to every sink in turn (the log line first, then the store)."""

    __slots__ = ("sinks",)

    def __init__(self, *sinks: AuditSink) -> None:
        self.sinks = sinks

    def emit(self, event: AuditEvent) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def __repr__(self) -> str:
        return f"TeeSink{self.sinks!r}"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored event, as a query returns it. Text is as it was stored (already escaped
    when the event was made); ``seq`` and ``mac`` are its place in the chain."""

    seq: int
    time: datetime
    event: str
    outcome: str
    level: str
    user: str | None
    client_ip: str | None
    session: str | None
    request_id: str | None
    user_agent: str | None
    details: Mapping[str, DetailValue] = field(hash=False)
    mac: str

    @classmethod
    def from_row(cls, row: Row) -> AuditRecord:
        try:
            data = json.loads(row.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        details, agent = data.get("details"), data.get("user_agent")
        return cls(
            seq=row.seq,
            time=datetime.fromtimestamp(row.time_ms / 1000, tz=UTC),
            event=row.name,
            outcome=row.outcome,
            level=row.level,
            user=row.user,
            client_ip=row.client_ip,
            session=row.session,
            request_id=row.request_id,
            user_agent=agent if isinstance(agent, str) else None,
            details=MappingProxyType(details if isinstance(details, dict) else {}),
            mac=row.mac,
        )

    def to_dict(self) -> dict[str, Any]:
        """The event's plain form (as :meth:`~bastion.core.audit.AuditEvent.to_dict`)."""
        return {
            "time": self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": self.event,
            "level": self.level,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "user": self.user,
            "client_ip": self.client_ip,
            "session": self.session,
            "user_agent": self.user_agent,
            "details": dict(self.details),
        }

    def to_ecs(self) -> dict[str, Any]:
        """The Elastic Common Schema document (see :mod:`bastion.engine.audit.ecs`)."""
        return ecs_document(self.to_dict(), sequence=self.seq, mac=self.mac)

    def to_otel(self) -> tuple[str, int, dict[str, Any]]:
        """``(OpenTelemetry event name, severity number, attributes)``."""
        return otel_event(self.to_dict())


def _texts(setting: str, value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(v, str) for v in values):
        raise ConfigurationError(f"{setting} must be text or a list of text", setting=setting)
    return tuple(str(v) for v in values)


def _moment(setting: str, value: datetime | float | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise ConfigurationError(f"{setting} must be timezone-aware", setting=setting)
        return time_ms(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(
            f"{setting} must be a datetime or seconds since the epoch", setting=setting
        )
    return int(value * 1000)


class AuditTrail:
    """The stored trail of ``policy`` (see the module docstring). ``background=False``
    runs no writer thread (events wait for :meth:`flush`): for tests, scripts and the CLI."""

    __slots__ = ("_chain", "_clock", "_keys", "backend", "hasher", "policy", "sink", "store_sink")

    def __init__(
        self,
        policy: AuditPolicy,
        *,
        keyring: KeyRing | SecretKey,
        clock: Clock = system_clock,
        hasher: IdentifierHasher | None = None,
        background: bool = True,
        seal_on_close: bool = True,
    ) -> None:
        if not isinstance(policy, AuditPolicy):
            raise ConfigurationError("policy must be an AuditPolicy(...)", setting="audit")
        self.policy = policy
        self._clock = clock
        self._keys = ChainKeys(keyring)
        self.hasher = hasher if hasher is not None else IdentifierHasher(keyring)
        self.backend = open_backend(policy.store)
        self._chain = chain = Chain(
            self._keys,
            segment_events=policy.segment_events,
            seal_after_ms=round(policy.seal_after * 1000),
        )
        self.store_sink = StoreAuditSink(
            self.backend,
            chain,
            clock=clock,
            queue_size=policy.queue_size,
            batch_size=policy.batch_size,
            flush_interval=policy.flush_interval,
            fail_closed=policy.fail_closed,
            max_wait=policy.max_wait,
            seal_on_close=seal_on_close,
            background=background,
        )
        self.sink: AuditSink = (
            TeeSink(LoggingAuditSink(), self.store_sink) if policy.log else self.store_sink
        )

    @classmethod
    def for_tools(cls, store: str, *, keyring: KeyRing | SecretKey) -> AuditTrail:
        """A trail on ``store`` for reading, verifying and purging (the command line): no
        writer thread, no log lines, and closing it seals nothing (the app's open segment is
        the app's to seal)."""
        return cls(
            AuditPolicy(store=store, log=False),
            keyring=keyring,
            background=False,
            seal_on_close=False,
        )

    def auditor(self, *, aggregation: AuditAggregation | None = _AGGREGATION) -> Auditor:
        """An :class:`~bastion.core.audit.Auditor` writing to this trail, hashing with its
        hasher and dating with its clock."""
        return Auditor(self.hasher, self._clock, self.sink, aggregation=aggregation)

    def query(
        self,
        *,
        event: EventName | str | Iterable[EventName | str] | None = None,
        user: str | int | None = None,
        user_hash: str | Iterable[str] | None = None,
        outcome: Outcome | str | Iterable[Outcome | str] | None = None,
        since: datetime | float | None = None,
        until: datetime | float | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Stored events, newest first: any of ``event``, the ``user`` (a raw id, hashed here
        under every key of the ring) or any ``user_hash`` digest, any of ``outcome``, with
        ``since <= time < until``. Events still queued are not seen: :meth:`flush` first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_LIMIT:
            raise ConfigurationError(f"limit must be 1 to {_MAX_LIMIT}", setting="limit")
        users = _texts("user_hash", user_hash)
        if user is not None:
            users += self.hasher.candidates(user, kind="user")
        found = self.backend.query(
            Query(
                names=_texts("event", event),
                users=users,
                outcomes=_texts("outcome", outcome),
                since_ms=_moment("since", since),
                until_ms=_moment("until", until),
                limit=limit,
            )
        )
        return [AuditRecord.from_row(row) for row in found]

    def verify(self, *, expect: tuple[int, str] | None = None) -> VerifyReport:
        """Check the whole chain; the report names the first broken link. ``expect``: a
        ``(head_seq, head_mac)`` recorded from an earlier report, which the trail must still
        contain (catches a cut tail)."""
        return verify_trail(self.backend, self._keys, expect=expect)

    def purge(self, *, before: datetime | float | None = None) -> int:
        """Delete the sealed segments whose events are all older than ``before`` (default:
        now minus ``policy.retention``); how many segments were deleted. The seals stay and a
        purge mark is written, so :meth:`verify` still passes; an ``audit_log_purged`` event
        records the purge in the chain."""
        now = self._clock.now()
        if before is None:
            if self.policy.retention is None:
                raise ConfigurationError(
                    "purge() needs before= or AuditPolicy(retention=seconds)", setting="before"
                )
            before = now - self.policy.retention
        before_ms = _moment("before", before) or 0
        self.store_sink.flush()
        chain = self._chain
        backend = self.backend
        written = backend.transact(
            lambda head: (
                None
                if head is None
                else chain.purge(
                    head, backend.seals(), backend.purges(), before_ms, int(now * 1000)
                )
            )
        )
        if written is None or written.purge is None:
            return 0
        previous = backend.purges()
        done = previous[-2].through if len(previous) > 1 else -1
        count = written.purge.through - done
        self.store_sink.emit(
            AuditEvent(
                name=PURGE_EVENT,
                time=datetime.fromtimestamp(now, tz=UTC),
                outcome=Outcome.SUCCESS,
                level=Level.WARN,
                details={"purged_through": written.purge.through, "purged_segments": count},
            )
        )
        return count

    def last_seq(self) -> int:
        """The sequence number of the last stored event: how many events the trail has
        written since it began, purged ones included (0 for a new trail). One read of the
        head; events still queued are not counted (:meth:`flush` first)."""
        head = self.backend.head()
        return 0 if head is None else head.seq

    def flush(self) -> None:
        """Write every queued event now."""
        self.store_sink.flush()

    def seal(self) -> None:
        """Write what is queued and seal the open segment."""
        self.store_sink.flush()
        self.store_sink.seal()

    def close(self) -> None:
        """Stop the writer, write what is queued, seal, close the store."""
        self.store_sink.close()

    def __enter__(self) -> AuditTrail:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditTrail({self.backend.where!r})"
