"""The stored audit sink: ``emit`` queues, a writer thread batches into the backend.

The calling path (a request emitting an event) does three things: compare the queue's length
with its bound, append to a :class:`collections.deque`, and wake the writer once a batch is
waiting. Serialising, MACing and the database round trip happen on the writer thread, one
transaction per batch of up to ``batch_size`` events, at least every ``flush_interval``
seconds.

When the queue is full (the store is slower than the traffic, or down):

* by default the event is **dropped and counted**; the writer then writes one
  ``audit_events_dropped`` event (level ``critical``: how many, since when, why) into the
  chain ahead of the next batch, and logs a warning on ``bastion.security.audit``. A batch the
  store refuses is dropped and counted the same way. Requests never wait for the audit store.
* with ``fail_closed=True`` nothing is dropped: ``emit`` waits up to ``max_wait`` seconds for
  room and then raises :class:`~bastion.engine.audit.model.AuditUnavailable` (a
  ``StoreUnavailable``), and while the store refuses writes every ``emit`` raises at once;
  refused batches go back to the front of the queue and are retried. For deployments where an
  action without its record must not happen.

The writer thread starts on the first event, not in the constructor; :meth:`close` stops it,
writes what is queued and seals the open segment. The thread is a daemon (it never keeps a
process alive), so a sink whose writer runs is also closed at interpreter exit: what an app
that never calls ``runtime.close()`` queued is written, not lost with the thread. In a process
forked from one that had a sink (a pre-forking server), the child's sink starts empty, with
its own connection and, on its first event, its own writer; the parent's queued events stay
the parent's.
``background=False`` runs no thread at all: events wait for :meth:`flush` (tests, scripts).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from bastion.core.audit import AuditEvent, Level, Outcome
from bastion.engine.audit.model import AuditUnavailable
from bastion.errors import BastionError

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.clock import Clock
    from bastion.engine.audit.backend import AuditBackend
    from bastion.engine.audit.chain import Chain
    from bastion.engine.audit.model import Head

__all__ = ["DROPPED_EVENT", "StoreAuditSink"]

DROPPED_EVENT: Final = "audit_events_dropped"
"""The event the writer records after drops: ``dropped_count``, ``dropped_since``, and the
counts by cause (``dropped_queue_full``, ``dropped_store_unavailable``)."""

logger = logging.getLogger("bastion.security.audit")


class _Drops:
    """Events lost since the last ``audit_events_dropped`` event, by cause."""

    __slots__ = ("queue_full", "since", "store_unavailable")

    def __init__(self) -> None:
        self.queue_full = 0
        self.store_unavailable = 0
        self.since: float | None = None

    @property
    def total(self) -> int:
        return self.queue_full + self.store_unavailable


_RUNNING: weakref.WeakSet[StoreAuditSink] = weakref.WeakSet()
"""Sinks whose writer thread runs: closed at interpreter exit (see :func:`_close_at_exit`)."""


def _close_at_exit() -> None:
    """The writer is a daemon thread (it must never keep a process alive), so events still
    queued when the interpreter exits would be lost with it: an app that never called
    ``runtime.close()`` still gets them written and the segment sealed, each sink within its
    store's timeout. A sink with nothing queued is left alone (an exit never waits on a store
    it has nothing for). A sink that cannot write logs why; the exit goes on."""
    for sink in list(_RUNNING):
        if not sink._queue or sink._closed:
            continue
        try:
            sink.close()
        except Exception:
            logger.exception("bastion: the audit trail could not be written at exit")


atexit.register(_close_at_exit)


def _forget_in_child(ref: weakref.ref[StoreAuditSink]) -> Callable[[], None]:
    def hook() -> None:
        sink = ref()
        if sink is not None and not sink._closed:
            sink._after_fork()

    return hook


class StoreAuditSink:
    """An :class:`~bastion.core.audit.AuditSink` that stores events through ``chain`` into
    ``backend`` (see the module docstring for the queue and the drop policy)."""

    __slots__ = (
        "__weakref__",  # the fork hook holds the sink weakly
        "_backend",
        "_batch_size",
        "_chain",
        "_clock",
        "_closed",
        "_drop_lock",
        "_drops",
        "_fail_closed",
        "_flush_interval",
        "_head",
        "_max_wait",
        "_queue",
        "_queue_size",
        "_refusing",
        "_room",
        "_seal_on_close",
        "_started",
        "_thread",
        "_wake",
        "_write_lock",
        "background",
        "written",
    )

    def __init__(
        self,
        backend: AuditBackend,
        chain: Chain,
        *,
        clock: Clock,
        queue_size: int = 10_000,
        batch_size: int = 512,
        flush_interval: float = 0.2,
        fail_closed: bool = False,
        max_wait: float = 0.5,
        seal_on_close: bool = True,
        background: bool = True,
    ) -> None:
        self._backend = backend
        self._chain = chain
        self._clock = clock
        self._queue: deque[AuditEvent] = deque()
        self._queue_size = queue_size
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._fail_closed = fail_closed
        self._max_wait = max_wait
        self._seal_on_close = seal_on_close
        self.background = background
        self._refusing = False
        self._closed = False
        self._started = not background  # no thread to start without a background writer
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._write_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._drops = _Drops()
        self._head: Head | None = None
        self.written = 0
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_forget_in_child(weakref.ref(self)))

    def _after_fork(self) -> None:
        """In a forked worker: no writer thread exists and the locks may have been held at
        the fork; the queued events are the parent's to write. Start over."""
        self._queue.clear()
        self._thread = None
        _RUNNING.discard(self)  # the child's copy of the set; its own writer re-adds it
        self._started = not self.background
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._write_lock = threading.Lock()
        self._drop_lock = threading.Lock()
        self._drops = _Drops()
        self._refusing = False
        self._head = None
        self.written = 0
        self._backend.after_fork()

    # -- the calling path -------------------------------------------------------------------

    def emit(self, event: AuditEvent) -> None:
        """Queue ``event`` (the calling path: no I/O, no serialisation)."""
        queue = self._queue
        if self._refusing or len(queue) >= self._queue_size:
            self._overflow(event)
            return
        queue.append(event)
        if not self._started:
            self._start()
        elif len(queue) >= self._batch_size:
            self._wake.set()

    @property
    def dropped(self) -> int:
        """Events dropped and not yet reported by an ``audit_events_dropped`` event."""
        return self._drops.total

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _overflow(self, event: AuditEvent) -> None:
        if self._fail_closed:
            self._wait_for_room(event)
            return
        with self._drop_lock:
            drops = self._drops
            if drops.since is None:
                drops.since = self._clock.now()
                logger.warning(
                    "bastion: the audit queue is full (%d events) or closed; dropping events "
                    "until the writer catches up (counted, then audited as %s)",
                    self._queue_size,
                    DROPPED_EVENT,
                )
            drops.queue_full += 1
        self._wake.set()

    def _wait_for_room(self, event: AuditEvent) -> None:
        queue, size = self._queue, self._queue_size
        if self._refusing or self._closed:
            raise AuditUnavailable(
                f"the audit store {self._backend.where} refuses writes; fail_closed=True "
                "refuses the action rather than leave it unaudited"
            )
        self._wake.set()
        with self._room:
            has_room = self._room.wait_for(lambda: len(queue) < size, self._max_wait)
        if not has_room:
            raise AuditUnavailable(
                f"the audit queue stayed full ({size} events) for {self._max_wait:g} s; "
                "fail_closed=True refuses the action rather than leave it unaudited"
            )
        queue.append(event)

    # -- the writer -------------------------------------------------------------------------

    def _start(self) -> None:
        with self._write_lock:
            if self._started or self._closed:
                return
            self._thread = threading.Thread(
                target=self._run, name="bastion-audit-writer", daemon=True
            )
            self._started = True
            self._thread.start()
            _RUNNING.add(self)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except Exception:  # the writer must outlive any one failure
                logger.exception("bastion: the audit writer failed; it keeps running")

    def flush(self) -> None:
        """Write everything queued now, on the calling thread. Raises
        :class:`~bastion.engine.audit.model.AuditUnavailable` when events could not be written
        and ``fail_closed`` keeps them queued."""
        self._drain()
        if self._fail_closed and self._queue:
            raise AuditUnavailable(
                f"the audit store {self._backend.where} refused the queued events"
            )

    def _drain(self) -> None:
        with self._write_lock:
            queue, room = self._queue, self._room
            while True:
                batch: list[AuditEvent] = []
                notice = self._take_drops()
                if notice is not None:
                    batch.append(notice[0])
                take = min(len(queue), self._batch_size)
                batch.extend(queue.popleft() for _ in range(take))
                if not batch:
                    break
                with room:
                    room.notify_all()
                if not self._write(batch, notice):
                    break
            self._seal_if_due()

    def _write(self, batch: list[AuditEvent], notice: tuple[AuditEvent, _Drops] | None) -> bool:
        now_ms = int(self._clock.now() * 1000)
        chain = self._chain
        try:
            written = self._backend.transact(lambda head: chain.append(head, batch, now_ms))
        except BastionError as error:
            self._on_failure(batch, notice, error)
            return False
        if written is not None:
            self._head = written.head
        self.written += len(batch)
        self._refusing = False
        return True

    def _on_failure(
        self, batch: list[AuditEvent], notice: tuple[AuditEvent, _Drops] | None, error: Exception
    ) -> None:
        logger.warning(
            "bastion: the audit store %s refused a batch: %s", self._backend.where, error
        )
        if self._fail_closed:
            self._refusing = True
            self._queue.extendleft(reversed(batch[1:] if notice else batch))
        lost = len(batch) - (1 if notice else 0)
        with self._drop_lock:
            drops = self._drops
            if notice is not None:  # the report did not land: its counts are still owed
                drops.queue_full += notice[1].queue_full
                drops.store_unavailable += notice[1].store_unavailable
                if notice[1].since is not None:
                    drops.since = min(drops.since or notice[1].since, notice[1].since)
            if not self._fail_closed:
                drops.store_unavailable += lost
                if drops.since is None:
                    drops.since = self._clock.now()

    def _take_drops(self) -> tuple[AuditEvent, _Drops] | None:
        with self._drop_lock:
            drops = self._drops
            if not drops.total:
                return None
            self._drops = _Drops()
        now = self._clock.now()
        since = datetime.fromtimestamp(drops.since or now, tz=UTC)
        event = AuditEvent(
            name=DROPPED_EVENT,
            time=datetime.fromtimestamp(now, tz=UTC),
            outcome=Outcome.FAILURE,
            level=Level.CRITICAL,
            details={
                "dropped_count": drops.total,
                "dropped_queue_full": drops.queue_full,
                "dropped_store_unavailable": drops.store_unavailable,
                "dropped_since": since.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "queue_size": self._queue_size,
            },
        )
        return event, drops

    def _seal_if_due(self) -> None:
        head = self._head
        now_ms = int(self._clock.now() * 1000)
        if head is None or not head.count or now_ms - head.first_ms < self._chain.seal_after_ms:
            return
        self.seal()

    def seal(self) -> None:
        """Seal the open segment now (whatever its size or age)."""
        chain = self._chain
        try:
            written = self._backend.transact(chain.seal_open)
        except BastionError as error:
            logger.warning("bastion: could not seal the audit segment: %s", error)
            return
        if written is not None:
            self._head = written.head

    def close(self) -> None:
        """Stop the writer, write what is queued, seal the open segment, close the backend."""
        if self._closed:
            return
        self._closed = True
        self._queue_size = 0  # later events are dropped and counted (or refused)
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=max(5.0, self._flush_interval * 10))
        self._drain()
        if self._seal_on_close:
            with self._write_lock:
                self.seal()
        self._backend.close()

    def __repr__(self) -> str:
        mode = "fail_closed" if self._fail_closed else "drop"
        return f"StoreAuditSink({self._backend.where!r}, {mode}, queued={len(self._queue)})"
