"""The per-user registry's records: a user's session index and revocation epoch."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

from bastion.core.sessions.record import RECORD_VERSION, clip
from bastion.errors import BadData

__all__ = [
    "MAX_SESSIONS_PER_USER",
    "Epoch",
    "SessionIndex",
    "decode_epoch",
    "decode_index",
    "encode_epoch",
    "encode_index",
]

MAX_SESSIONS_PER_USER: Final = 256
"""Most sessions the registry keeps per user; a login past it destroys the user's oldest."""


@dataclass(slots=True)
class SessionIndex:
    """One user's sessions: handle -> ``{"created": t, "ip": ..., "ua": ...}``.

    Bounded to the newest :data:`MAX_SESSIONS_PER_USER` entries. An entry is never dropped
    while its session may live: :meth:`add` returns the handles that fell out, and the caller
    destroys those sessions before it stores the index, so the list shows every live session
    (the oldest session of a user past the cap is logged out). An entry whose record is gone
    is pruned when listed.
    """

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, handle: str, *, created: float, ip: str | None, ua: str | None) -> list[str]:
        """Add ``handle``; the handles pushed out by the bound (oldest first), to destroy."""
        self.entries[handle] = {"created": created, "ip": clip(ip), "ua": clip(ua)}
        evicted: list[str] = []
        while len(self.entries) > MAX_SESSIONS_PER_USER:
            oldest = min(
                (h for h in self.entries if h != handle),
                key=lambda h: float(self.entries[h].get("created", 0.0)),
            )
            del self.entries[oldest]
            evicted.append(oldest)
        return evicted


@dataclass(frozen=True, slots=True)
class Epoch:
    """A user's revocation epoch: ``number`` goes up by one on every "revoke all" (or "revoke
    all others"), at Unix time ``since``. A session record carries the epoch its login was
    made under; a load refuses a record whose epoch is lower than the user's current one, so a
    revocation reaches every session of the user, whether the registry lists it or not."""

    number: int = 0
    since: float = 0.0


def encode_epoch(epoch: Epoch) -> bytes:
    return json.dumps(
        {"v": RECORD_VERSION, "n": epoch.number, "t": epoch.since}, separators=(",", ":")
    ).encode("ascii")


def decode_epoch(raw: bytes | None) -> Epoch:
    """Parse a user's epoch record; ``None`` (absent) is epoch 0. Malformed is :class:`BadData`
    (the caller refuses the user's sessions rather than guess)."""
    if raw is None:
        return Epoch()
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadData("session epoch is not JSON") from None
    if type(payload) is not dict or payload.get("v") != RECORD_VERSION:
        raise BadData("session epoch has an unknown format version")
    number, since = payload.get("n"), payload.get("t")
    if type(number) is not int or number < 0:
        raise BadData("session epoch number is malformed")
    if not isinstance(since, int | float) or isinstance(since, bool) or not math.isfinite(since):
        raise BadData("session epoch time is malformed")
    return Epoch(number, float(since))


def encode_index(index: SessionIndex) -> bytes:
    payload = {"v": RECORD_VERSION, "s": index.entries}
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode_index(raw: bytes | None) -> SessionIndex:
    """Parse a user's index; ``None`` (absent) is an empty index. Malformed is :class:`BadData`."""
    if raw is None:
        return SessionIndex()
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadData("session index is not JSON") from None
    if not isinstance(payload, dict) or payload.get("v") != RECORD_VERSION:
        raise BadData("session index has an unknown format version")
    entries = payload.get("s")
    if not isinstance(entries, dict) or not all(
        isinstance(h, str) and isinstance(e, dict) for h, e in entries.items()
    ):
        raise BadData("session index entries are malformed")
    return SessionIndex(entries)
