"""The per-user registry and revocation epochs, as store flows.

A session with a user (after ``login()``) is listed in that user's index record, under a
hash-tagged key, updated with :func:`~bastion.engine.flows.update`.
:meth:`SessionRegistry.list_sessions_flow` reads the index and each record (created, last
seen, IP, user agent); :meth:`SessionRegistry.revoke_flow` deletes records, which also makes
every in-flight save of those sessions fail. The index is bounded; a login past the bound
destroys the user's oldest session, so the list never misses a live one.

Revocation epochs. "Revoke all" and "revoke others" do not depend on the index: they raise the
user's epoch (a record under its own key), and every session record carries the epoch its
login was made under. A load refuses a record whose epoch is lower than its user's, so a
revocation ends every session of the user, listed or not, including one renewed or logged in
while the revocation ran (a login whose password was checked before the revocation is refused
at its save). "Revoke others" re-stamps the kept session with the new epoch before raising it.
The listed sessions a revocation then deletes are those its epoch ended, each checked and
deleted in one compare-and-set: a session under the new epoch (the caller's own, renewed by a
parallel request, or a login made meanwhile) stays. The epoch record and the registry live as
long as the longest kind of session (browser sessions may outlive "remember me" ones); the
epoch record at least ``min_epoch_ttl`` too, since access tokens and refresh families read the
same epoch (:mod:`bastion.engine.tokens.revocation`) and may outlive every session.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from bastion.core.audit import Outcome
from bastion.core.sessions.ids import record_key
from bastion.core.sessions.index import (
    Epoch,
    SessionIndex,
    decode_epoch,
    decode_index,
    encode_epoch,
    encode_index,
)
from bastion.core.sessions.record import (
    RecordDecoder,
    SessionRecord,
    Tombstone,
    encode_record,
    encode_tombstone,
)
from bastion.core.sessions.state import (
    EXPIRY_SLACK,
    Liveness,
    liveness,
    record_ttl,
    resolve,
)
from bastion.engine.flows import Delete, Done, Flow, Follow, Get, Write, update
from bastion.errors import BadData, ConfigurationError
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.sessions.config import SessionConfig

__all__ = [
    "IndexChange",
    "RegistryOperations",
    "SessionInfo",
    "SessionRegistry",
    "add_entry",
    "all_but",
    "epoch_key",
    "index_key",
    "only",
    "remove_entries",
    "replace_entry",
]

DESTROYED_EVENT: Final = "session_destroyed"
_Revoked: TypeAlias = Literal["gone", "lives", "ended", "cleared"]


def index_key(user_id: str) -> str:
    """The store key of ``user_id``'s session index (one Redis Cluster slot per user)."""
    return hash_tag("sessions-of", user_id)


def epoch_key(user_id: str) -> str:
    """The store key of ``user_id``'s revocation epoch (same Redis Cluster slot as the index)."""
    return hash_tag("session-epoch", user_id)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One entry of a user's session list. ``handle`` names the session for
    :meth:`~bastion.engine.sessions.SessionEngine.revoke` (it is not a session ID and cannot be
    used as a cookie)."""

    handle: str
    created_at: float
    last_seen: float
    ip: str | None
    user_agent: str | None
    current: bool = False


IndexChange = Callable[[SessionIndex], "list[str] | None"]
"""A change to a user's index; returns the handles it pushed out (to destroy), if any."""


def add_entry(handle: str, record: SessionRecord, now: float) -> IndexChange:
    def change(index: SessionIndex) -> list[str]:
        return index.add(handle, created=now, ip=record.ip, ua=record.user_agent)

    return change


def remove_entries(*handles: str) -> IndexChange:
    def change(index: SessionIndex) -> None:
        for handle in handles:
            index.entries.pop(handle, None)

    return change


def replace_entry(old: str, new: str, record: SessionRecord, now: float) -> IndexChange:
    def change(index: SessionIndex) -> list[str]:
        previous = index.entries.pop(old, None)
        created = now if previous is None else float(previous.get("created", now))
        return index.add(new, created=created, ip=record.ip, ua=record.user_agent)

    return change


def only(handle: str) -> Callable[[SessionIndex], list[str]]:
    return lambda index: [handle] if handle in index.entries else []


def all_but(keep: str | None) -> Callable[[SessionIndex], list[str]]:
    return lambda index: [h for h in index.entries if h != keep]


def check_min_epoch_ttl(seconds: float) -> float:
    """Validate ``min_epoch_ttl``: finite seconds >= 0 (0 keeps the sessions' own TTL)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(
            f"min_epoch_ttl must be seconds, got {type(seconds).__name__}",
            setting="min_epoch_ttl",
        )
    try:
        value = float(seconds)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(
            "min_epoch_ttl must be finite seconds >= 0 (the longest token lifetime plus a "
            "margin, see bastion.engine.tokens.revocation.min_epoch_ttl)",
            setting="min_epoch_ttl",
        )
    return value


class SessionRegistry:
    """The flows over users' indexes and epochs that the engine's saves and its list/revoke
    operations share. Holds no state of its own beyond the engine's parts."""

    __slots__ = ("_auditor", "_clock", "_config", "_decoder", "_min_epoch_ttl")

    def __init__(
        self,
        config: SessionConfig,
        clock: Clock,
        decoder: RecordDecoder,
        auditor: Auditor,
        *,
        min_epoch_ttl: float = 0.0,
    ) -> None:
        self._config = config
        self._clock = clock
        self._decoder = decoder
        self._auditor = auditor
        self._min_epoch_ttl = check_min_epoch_ttl(min_epoch_ttl)

    def decode_or_none(self, raw: bytes | None) -> SessionRecord | Tombstone | None:
        if raw is None:
            return None
        try:
            return self._decoder.decode(raw)
        except BadData:
            return None

    def audit_destroyed(self, client_ip: str | None, reason: str) -> None:
        self._auditor.emit(
            DESTROYED_EVENT,
            outcome=Outcome.SUCCESS,
            client_ip=client_ip,
            details={"reason": reason},
        )

    def longest_lifetime(self) -> float:
        """The absolute lifetime of the longest-lived kind of session, browser or persistent
        (the configuration lets either be the longer)."""
        config = self._config
        return max(config.absolute_lifetime, config.persistent_absolute_lifetime)

    def epoch_ttl(self) -> float:
        # Outlives every session made under the previous epoch, of either kind, by a wide
        # margin: a rotation restarts the absolute lifetime of a session loaded just before a
        # bump. An epoch record that expired first would bring its revoked sessions back.
        # Tokens read the same epoch: min_epoch_ttl keeps it while a token made before the
        # bump (a refresh family, an access token) could still be presented.
        return max(2 * self.longest_lifetime() + EXPIRY_SLACK, self._min_epoch_ttl)

    # -- flows ---------------------------------------------------------------------------------

    def index_update(self, user_id: str, change: IndexChange) -> Flow[None]:
        """Apply ``change`` to ``user_id``'s index. The sessions a change pushes out of the
        bounded index are destroyed *before* the index is stored, so no live session is ever
        missing from the list (or from a revocation that walks it)."""

        def step(_key: str, raw: bytes | None) -> Flow[Write[None]]:
            try:
                index = decode_index(raw)
            except BadData:
                index = SessionIndex()
            for handle in change(index) or ():
                if (yield Delete(record_key(handle))):
                    self.audit_destroyed(None, "registry_full")
            return Write(encode_index(index), None)

        # As long as the longest session can live: browser sessions may outlive "remember
        # me" ones (absolute_lifetime > persistent_absolute_lifetime), and the list must not.
        ttl = self.longest_lifetime() + EXPIRY_SLACK
        yield from update(index_key(user_id), step, ttl=ttl, what="a user's session index")

    def login_epoch(self, user_id: str, authenticated_at: float | None) -> Flow[int | None]:
        """The epoch a new login of ``user_id`` is made under: the user's current one, or
        ``None`` when the user's sessions were revoked after this login was authenticated (a
        password change while the old password was being checked: the login must not live)."""
        raw = yield Get(epoch_key(user_id))
        try:
            epoch = decode_epoch(raw)
        except BadData:
            return None
        if authenticated_at is not None and epoch.since > authenticated_at:
            return None
        return epoch.number

    def bump_epoch_flow(self, user_id: str, keep: str | None) -> Flow[int]:
        """Raise ``user_id``'s epoch, so every session of the user made under an earlier one
        is refused at its next load. ``keep`` (a handle of this user's) is re-stamped with
        the new epoch first, so the caller's own session never sees itself revoked, not even
        by a request of its own that loads in between."""
        now = self._clock.now()

        def step(_key: str, raw: bytes | None) -> Flow[Write[int]]:
            try:
                number = decode_epoch(raw).number
            except BadData:
                number = 0
            # Time-based and increasing: a lost or unreadable epoch record can only be
            # replaced by a higher number, never reopen older sessions.
            bumped = Epoch(max(number + 1, int(now * 1000)), now)
            if keep is not None:
                yield from self.stamp_flow(user_id, keep, bumped.number, now)
            return Write(encode_epoch(bumped), bumped.number)

        return (
            yield from update(
                epoch_key(user_id), step, ttl=self.epoch_ttl(), what="a user's session epoch"
            )
        )

    def stamp_flow(self, user_id: str, handle: str, epoch: int, now: float) -> Flow[None]:
        """Give the live record of ``handle`` (following a renewal tombstone) ``epoch``."""
        config = self._config

        def step(_key: str, raw: bytes | None) -> Write[None] | Done[None] | Follow:
            found = resolve(self.decode_or_none(raw), now)
            if isinstance(found, str):
                return Follow(found)
            if found is None or found.user_id != user_id or found.epoch >= epoch:
                return Done(None)
            stamped = dataclasses.replace(found, epoch=epoch)
            value = encode_record(stamped, max_bytes=config.max_bytes)
            return Write(value, None, record_ttl(stamped, now, config))

        yield from update(record_key(handle), step, what="a session's epoch stamp")

    def list_sessions_flow(
        self, user_id: str, current: str | None = None
    ) -> Flow[list[SessionInfo]]:
        raw = yield Get(index_key(user_id))
        try:
            index = decode_index(raw)
        except BadData:
            return []
        try:
            epoch: int | None = decode_epoch((yield Get(epoch_key(user_id)))).number
        except BadData:
            epoch = None  # unreadable: every load of this user's sessions refuses them
        now = self._clock.now()
        found: list[SessionInfo] = []
        gone: list[str] = []
        for handle, entry in index.entries.items():
            record = self.decode_or_none((yield Get(record_key(handle))))
            if (
                not isinstance(record, SessionRecord)
                or record.user_id != user_id
                or epoch is None
                or record.epoch < epoch
                or liveness(record, now, self._config) is not Liveness.LIVE
            ):
                gone.append(handle)
                continue
            found.append(
                SessionInfo(
                    handle=handle,
                    created_at=float(entry.get("created", record.created_at)),
                    last_seen=record.last_seen,
                    ip=record.ip,
                    user_agent=record.user_agent,
                    current=handle == current,
                )
            )
        if gone:
            yield from self.index_update(user_id, remove_entries(*gone))
        found.sort(key=lambda info: info.created_at)
        return found

    def revoke_flow(
        self,
        user_id: str,
        handles: Callable[[SessionIndex], list[str]],
        *,
        everywhere: bool = False,
        keep: str | None = None,
    ) -> Flow[int]:
        """Delete the chosen listed sessions of ``user_id``. ``everywhere`` first raises the
        user's epoch (keeping ``keep``), which ends every other session of the user, listed
        or not: the registry is an aid for listing, never what a revocation depends on."""
        epoch = (yield from self.bump_epoch_flow(user_id, keep)) if everywhere else None
        raw = yield Get(index_key(user_id))
        try:
            index = decode_index(raw)
        except BadData:
            index = SessionIndex()
        chosen = handles(index)
        count = 0
        for handle in list(chosen):
            if epoch is None:
                ended = yield Delete(record_key(handle))
            else:
                ended = yield from self.end_before_flow(user_id, handle, epoch)
                if ended is None:
                    chosen.remove(handle)  # live under the new epoch: stays listed
            if ended:
                count += 1
        if chosen:
            yield from self.index_update(user_id, remove_entries(*chosen))
        return count

    def end_before_flow(self, user_id: str, handle: str, epoch: int) -> Flow[bool | None]:
        """Delete the record of ``handle`` unless it is ``user_id``'s under ``epoch`` or later.

        After a revocation raised the epoch, a listed session that carries the new epoch was
        made or re-stamped while the revocation ran: the caller's own session renewed by a
        parallel request, or a login with the new password. It must live. The check and the
        deletion are one compare-and-set (onto a dead tombstone, then deleted), so a re-stamp
        landing in between is never deleted. Says whether a session record was ended
        (``None``: the session lives under the new epoch and stays listed)."""
        key = record_key(handle)
        dead = encode_tombstone(Tombstone(successor=None, until=self._clock.now()))

        def step(_key: str, raw: bytes | None) -> Write[_Revoked] | Done[_Revoked]:
            if raw is None:
                return Done("gone")
            found = self.decode_or_none(raw)
            if (
                isinstance(found, SessionRecord)
                and found.user_id == user_id
                and found.epoch >= epoch
            ):
                return Done("lives")
            ended: _Revoked = "ended" if isinstance(found, SessionRecord) else "cleared"
            return Write(dead, ended, self._config.renew_grace)

        outcome = yield from update(key, step, what="a session being revoked")
        if outcome == "lives":
            return None
        if outcome != "gone":
            yield Delete(key)
        return outcome == "ended"


class RegistryOperations:
    """The engine's list and revoke operations, async and sync, over its
    :class:`SessionRegistry` (a mixin of :class:`~bastion.engine.sessions.SessionEngine`)."""

    __slots__ = ()

    if TYPE_CHECKING:
        registry: SessionRegistry

        async def run(self, flow: Flow[Any]) -> Any: ...

        def run_sync(self, flow: Flow[Any]) -> Any: ...

    async def list_sessions(
        self, user_id: str | int, *, current: str | None = None
    ) -> list[SessionInfo]:
        """``user_id``'s live sessions, oldest first; ``current`` (a handle) is flagged."""
        found: list[SessionInfo] = await self.run(
            self.registry.list_sessions_flow(str(user_id), current)
        )
        return found

    def list_sessions_sync(
        self, user_id: str | int, *, current: str | None = None
    ) -> list[SessionInfo]:
        found: list[SessionInfo] = self.run_sync(
            self.registry.list_sessions_flow(str(user_id), current)
        )
        return found

    async def revoke(self, user_id: str | int, handle: str) -> bool:
        """Revoke one of ``user_id``'s sessions by handle. Says whether it was live."""
        count: int = await self.run(self.registry.revoke_flow(str(user_id), only(handle)))
        return count == 1

    async def revoke_others(self, user_id: str | int, keep_handle: str | None) -> int:
        """Revoke every session of ``user_id`` except ``keep_handle`` ("log out other devices").

        Every other session ends, listed or not (the user's epoch is raised); the count is of
        the listed sessions deleted."""
        count: int = await self.run(self._revoke_others_flow(str(user_id), keep_handle))
        return count

    async def revoke_all(self, user_id: str | int) -> int:
        """Revoke every session of ``user_id`` (on a password change, for instance).

        Every session ends, listed or not (the user's epoch is raised); the count is of the
        listed sessions deleted."""
        count: int = await self.run(self._revoke_others_flow(str(user_id), None))
        return count

    def _revoke_others_flow(self, user_id: str, keep: str | None) -> Flow[int]:
        return self.registry.revoke_flow(user_id, all_but(keep), everywhere=True, keep=keep)

    def revoke_sync(self, user_id: str | int, handle: str) -> bool:
        count: int = self.run_sync(self.registry.revoke_flow(str(user_id), only(handle)))
        return count == 1

    def revoke_others_sync(self, user_id: str | int, keep_handle: str | None) -> int:
        count: int = self.run_sync(self._revoke_others_flow(str(user_id), keep_handle))
        return count

    def revoke_all_sync(self, user_id: str | int) -> int:
        count: int = self.run_sync(self._revoke_others_flow(str(user_id), None))
        return count

    # The registry's flows, under the names they had on the engine.

    def list_sessions_flow(
        self, user_id: str, current: str | None = None
    ) -> Flow[list[SessionInfo]]:
        return self.registry.list_sessions_flow(str(user_id), current)

    def revoke_flow(
        self,
        user_id: str,
        handles: Callable[[SessionIndex], list[str]],
        *,
        everywhere: bool = False,
        keep: str | None = None,
    ) -> Flow[int]:
        return self.registry.revoke_flow(str(user_id), handles, everywhere=everywhere, keep=keep)
