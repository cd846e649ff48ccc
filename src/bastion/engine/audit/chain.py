"""The HMAC hash chain: how rows, seals and purges are MACed, and how a writer extends the head.

Events are numbered ``seq = 1, 2, 3 ...`` across the whole trail and grouped in *segments*
of consecutive events. Each event's MAC covers the previous event's MAC, its sequence number,
its segment and its body::

    genesis(s)  = HMAC(k, "bastion.audit.segment.v1" NUL  s  previous seal MAC)
    mac(event)  = HMAC(k, "bastion.audit.event.v1"   NUL  previous MAC  seq  s  body)

so an edited, inserted, reordered or deleted event breaks every MAC after it within its
segment. A segment is *sealed* once it holds ``segment_events`` events, once its first event
is ``seal_after`` seconds old, when the key changes, and when a writer closes; the seal records
the count and the last MAC, and is chained to the previous seal::

    mac(seal)   = HMAC(k, "bastion.audit.seal.v1" NUL  s first last count first_ms last_ms
                          head kid  previous seal MAC)

A retention purge deletes whole sealed segments, oldest first, and writes a :class:`Purge`
mark chained to the previous one. The seals stay, so the chain of seals still runs from
segment 0 to the open segment, and a verifier tells a purged segment (covered by a valid
mark) from deleted events (not covered). Without the key nobody can forge a seal or a mark.

What a chain cannot show: events cut from the *end* of the open segment (with the seal a
closing writer would have written). Seal often (``seal_after``) and keep the head that
``bastion audit verify`` prints somewhere else to bound that window.

Keys: ``HMAC-SHA256`` under a subkey of the ring for purpose ``audit:chain``, so the chain key
is independent of every other key. Each segment records the id of its key (``kid``, a keyed
fingerprint); a rotated ring keeps verifying old segments while it holds the old key.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import replace
from typing import TYPE_CHECKING, Final, NoReturn

from bastion.core.keys import KeyRing
from bastion.engine.audit.body import event_body
from bastion.engine.audit.model import NO_MAC, Batch, Head, Purge, Row, Seal, time_ms

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.core.audit import AuditEvent
    from bastion.core.keys import SecretKey

__all__ = ["Chain", "ChainKeys", "event_mac", "genesis", "purge_mac", "seal_mac"]

_SEGMENT: Final = b"bastion.audit.segment.v1\x00"
_EVENT: Final = b"bastion.audit.event.v1\x00"
_SEAL: Final = b"bastion.audit.seal.v1\x00"
_PURGE: Final = b"bastion.audit.purge.v1\x00"
_KID: Final = b"bastion.audit.kid.v1\x00"
_Q: Final = struct.Struct(">q")
_SEQ_SEGMENT: Final = struct.Struct(">qq")
_SEAL_NUMBERS: Final = struct.Struct(">qqqqqq")
_PURGE_NUMBERS: Final = struct.Struct(">qqq")
_sha256 = hashlib.sha256


class ChainKeys:
    """The chain's keys by id: the current one signs, every one verifies."""

    __slots__ = ("_keys", "current")

    def __init__(self, keyring: KeyRing | SecretKey) -> None:
        ring = KeyRing.coerce(keyring).derive("audit:chain")
        raw = [key.reveal() for key in ring]
        self._keys = {_kid(key): key for key in raw}
        self.current = _kid(raw[0])

    def get(self, kid: str) -> bytes | None:
        """The key with id ``kid``, or ``None`` when the ring no longer holds it."""
        return self._keys.get(kid)

    def signing(self) -> bytes:
        return self._keys[self.current]

    def __repr__(self) -> str:
        return f"ChainKeys(<{len(self._keys)} keys>, current={self.current!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("ChainKeys cannot be pickled: it holds secrets")


def _kid(key: bytes) -> str:
    return hmac.digest(key, _KID, _sha256)[:8].hex()


def genesis(key: bytes, segment: int, previous_seal: str) -> str:
    """The MAC an empty segment starts from."""
    message = _SEGMENT + _Q.pack(segment) + bytes.fromhex(previous_seal)
    return hmac.digest(key, message, _sha256).hex()


def event_mac(key: bytes, previous: str, seq: int, segment: int, body: str) -> str:
    return _event_mac(key, bytes.fromhex(previous), seq, segment, body).hex()


def _event_mac(key: bytes, previous: bytes, seq: int, segment: int, body: str) -> bytes:
    message = _EVENT + previous + _SEQ_SEGMENT.pack(seq, segment)
    return hmac.digest(key, message + body.encode("utf-8", "surrogatepass"), _sha256)


def seal_mac(key: bytes, seal: Seal) -> str:
    numbers = _SEAL_NUMBERS.pack(
        seal.segment, seal.first_seq, seal.last_seq, seal.count, seal.first_ms, seal.last_ms
    )
    message = _SEAL + numbers + bytes.fromhex(seal.head) + seal.kid.encode("ascii")
    return hmac.digest(key, message + bytes.fromhex(seal.previous), _sha256).hex()


def purge_mac(key: bytes, purge: Purge) -> str:
    numbers = _PURGE_NUMBERS.pack(purge.number, purge.through, purge.time_ms)
    message = _PURGE + numbers + purge.kid.encode("ascii") + bytes.fromhex(purge.previous)
    return hmac.digest(key, message, _sha256).hex()


class Chain:
    """Extends a :class:`Head` with events, seals and purges (pure: the backend does I/O).

    ``segment_events`` and ``seal_after_ms`` are when a segment is sealed (see the module
    docstring).
    """

    __slots__ = ("keys", "seal_after_ms", "segment_events")

    def __init__(self, keys: ChainKeys, *, segment_events: int, seal_after_ms: int) -> None:
        self.keys = keys
        self.segment_events = segment_events
        self.seal_after_ms = seal_after_ms

    def start(self) -> Head:
        """The head of an empty trail."""
        kid = self.keys.current
        first = genesis(self.keys.signing(), 0, NO_MAC)
        return Head(
            seq=0, segment=0, count=0, first_seq=1, first_ms=0, last_ms=0, last=first,
            seal=NO_MAC, kid=kid,
        )  # fmt: skip

    def append(self, head: Head | None, events: Sequence[AuditEvent], now_ms: int) -> Batch:
        """The rows for ``events`` after ``head`` (``None``: an empty trail), with the seals
        that fall due on the way and after the batch."""
        seals: list[Seal] = []
        head = self._current(self.start() if head is None else head, seals)
        rows: list[Row] = []
        key = self.keys.signing()
        seq, segment, count, last = head.seq, head.segment, head.count, head.last
        raw = bytes.fromhex(last)
        first_seq, first_ms, last_ms = head.first_seq, head.first_ms, head.last_ms
        limit = self.segment_events
        for event in events:
            if count >= limit:
                head = replace(
                    head, seq=seq, count=count, first_seq=first_seq, first_ms=first_ms,
                    last_ms=last_ms, last=last,
                )  # fmt: skip
                seal, head = self._seal(head)
                seals.append(seal)
                segment, count, last, first_seq = head.segment, 0, head.last, head.first_seq
                raw = bytes.fromhex(last)
            body = event_body(event)
            seq += 1
            raw = _event_mac(key, raw, seq, segment, body)
            last = raw.hex()
            moment = time_ms(event.time)
            if count == 0:
                first_ms = moment
            last_ms = moment
            count += 1
            rows.append(
                Row(
                    seq,
                    segment,
                    moment,
                    str(event.name),
                    str(event.outcome),
                    str(event.level),
                    None if event.user is None else event.user.digest,
                    None if event.client_ip is None else event.client_ip.digest,
                    None if event.session is None else event.session.digest,
                    event.request_id,
                    body,
                    last,
                )
            )
        head = replace(
            head, seq=seq, count=count, first_seq=first_seq, first_ms=first_ms, last_ms=last_ms,
            last=last,
        )  # fmt: skip
        if count and now_ms - first_ms >= self.seal_after_ms:
            seal, head = self._seal(head)
            seals.append(seal)
        return Batch(head=head, rows=rows, seals=seals)

    def seal_open(self, head: Head | None) -> Batch | None:
        """Seal the open segment now (a writer closing); ``None`` when it is empty."""
        if head is None or head.count == 0:
            return None
        seal, head = self._seal(head)
        return Batch(head=head, seals=[seal])

    def purge(
        self,
        head: Head,
        seals: Sequence[Seal],
        purges: Sequence[Purge],
        before_ms: int,
        now_ms: int,
    ) -> Batch | None:
        """A purge of every sealed segment whose last event is older than ``before_ms``
        (oldest first, stopping at the first younger one); ``None`` when none is due."""
        done = purges[-1].through if purges else -1
        through = done
        for seal in seals:
            if seal.segment <= done:
                continue
            if seal.segment != through + 1 or seal.last_ms >= before_ms:
                break
            through = seal.segment
        if through == done:
            return None
        kid = self.keys.current
        mark = Purge(
            number=len(purges), through=through, time_ms=now_ms, kid=kid,
            previous=purges[-1].mac if purges else NO_MAC, mac="",
        )  # fmt: skip
        mark = replace(mark, mac=purge_mac(self.keys.signing(), mark))
        return Batch(head=head, purge=mark)

    def _current(self, head: Head, seals: list[Seal]) -> Head:
        """``head``, moved to the current key: an open segment under an older key is sealed
        first (into ``seals``; its rows stay verifiable while the ring holds that key)."""
        if head.kid == self.keys.current:
            return head
        if head.count:
            seal, head = self._seal(head)
            seals.append(seal)
            return head
        key = self.keys.signing()
        return replace(head, kid=self.keys.current, last=genesis(key, head.segment, head.seal))

    def _seal(self, head: Head) -> tuple[Seal, Head]:
        key = self.keys.get(head.kid)
        if key is None:  # pragma: no cover (the head's key is current or was just rotated)
            key = self.keys.signing()
        seal = Seal(
            segment=head.segment, first_seq=head.first_seq, last_seq=head.seq,
            count=head.count, first_ms=head.first_ms, last_ms=head.last_ms, head=head.last,
            kid=head.kid, previous=head.seal, mac="",
        )  # fmt: skip
        seal = replace(seal, mac=seal_mac(key, seal))
        current = self.keys.signing()
        segment = head.segment + 1
        opened = Head(
            seq=head.seq, segment=segment, count=0, first_seq=head.seq + 1, first_ms=0,
            last_ms=0, last=genesis(current, segment, seal.mac), seal=seal.mac,
            kid=self.keys.current,
        )  # fmt: skip
        return seal, opened
