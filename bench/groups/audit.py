"""Group ``audit``: what the stored audit sink costs the calling path, and how fast it writes.

Cases, all synchronous (the sink is called from request code, sync or async alike):

* ``Auditor.emit -> null sink``: building an event (hashing the user and client address,
  cleaning details) and handing it to a sink that does nothing: the baseline.
* ``Auditor.emit -> StoreAuditSink (calling path)``: the same call into the stored sink.
  The difference to the baseline is what the stored trail adds to a request on the calling
  path (target: at most 5 microseconds).
* ``StoreAuditSink.emit (queue only)``: the sink's own calling path on a prebuilt event (the
  length check and the append).
* ``writer: SQLite write, per event``: the writer's sustained throughput: prebuilt events
  queued and flushed every ``batch_size`` (512) events, so each operation is one event's share
  of serialising, MACing and one transaction (target: at least 20,000 events per second, i.e.
  at most 50 microseconds per operation). Read events/s as 1e9 / ns.
* ``Auditor.emit -> StoreAuditSink -> SQLite, per event``: both together, the whole CPU cost
  of one stored event (what a saturated single-process server pays, on one thread or the
  other).

No writer thread runs during the timing (a thread still draining one case's events would be
timed in the next); the writer's work is done inline by ``flush``.

The set-up checks each case: the store trail verifies, and the written counts add up.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from tempfile import TemporaryDirectory
from typing import TYPE_CHECKING, Final

from bastion.audit import AuditPolicy, AuditTrail
from bastion.core.audit import AuditEvent, Auditor, EventName, IdentifierHasher, Outcome
from bastion.core.clock import system_clock
from bastion.core.keys import KeyRing
from bench.group import Group
from bench.measure import sync_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from bench.group import Options
    from bench.measure import Case

__all__ = ["BASELINE", "GROUP", "NullSink", "audit_cases"]

BASELINE: Final = "Auditor.emit -> null sink"
STORED: Final = "Auditor.emit -> StoreAuditSink (calling path)"
QUEUE: Final = "StoreAuditSink.emit (queue only)"
WRITE: Final = "writer: SQLite write, per event"
END_TO_END: Final = "Auditor.emit -> StoreAuditSink -> SQLite, per event"
BATCH: Final = 512


class NullSink:
    __slots__ = ()

    def emit(self, event: AuditEvent) -> None:
        del event  # dropped: the baseline measures building the event only


def _emitter(auditor: Auditor) -> Callable[[], object]:
    def emit() -> object:
        return auditor.emit(
            EventName.AUTHN_LOGIN_FAIL,
            outcome=Outcome.FAILURE,
            user="alice@example.com",
            client_ip="203.0.113.7",
            details={"reason": "wrong_password", "path": "/login"},
        )

    return emit


def _events(auditor: Auditor, count: int) -> list[AuditEvent]:
    return [
        auditor.event(
            EventName.AUTHN_LOGIN_FAIL,
            outcome=Outcome.FAILURE,
            user=f"user{number}@example.com",
            client_ip="203.0.113.7",
            details={"reason": "wrong_password", "attempt": number},
        )
        for number in range(count)
    ]


def _batched(emit: Callable[[], object], flush: Callable[[], None]) -> Callable[[], None]:
    """``emit``, and every :data:`BATCH` calls ``flush`` too (the writer's work, inline)."""
    position = [0]

    def op() -> None:
        emit()
        index = position[0] + 1
        if index == BATCH:
            flush()
            index = 0
        position[0] = index

    return op


@asynccontextmanager
async def audit_cases(_options: Options) -> AsyncIterator[list[Case]]:
    ring = KeyRing.generate()
    with TemporaryDirectory(prefix="bastion-bench-audit-") as directory:

        def trail(name: str, queue_size: int = 10_000) -> AuditTrail:
            policy = AuditPolicy(
                store=f"sqlite:///{directory}/{name}.db",
                queue_size=queue_size,
                batch_size=BATCH,
                log=False,
            )
            # No writer thread anywhere: a thread still draining one case's events would be
            # timed in the next case. The writer's work is measured inline instead.
            return AuditTrail(policy, keyring=ring, clock=system_clock, background=False)

        path, queue_only, writer, whole = (
            trail("path", 10_000_000),
            trail("queue", 10_000_000),
            trail("write"),
            trail("all"),
        )
        try:
            null = Auditor(IdentifierHasher(ring), system_clock, NullSink(), aggregation=None)
            prebuilt = _events(null, BATCH)
            one = prebuilt[0]
            # Events are freed (as the writer would) every batch, so memory stays flat.
            path_emit = _batched(
                _emitter(path.auditor(aggregation=None)),
                path.store_sink._queue.clear,
            )
            queue_sink, write_sink = queue_only.store_sink, writer.store_sink
            cycle = [0]

            def write_emit() -> None:
                write_sink.emit(prebuilt[cycle[0]])
                cycle[0] = (cycle[0] + 1) % BATCH

            write_one = _batched(write_emit, write_sink.flush)
            end_to_end = _batched(_emitter(whole.auditor(aggregation=None)), whole.flush)

            def queue_one() -> None:
                queue_sink.emit(one)

            # Prove each case before timing it.
            path_emit()
            queue_one()
            if (path.store_sink.queued, queue_sink.queued) != (1, 1):
                raise RuntimeError("audit bench: the calling-path cases did not queue")
            for _ in range(BATCH):
                write_one()
                end_to_end()
            for proved in (writer, whole):
                if proved.store_sink.written != BATCH or not proved.verify().ok:
                    raise RuntimeError("audit bench: a write case did not store its batch")
            yield [
                sync_case(BASELINE, _emitter(null)),
                sync_case(STORED, path_emit, baseline=BASELINE),
                sync_case(QUEUE, queue_one, baseline=BASELINE, weight=10),
                sync_case(WRITE, write_one, baseline=BASELINE),
                sync_case(END_TO_END, end_to_end, baseline=BASELINE),
            ]
        finally:
            for opened in (path, queue_only):
                opened.store_sink._queue.clear()  # millions of queued references, never written
            for opened in (path, queue_only, writer, whole):
                opened.close()


GROUP = Group(
    name="audit",
    title=(
        "The stored audit trail: `Auditor.emit` into a null sink (baseline) and into the "
        "SQLite-backed `StoreAuditSink` (the calling path: a queue append); the sink's queue "
        "alone; the writer's cost per event (batches of 512, one transaction each; events/s "
        "= 1e9 / ns); and both together. Targets: calling path minus null <= 5 us; writer "
        "<= 50 us (>= 20,000 events/s)."
    ),
    iterations=20_000,
    cases=audit_cases,
)
