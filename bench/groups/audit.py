"""Group ``audit``: what the stored audit sink costs the calling path, and how fast it writes.

Cases, all synchronous (the sink is called from request code, sync or async alike):

* ``Auditor.emit -> null sink``: building an event (hashing the user and client address,
  cleaning details) and handing it to a sink that does nothing: the baseline.
* ``Auditor.emit -> StoreAuditSink (SQLite, writer thread)``: the same call into the stored
  sink, its writer thread running and writing into a SQLite file meanwhile. The difference to
  the baseline is what the stored trail adds to a request, including the writer's share of
  the GIL (target: at most 5 microseconds).
* ``StoreAuditSink.emit (queue only)``: the sink's own calling path on a prebuilt event (no
  writer running: the length check and the append).
* ``SQLite write, per event``: sustained throughput of the writer: prebuilt events queued and
  flushed every ``batch_size`` (512) events, so each operation is one event's share of
  serialising, MACing and one transaction (target: at least 20,000 events per second, i.e.
  at most 50 microseconds per operation). Read events/s as 1e9 / ns.

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
STORED: Final = "Auditor.emit -> StoreAuditSink (SQLite, writer thread)"
QUEUE: Final = "StoreAuditSink.emit (queue only)"
WRITE: Final = "SQLite write, per event"
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


@asynccontextmanager
async def audit_cases(_options: Options) -> AsyncIterator[list[Case]]:
    ring = KeyRing.generate()
    with TemporaryDirectory(prefix="bastion-bench-audit-") as directory:
        policy = AuditPolicy(
            store=f"sqlite:///{directory}/stored.db", queue_size=1_000_000, log=False
        )
        stored = AuditTrail(policy, keyring=ring, clock=system_clock)
        queue_only = AuditTrail(
            AuditPolicy(store=f"sqlite:///{directory}/queue.db", queue_size=10_000_000, log=False),
            keyring=ring,
            background=False,
        )
        writer = AuditTrail(
            AuditPolicy(store=f"sqlite:///{directory}/write.db", batch_size=BATCH, log=False),
            keyring=ring,
            background=False,
        )
        try:
            null = Auditor(IdentifierHasher(ring), system_clock, NullSink(), aggregation=None)
            stored_emit = _emitter(stored.auditor(aggregation=None))
            prebuilt = _events(null, BATCH)
            one = prebuilt[0]
            queue_sink = queue_only.store_sink
            write_sink = writer.store_sink
            position = [0]

            def write_one() -> None:
                index = position[0]
                write_sink.emit(prebuilt[index])
                if index == BATCH - 1:
                    write_sink.flush()
                    position[0] = 0
                else:
                    position[0] = index + 1

            def queue_one() -> None:
                queue_sink.emit(one)

            # Prove each case before timing it.
            stored_emit()
            stored.flush()
            for _ in range(BATCH):
                write_one()
            if writer.store_sink.written != BATCH or not writer.verify().ok:
                raise RuntimeError("audit bench: the SQLite write case did not store its batch")
            if stored.store_sink.written != 1 or not stored.verify().ok:
                raise RuntimeError("audit bench: the stored sink did not write its event")
            queue_one()
            if queue_sink.queued != 1:
                raise RuntimeError("audit bench: the queue-only case did not queue")
            yield [
                sync_case(BASELINE, _emitter(null)),
                sync_case(STORED, stored_emit, baseline=BASELINE),
                sync_case(QUEUE, queue_one, baseline=BASELINE, weight=10),
                sync_case(WRITE, write_one, baseline=BASELINE),
            ]
        finally:
            stored.close()
            queue_only.store_sink._queue.clear()
            queue_only.close()
            writer.close()


GROUP = Group(
    name="audit",
    title=(
        "The stored audit trail: `Auditor.emit` into a null sink (baseline) and into the "
        "SQLite-backed `StoreAuditSink` with its writer thread running; the sink's queue "
        "alone; and the writer's sustained cost per event (batches of 512, one transaction "
        "each; events/s = 1e9 / ns). Targets: stored minus null <= 5 us; write <= 50 us "
        "(>= 20,000 events/s)."
    ),
    iterations=20_000,
    cases=audit_cases,
)
