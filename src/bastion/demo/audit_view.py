"""The rows of the demo's ``/audit`` page: from the stored trail when the demo has one
(``runtime.audit``), else from the in-memory ring of recent events; with the page's filters.

The filters come from the query string, so they are checked here and a bad one is a
:class:`FilterError` (the page answers 400): ``event`` is an event name (lower-case letters,
digits and ``_``), ``since`` is ISO 8601 (a time without a zone is UTC) or an age (``90s``,
``15m``, ``2h``, ``7d``), as for ``bastion audit query --since``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from bastion.audit import AuditTrail
    from bastion.core.audit import AuditEvent, HashedIdentifier, IdentifierHasher

__all__ = ["PAGE_ROWS", "AuditFilters", "AuditRow", "FilterError", "memory_rows", "stored_rows"]

PAGE_ROWS: Final = 200
_EVENT: Final = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)
_SINCE_CHARS: Final = 40
_AGE: Final = re.compile(r"(\d{1,9})([smhd])", re.ASCII)
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_SCAN: Final = 1000
"""Events without an account read from the store to find those from the caller's address."""


class FilterError(ValueError):
    """A filter in the query string that the page does not accept (answered 400)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilters:
    """The page's filters: ``event`` (one name) and ``since`` (epoch seconds)."""

    event: str | None = None
    since: float | None = None
    since_text: str = ""

    @classmethod
    def parse(cls, query: Mapping[str, str], *, now: float) -> AuditFilters:
        event = query.get("event", "").strip() or None
        if event is not None and _EVENT.fullmatch(event) is None:
            raise FilterError(
                "event must be an event name: lower-case letters, digits and _ "
                "(authn_login_fail), at most 64 characters"
            )
        since_text = query.get("since", "").strip()
        since = None
        if since_text:
            if len(since_text) > _SINCE_CHARS:
                raise FilterError(f"since is at most {_SINCE_CHARS} characters")
            since = _moment(since_text, now=now)
        return cls(event=event, since=since, since_text=since_text)


def _moment(text: str, *, now: float) -> float:
    """``text`` as epoch seconds (not before 1970): an age before ``now`` or ISO 8601, the
    forms of ``bastion audit query --since`` (the command line is a layer above the demo)."""
    age = _AGE.fullmatch(text)
    if age is not None:
        return max(now - int(age.group(1)) * _UNITS[age.group(2)], 0.0)
    try:
        moment = datetime.fromisoformat(text)
        if moment.utcoffset() is None:
            moment = moment.replace(tzinfo=UTC)
        return max(moment.timestamp(), 0.0)
    except (ValueError, OverflowError, OSError):
        raise FilterError(
            "since must be ISO 8601 (2026-12-03T08:00:00Z) or an age (90s, 15m, 2h, 7d)"
        ) from None


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One line of the page (an in-memory event or a stored record, the same shape)."""

    time: datetime
    name: str
    outcome: str
    about: str
    details: Mapping[str, Any] = field(hash=False)
    seq: int | None = None


def _matches(filters: AuditFilters, name: str, when: datetime) -> bool:
    if filters.event is not None and name != filters.event:
        return False
    return filters.since is None or when.timestamp() >= filters.since


def memory_rows(
    events: Iterable[AuditEvent],
    mine: HashedIdentifier,
    here: HashedIdentifier | None,
    filters: AuditFilters,
) -> list[AuditRow]:
    """The caller's events (``mine``: their user digest) and the events without an account
    from their address (``here``), newest first."""
    rows: list[AuditRow] = []
    for event in events:
        if event.user == mine:
            about = "you"
        elif event.user is None and here is not None and event.client_ip == here:
            about = "your address"
        else:
            continue
        if _matches(filters, str(event.name), event.time):
            rows.append(
                AuditRow(event.time, str(event.name), str(event.outcome), about, event.details)
            )
    rows.reverse()
    return rows[:PAGE_ROWS]


def stored_rows(
    trail: AuditTrail,
    username: str,
    hasher: IdentifierHasher,
    client: str | None,
    filters: AuditFilters,
) -> list[AuditRow]:
    """The same rows read from the stored trail (what is queued is written first)."""
    trail.flush()
    since = filters.since
    found = {
        record.seq: AuditRow(
            record.time, record.event, record.outcome, "you", record.details, record.seq
        )
        for record in trail.query(user=username, event=filters.event, since=since, limit=PAGE_ROWS)
    }
    if client is not None:
        here = set(hasher.candidates(client, kind="client_ip"))
        for record in trail.query(event=filters.event, since=since, limit=_SCAN):
            if record.user is None and record.client_ip in here:
                found[record.seq] = AuditRow(
                    record.time,
                    record.event,
                    record.outcome,
                    "your address",
                    record.details,
                    record.seq,
                )
    return [found[seq] for seq in sorted(found, reverse=True)][:PAGE_ROWS]


def since_for_display(filters: AuditFilters) -> str:
    """The ``since`` filter as the page shows it (UTC), or ``""``."""
    if filters.since is None:
        return ""
    return datetime.fromtimestamp(filters.since, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
