"""A session's deadlines, from its record: alive, due for a touch or a renewal, its cookie's
``Max-Age`` and its store TTL. Pure functions over the record and the
:class:`~bastion.core.sessions.config.SessionConfig`; the load path and the save plan use them.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Final

from bastion.core.cookies import MAX_AGE_LIMIT

if TYPE_CHECKING:
    from bastion.core.sessions.config import SessionConfig
    from bastion.core.sessions.record import SessionRecord

__all__ = [
    "EXPIRY_SLACK",
    "LIVE",
    "Liveness",
    "cookie_max_age",
    "liveness",
    "needs_renewal",
    "needs_touch",
    "record_ttl",
]

EXPIRY_SLACK: Final = 300.0
"""Seconds a record outlives its deadline in the store, so that a late request is told (and
audited) ``session_expired`` rather than ``unknown``. Deadlines are checked on every load."""


class Liveness(enum.StrEnum):
    LIVE = "live"
    IDLE_EXPIRED = "idle_expired"
    ABSOLUTE_EXPIRED = "absolute_expired"


LIVE: Final = Liveness.LIVE
"""The member as a module constant, for the load path (see
:data:`~bastion.core.sessions.planning.UNCHANGED`)."""
_IDLE_EXPIRED: Final = Liveness.IDLE_EXPIRED
_ABSOLUTE_EXPIRED: Final = Liveness.ABSOLUTE_EXPIRED


def liveness(record: SessionRecord, now: float, config: SessionConfig) -> Liveness:
    idle, absolute = config.lifetimes(record.persistent)
    if now >= record.created_at + absolute:
        return _ABSOLUTE_EXPIRED
    if now >= record.last_seen + idle:
        return _IDLE_EXPIRED
    return LIVE


def needs_touch(record: SessionRecord, now: float, config: SessionConfig) -> bool:
    return now - record.last_seen >= config.touch_interval


def needs_renewal(record: SessionRecord, now: float, config: SessionConfig) -> bool:
    return config.renew_every is not None and now - record.issued_at >= config.renew_every


def cookie_max_age(record: SessionRecord, now: float, config: SessionConfig) -> int | None:
    """``Max-Age`` for the session cookie: ``None`` (browser session) unless persistent, then
    the seconds left until the server's deadline, so the cookie never outlives the session."""
    if not record.persistent:
        return None
    return max(0, min(MAX_AGE_LIMIT, math.floor(record.deadline(config) - now)))


def record_ttl(record: SessionRecord, now: float, config: SessionConfig) -> float:
    """The store TTL of ``record``: its remaining life plus :data:`EXPIRY_SLACK`."""
    return max(1.0, record.deadline(config) - now) + EXPIRY_SLACK
