"""What the stored audit trail holds: event rows, segment seals, purge marks and the head.

Every backend stores the same four kinds of record, so the chain (:mod:`.chain`) and the
verifier (:mod:`.verify`) are written once:

* :class:`Row`: one event. ``body`` is the event's canonical JSON line
  (:meth:`~bastion.core.audit.AuditEvent.to_json`, keys in a fixed order); the other columns
  are copies of its fields kept for queries. The verifier checks that the copies agree with
  the body, so an edited column is as evident as an edited body.
* :class:`Seal`: closes one segment of consecutive events (its count, its last MAC), chained
  to the previous seal.
* :class:`Purge`: records that every segment up to ``through`` was deleted on purpose, chained
  to the previous purge.
* :class:`Head`: where the next event goes (its sequence number, the open segment, the last
  MAC). Writers read and replace it in the same transaction as their rows, so several
  processes extend one chain.

Seals, purges and the head are stored as compact JSON text (:func:`dump` / ``load``), the same
on SQLite, PostgreSQL and Redis.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeGuard, TypeVar

from bastion.errors import AuditUnavailable, StoreCorrupt

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "NO_MAC",
    "AuditUnavailable",
    "Batch",
    "Head",
    "Purge",
    "Query",
    "Row",
    "Seal",
    "dump",
    "load",
    "time_ms",
]

NO_MAC: Final = "0" * 64
"""The MAC before the first seal (and the previous MAC of the first purge)."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_FAST_FROM: Final = 1971


def time_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, exactly (integer arithmetic), as the event's JSON line
    writes its time (``isoformat(timespec="milliseconds")`` truncates the microseconds)."""
    if moment.year >= _FAST_FROM:
        # Whole seconds from the float timestamp are exact here: a microsecond part of at
        # most .999999 stays below the next second at these magnitudes (spacing < 1e-6).
        return int(moment.timestamp()) * 1000 + moment.microsecond // 1000
    return (moment - _EPOCH) // _MS


class Row(NamedTuple):
    """One stored event (see the module docstring). A tuple, so a batch goes to
    ``executemany`` as it is."""

    seq: int
    segment: int
    time_ms: int
    name: str
    outcome: str
    level: str
    user: str | None
    client_ip: str | None
    session: str | None
    request_id: str | None
    body: str
    mac: str


@dataclass(frozen=True, slots=True)
class Seal:
    """The end of segment ``segment``: events ``first_seq`` to ``last_seq`` (``count`` of
    them), the MAC of the last one (``head``), the id of the key (``kid``), the previous
    seal's MAC (``previous``) and this seal's own MAC."""

    segment: int
    first_seq: int
    last_seq: int
    count: int
    first_ms: int
    last_ms: int
    head: str
    kid: str
    previous: str
    mac: str


@dataclass(frozen=True, slots=True)
class Purge:
    """Segments ``0`` to ``through`` were deleted by a retention purge at ``time_ms``."""

    number: int
    through: int
    time_ms: int
    kid: str
    previous: str
    mac: str


@dataclass(frozen=True, slots=True)
class Head:
    """The state a writer extends: ``seq`` is the last sequence number written; the open
    segment ``segment`` holds ``count`` events from ``first_seq`` (``first_ms`` to
    ``last_ms``), the last with MAC ``last`` (the segment's genesis while it is empty);
    ``seal`` is the MAC of the last seal, ``kid`` the key of the open segment."""

    seq: int
    segment: int
    count: int
    first_seq: int
    first_ms: int
    last_ms: int
    last: str
    seal: str
    kid: str


@dataclass(frozen=True, slots=True)
class Batch:
    """What one transaction writes: rows, seals, at most one purge (then the rows of segments
    up to ``purge.through`` are deleted), and the new head."""

    head: Head
    rows: Sequence[Row] = ()
    seals: Sequence[Seal] = ()
    purge: Purge | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """A search: any of ``names``, any of the ``users`` digests, any of ``outcomes``, within
    ``[since_ms, until_ms)``; newest first, at most ``limit`` rows. Empty tuples match all."""

    names: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int = 100


_T = TypeVar("_T", Seal, Purge, Head)


def dump(record: Seal | Purge | Head) -> str:
    """``record`` as compact JSON text, fields in declaration order."""
    return json.dumps(asdict(record), separators=(",", ":"))


def load(kind: type[_T], text: str | bytes) -> _T:
    """The record of ``kind`` stored as ``text``; :class:`~bastion.errors.StoreCorrupt` when
    it is not one (the verifier reports that as a broken link)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not _shaped(data, kind):
        raise StoreCorrupt(f"a stored audit {kind.__name__.lower()} is malformed")
    return kind(**data)


def _shaped(data: object, kind: type[_T]) -> TypeGuard[dict[str, Any]]:
    if not isinstance(data, dict) or sorted(data) != sorted(f.name for f in fields(kind)):
        return False
    for f in fields(kind):
        value = data[f.name]
        if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if f.type == "str" and not isinstance(value, str):
            return False
    return True
