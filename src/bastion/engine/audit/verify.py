"""Walk a stored trail and report the first broken link (see :mod:`.chain` for the MACs).

The walk reads the purge marks (their own chain: the highest valid mark says which segments
may be empty), then the seals in segment order, each checked against its MAC and the previous
seal, and the rows of each segment in sequence order, each checked against its MAC and against
its body (a query column that disagrees with the body is a broken link too: queries must not
lie). Rows are read in pages, so memory stays flat however long the trail is.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NoReturn

from bastion.engine.audit.chain import event_mac, genesis, purge_mac, seal_mac
from bastion.engine.audit.model import NO_MAC, time_ms

if TYPE_CHECKING:
    from collections.abc import Iterator

    from bastion.engine.audit.backend import AuditBackend
    from bastion.engine.audit.chain import ChainKeys
    from bastion.engine.audit.model import Head, Row

__all__ = ["BrokenLink", "Fault", "VerifyReport", "verify_trail"]

_PAGE: Final = 2000


class Fault(StrEnum):
    """Why a link is broken."""

    EVENT_MAC = "event_mac"
    """A row's MAC does not match its body and its predecessor: edited, or reordered."""
    COLUMN = "column_mismatch"
    """A query column (name, outcome, user ...) disagrees with the row's MACed body."""
    MISSING_EVENT = "missing_event"
    """A sequence number is absent from a segment that was not purged."""
    STRAY_EVENT = "stray_event"
    """A row belongs to no segment the seals and the head know."""
    SEAL_MAC = "seal_mac"
    """A seal was edited, or its chain to the previous seal is broken."""
    SEAL_MISMATCH = "seal_mismatch"
    """A segment's rows do not end where its seal says (count or last MAC)."""
    MISSING_SEAL = "missing_seal"
    """A segment number is skipped in the chain of seals."""
    PURGE_MAC = "purge_mac"
    """A purge mark was edited or forged."""
    HEAD = "head_mismatch"
    """The head disagrees with the last seal or the last row."""
    UNKNOWN_KEY = "unknown_key"
    """A segment was written under a key the ring no longer holds."""
    TRUNCATED = "truncated"
    """The trail ends before, or differs at, a head recorded earlier (``expect``): its tail
    was cut, or the chain rewritten from some point on."""


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """Where verification stopped: the fault, the segment and, for a row, its ``seq``."""

    fault: Fault
    segment: int
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"segment {self.segment}" + ("" if self.seq is None else f", event {self.seq}")
        return f"{where}: {self.fault} ({self.detail})"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome: ``ok`` when no link is broken; counts of what was checked."""

    events: int
    segments: int
    purged_segments: int
    broken: BrokenLink | None
    head_seq: int
    head_mac: str | None

    @property
    def ok(self) -> bool:
        return self.broken is None


class _Broken(Exception):  # internal control flow, never escapes
    def __init__(self, link: BrokenLink) -> None:
        self.link = link


def _rows(backend: AuditBackend) -> Iterator[Row]:
    after = 0
    while True:
        page = backend.rows(after, _PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1].seq


def _columns_match(row: Row) -> bool:
    try:
        data = json.loads(row.body)
        moment = time_ms(datetime.fromisoformat(data["time"]))
    except (ValueError, KeyError, TypeError):
        return False
    return (
        data.get("event") == row.name
        and data.get("outcome") == row.outcome
        and data.get("level") == row.level
        and data.get("user") == row.user
        and data.get("client_ip") == row.client_ip
        and data.get("session") == row.session
        and data.get("request_id") == row.request_id
        and moment == row.time_ms
    )


class _Walk:
    __slots__ = (
        "events", "expect", "expected_mac", "keys", "last", "pending", "purged", "rows",
        "segments",
    )  # fmt: skip

    def __init__(
        self, backend: AuditBackend, keys: ChainKeys, expect: tuple[int, str] | None
    ) -> None:
        self.keys = keys
        self.expect = expect
        self.expected_mac: str | None = None  # the MAC found at the expected head's seq
        self.last: tuple[int, str] | None = None
        self.rows = _rows(backend)
        self.pending = next(self.rows, None)
        self.events = self.segments = self.purged = 0

    def key(self, kid: str, segment: int) -> bytes:
        key = self.keys.get(kid)
        if key is None:
            _fail(Fault.UNKNOWN_KEY, segment, None, f"key id {kid!r} is not in the ring")
        return key

    def segment(self, key: bytes, segment: int, first_seq: int, start: str) -> tuple[int, str]:
        """Check the rows of ``segment``; their count and the last MAC."""
        last, seq, count = start, first_seq, 0
        while self.pending is not None and self.pending.segment == segment:
            row = self.pending
            if row.seq != seq:
                fault = Fault.MISSING_EVENT if row.seq > seq else Fault.STRAY_EVENT
                _fail(fault, segment, seq, f"next stored event is {row.seq}")
            expected = event_mac(key, last, seq, segment, row.body)
            if not hmac.compare_digest(expected, row.mac):
                _fail(Fault.EVENT_MAC, segment, seq, "MAC does not match")
            if not _columns_match(row):
                _fail(Fault.COLUMN, segment, seq, "columns differ from body")
            if self.expect is not None and seq == self.expect[0]:
                self.expected_mac = row.mac
            self.last = (seq, row.mac)
            last, seq, count = row.mac, seq + 1, count + 1
            self.events += 1
            self.pending = next(self.rows, None)
        return count, last


def verify_trail(
    backend: AuditBackend, keys: ChainKeys, *, expect: tuple[int, str] | None = None
) -> VerifyReport:
    """Verify the whole trail in ``backend`` with the chain ``keys``. ``expect`` is a head
    recorded earlier (``(head_seq, head_mac)`` of an older report, kept elsewhere): the trail
    must still hold that event with that MAC (unless it was purged) and reach past it, which
    catches a cut tail, the one change the chain alone cannot show."""
    walk = _Walk(backend, keys, expect)
    head = backend.head()
    broken: BrokenLink | None = None
    try:
        _walk_trail(backend, walk, head)
        if expect is not None:
            _check_expected(walk, expect)
    except _Broken as failure:
        broken = failure.link
    return VerifyReport(
        events=walk.events,
        segments=walk.segments,
        purged_segments=walk.purged,
        broken=broken,
        head_seq=0 if walk.last is None else walk.last[0],
        head_mac=None if walk.last is None else walk.last[1],
    )


def _check_expected(walk: _Walk, expect: tuple[int, str]) -> None:
    seq, mac = expect
    last_seq = 0 if walk.last is None else walk.last[0]
    if seq > last_seq:
        _fail(Fault.TRUNCATED, walk.segments, seq, f"the trail ends at event {last_seq}")
    if walk.expected_mac is not None and not hmac.compare_digest(walk.expected_mac, mac):
        _fail(Fault.TRUNCATED, walk.segments, seq, "another MAC than the recorded head")


def _fail(fault: Fault, segment: int, seq: int | None, detail: str) -> NoReturn:
    raise _Broken(BrokenLink(fault, segment, seq, detail))


def _walk_trail(backend: AuditBackend, walk: _Walk, head: Head | None) -> None:
    purged_through = _purged_through(backend, walk)
    previous, next_seq = NO_MAC, 1
    for number, seal in enumerate(backend.seals()):
        if seal.segment != number:
            _fail(Fault.MISSING_SEAL, number, None, "no seal")
        key = walk.key(seal.kid, number)
        if seal.previous != previous or not hmac.compare_digest(seal_mac(key, seal), seal.mac):
            _fail(Fault.SEAL_MAC, number, None, "seal MAC does not match")
        if seal.first_seq != next_seq:
            _fail(Fault.SEAL_MISMATCH, number, None, "sequence gap")
        count, last = walk.segment(key, number, seal.first_seq, genesis(key, number, previous))
        if count == 0 and number <= purged_through:
            walk.purged += 1
        elif count < seal.count:
            _fail(Fault.MISSING_EVENT, number, seal.first_seq + count, f"seal counts {seal.count}")
        elif count != seal.count or last != seal.head:
            _fail(Fault.SEAL_MISMATCH, number, None, "last MAC differs from seal")
        walk.segments += 1
        previous, next_seq = seal.mac, seal.last_seq + 1
    open_segment = walk.segments
    if head is not None and (
        head.segment != open_segment or head.seal != previous or head.first_seq != next_seq
    ):
        _fail(Fault.HEAD, open_segment, None, "head does not follow the last seal")
    pending = walk.pending
    if head is not None and pending is not None and pending.segment == open_segment:
        key = walk.key(head.kid, open_segment)
        start = genesis(key, open_segment, previous)
        count, last = walk.segment(key, open_segment, next_seq, start)
        if count != head.count or last != head.last:
            _fail(Fault.HEAD, open_segment, None, "open segment ends elsewhere than the head")
        walk.segments += 1
    elif head is not None and head.count:
        _fail(Fault.MISSING_EVENT, open_segment, next_seq, "open segment is empty")
    if walk.pending is not None:
        _fail(Fault.STRAY_EVENT, walk.pending.segment, walk.pending.seq, "unexpected row")


def _purged_through(backend: AuditBackend, walk: _Walk) -> int:
    previous, through = NO_MAC, -1
    for number, mark in enumerate(backend.purges()):
        key = walk.key(mark.kid, mark.through)
        valid = mark.number == number and mark.previous == previous
        if not valid or not hmac.compare_digest(purge_mac(key, mark), mark.mac):
            _fail(Fault.PURGE_MAC, mark.through, None, f"purge mark {number}")
        previous, through = mark.mac, max(through, mark.through)
    return through
