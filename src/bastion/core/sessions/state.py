"""One request's session state and the pure decisions of a save.

:class:`SessionState` is everything a request knows about its session: what it loaded (the
record, its bytes, the data part of those bytes), what the handler changed and which
lifecycle call is pending (login, regenerate, logout). The engine drives the store; every
decision that needs no store lives here, as plain functions over plain values, so property
tests can drive them:

* :func:`plan_save`: nothing to write, the common write (a compare-and-set of the loaded
  record with only its data replaced), or the general save;
* :func:`diff` and :func:`merge`: this request's per-key changes, and those changes applied
  onto what another request stored meanwhile (both changes to different keys survive);
* :func:`resolve`: what a save does with what it finds under its key (a destroyed session
  stays destroyed; a renewal within its grace window is followed);
* :func:`renewal_due`, :func:`rotated_record` and :func:`tombstone_for`: the rotation rules (the
  old ID never comes back: a renewal's tombstone points at the new record, a privilege
  change's is dead);
* deadlines: :func:`liveness`, :func:`needs_touch`, :func:`needs_renewal`, :func:`record_ttl`,
  :func:`cookie_max_age`.
"""

from __future__ import annotations

import enum
import json
import math
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

from bastion.core.cookies import MAX_AGE_LIMIT
from bastion.core.sessions.ids import (
    handle_of,
    new_csrf_secret,
    new_session_id,
    presession_csrf_secret,
    record_key,
    session_handle,
)
from bastion.core.sessions.record import (
    SessionRecord,
    Tombstone,
    data_slice,
    encode_data,
    replace_data,
    stored_data,
)

if TYPE_CHECKING:
    from bastion.core.sessions.config import SessionConfig

__all__ = [
    "EXPIRY_SLACK",
    "GENERAL",
    "LIVE",
    "UNCHANGED",
    "DataWrite",
    "Liveness",
    "Plan",
    "Rotation",
    "SessionState",
    "build",
    "cookie_max_age",
    "diff",
    "liveness",
    "merge",
    "needs_renewal",
    "needs_touch",
    "plan_save",
    "record_ttl",
    "renewal_due",
    "resolve",
    "rotated_record",
    "tombstone_for",
    "worth_storing",
]

EXPIRY_SLACK: Final = 300.0
"""Seconds a record outlives its deadline in the store, so that a late request is told (and
audited) ``session_expired`` rather than ``unknown``. Deadlines are checked on every load."""

_MISSING: Final = object()

Rotation: TypeAlias = Literal["login", "regenerate", "renew"]
"""Why the ID moves: a login, a privilege change of the same login, or periodic renewal."""


class SessionState:
    """What one request knows about its session; mutated only by its own methods and the
    engine's load and save steps, never by I/O.

    ``raw`` is the record exactly as loaded and ``pristine`` its data part (the comparison
    base of every change); ``rotate`` is the pending rotation, ``logout`` a pending logout
    whose stored record (``ended``: key and user) is still to delete. ``presession`` is the
    random value of a visitor's pre-session cookie (see
    :data:`~bastion.core.sessions.PRESESSION_PREFIX`).
    """

    __slots__ = (
        "accessed",
        "authenticated_at",
        "cookie_value",
        "csrf_secret",
        "data",
        "default_persistent",
        "ended",
        "follower",
        "id",
        "key",
        "loaded",
        "logout",
        "meta_dirty",
        "persistent",
        "presession",
        "presession_new",
        "pristine",
        "raw",
        "record",
        "rejected",
        "rotate",
        "user_id",
    )

    def __init__(self, cookie_value: str | None, persistent: bool = False) -> None:
        self.cookie_value = cookie_value
        self.default_persistent = persistent
        self.accessed = False
        self.loaded = False
        self.id: str | None = None
        self.key: str | None = None
        self.raw: bytes | None = None
        self.pristine: bytes | None = None
        self.record: SessionRecord | None = None
        self.data: dict[str, Any] = {}
        self.follower = False
        self.rejected: str | None = None
        self.rotate: Rotation | None = None
        self.logout = False
        self.ended: tuple[str, str | None] | None = None
        self.meta_dirty = False
        self.presession: str | None = None
        self.presession_new = False
        self.user_id: str | None = None
        self.authenticated_at: float | None = None
        self.csrf_secret: str | None = None
        self.persistent = persistent

    # -- loading -------------------------------------------------------------------------------

    def start_fresh(self, rejected: str | None) -> None:
        """A new, empty, unstored session (``rejected``: why the cookie's was refused)."""
        self.loaded = True
        self.rejected = rejected
        self.id = None
        self.key = None
        self.raw = None
        self.pristine = None
        self.record = None
        self.data = {}
        self.follower = False
        self.user_id = None
        self.authenticated_at = None
        self.csrf_secret = None
        self.persistent = self.default_persistent

    def adopt(
        self, session_id: str, key: str, raw: bytes, record: SessionRecord, *, follower: bool
    ) -> None:
        """Take the stored ``record`` (``raw`` as read under ``key``) as this request's."""
        self.loaded = True
        self.id = session_id
        self.key = key
        self.raw = raw
        self.pristine = data_slice(raw)
        self.record = record
        self.data = record.data
        self.follower = follower
        self.user_id = record.user_id
        self.authenticated_at = record.authenticated_at
        self.csrf_secret = record.csrf_secret
        self.persistent = record.persistent

    def adopt_saved(self, session_id: str, key: str, value: bytes, record: SessionRecord) -> None:
        """After a create or a rotation wrote ``value``: it is what this request holds now."""
        self.adopt(session_id, key, value, record, follower=False)
        self.rotate = None
        self.meta_dirty = False
        self.data = stored_data(value)

    # -- facts ---------------------------------------------------------------------------------

    @property
    def handle(self) -> str | None:
        """The handle of the record this request uses (the renewed one within a grace window)."""
        if self.key is not None and self.rotate is None:
            return handle_of(self.key)
        return None if self.id is None else session_handle(self.id)

    def issue_csrf_secret(self) -> str:
        """The CSRF secret, issuing one when there is none: a visitor without a stored session
        gets a pre-session value instead of a store write."""
        if self.csrf_secret is None:
            if self.key is None:
                if self.presession is None:
                    self.presession = new_session_id()
                    self.presession_new = True
                self.csrf_secret = presession_csrf_secret(self.presession)
            else:  # pragma: no cover - a stored record always has its secret
                self.csrf_secret = new_csrf_secret()
                self.meta_dirty = True
        return self.csrf_secret

    def verification_secret(self) -> str | None:
        """The secret a submitted CSRF token is checked against, without issuing one."""
        if self.csrf_secret is not None:
            return self.csrf_secret
        if self.key is None and self.presession is not None:
            return presession_csrf_secret(self.presession)
        return None

    # -- lifecycle -----------------------------------------------------------------------------

    def login(self, user_id: str, now: float, *, remember: bool | None) -> None:
        self.user_id = user_id
        self.authenticated_at = now
        self.csrf_secret = new_csrf_secret()
        if remember is not None:
            self.persistent = bool(remember)
        self.meta_dirty = True
        self.rotate = "login"
        self.id = new_session_id()

    def end_login(self) -> None:
        if self.user_id is None:
            return
        self.user_id = None
        self.authenticated_at = None
        self.csrf_secret = new_csrf_secret()
        self.meta_dirty = True
        self.rotate = "regenerate"
        self.id = new_session_id()

    def regenerate(self) -> None:
        self.rotate = self.rotate or "regenerate"
        self.id = new_session_id()

    def end(self) -> None:
        """Logout: the stored record (if any) is to be deleted; the session starts afresh."""
        if self.key is not None and self.ended is None:
            self.ended = (self.key, None if self.record is None else self.record.user_id)
        self.start_fresh(self.rejected)
        self.logout = True
        self.rotate = None
        self.meta_dirty = False

    def discard(self) -> None:
        """Nothing of this request is written (a 5xx with nothing that must happen anyway)."""
        self.loaded = False
        self.logout = False
        self.ended = None
        self.rotate = None

    def keep_only_lifecycle(self) -> bool:
        """After a 5xx: drop this request's data changes, keep what must happen anyway (a
        logout, the old ID's death in a rotation). Says whether anything is left to write.

        A ``login()`` is not committed on a 5xx (the view failed, so whether it meant to grant
        the login is unknown): the loaded session moves to a new ID as ``regenerate()`` would,
        unbound as before. ``regenerate()`` and ``end_login()`` are committed with the loaded
        data."""
        if self.logout:
            if self.ended is None:
                return False
            self.start_fresh(self.rejected)
            self.meta_dirty = False
            return True
        loaded, pristine = self.record, self.pristine
        if self.rotate is None or loaded is None or self.key is None or pristine is None:
            return False
        self.data = json.loads(pristine)
        if self.rotate == "login" or self.user_id == loaded.user_id:
            self.user_id = loaded.user_id
            self.authenticated_at = loaded.authenticated_at
            self.csrf_secret = loaded.csrf_secret
            self.persistent = loaded.persistent
            self.meta_dirty = False
        self.rotate = "regenerate"
        return True


# -- deadlines -----------------------------------------------------------------------------


class Liveness(enum.StrEnum):
    LIVE = "live"
    IDLE_EXPIRED = "idle_expired"
    ABSOLUTE_EXPIRED = "absolute_expired"


LIVE: Final = Liveness.LIVE
"""The member as a module constant, for the load path (see :data:`UNCHANGED`)."""
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


# -- changes ---------------------------------------------------------------------------------


def diff(state: SessionState) -> tuple[dict[str, Any], set[str]]:
    """This request's changes: keys set or changed (with their values), keys removed."""
    data = state.data
    raw = state.pristine
    if raw is None:
        return dict(data), set()
    pristine = json.loads(raw)
    changed = {k: v for k, v in data.items() if pristine.get(k, _MISSING) != v}
    removed = {k for k in pristine if k not in data}
    return changed, removed


def merge(state: SessionState, onto: dict[str, Any]) -> dict[str, Any]:
    """``onto`` (the data stored now) with this request's per-key changes applied: a key this
    request did not touch keeps the value another request stored."""
    changed, removed = diff(state)
    data = dict(onto)
    data.update(changed)
    for name in removed:
        data.pop(name, None)
    return data


def worth_storing(state: SessionState) -> bool:
    """Whether a session with no stored record needs one: it holds data, a login or a rotation.

    A setting alone (``persistent``, ``modified = True``: Flask apps set both on every request,
    a bot's included) is not enough, as Flask sets no cookie for an empty session: storing it
    would let anonymous traffic write a record per request. The setting applies when the first
    value is written."""
    return bool(state.data) or state.rotate is not None or state.user_id is not None


def build(
    state: SessionState,
    base: SessionRecord | None,
    data: dict[str, Any],
    now: float,
    *,
    client_ip: str | None,
    user_agent: str | None,
) -> SessionRecord:
    """A record with ``data`` and this session's metadata, on top of ``base`` (the record
    stored now; ``None`` creates one)."""
    if base is None:
        return SessionRecord(
            data=data,
            created_at=now,
            issued_at=now,
            last_seen=now,
            # A visitor's pre-session secret carries over: the tokens in its pages stay good.
            csrf_secret=state.verification_secret() or new_csrf_secret(),
            user_id=state.user_id,
            authenticated_at=state.authenticated_at,
            persistent=state.persistent,
            ip=client_ip,
            user_agent=user_agent,
        )
    if state.meta_dirty:
        return SessionRecord(
            data=data,
            created_at=base.created_at,
            issued_at=base.issued_at,
            last_seen=max(now, base.last_seen),
            csrf_secret=state.csrf_secret or base.csrf_secret,
            user_id=state.user_id,
            authenticated_at=state.authenticated_at,
            persistent=state.persistent,
            ip=base.ip,
            user_agent=base.user_agent,
            epoch=base.epoch,
        )
    return SessionRecord(
        data=data,
        created_at=base.created_at,
        issued_at=base.issued_at,
        last_seen=max(now, base.last_seen),
        csrf_secret=base.csrf_secret,
        user_id=base.user_id,
        authenticated_at=base.authenticated_at,
        persistent=base.persistent,
        ip=base.ip,
        user_agent=base.user_agent,
        epoch=base.epoch,
    )


# -- the save plan ---------------------------------------------------------------------------


class Plan(enum.Enum):
    """The outcomes of :func:`plan_save` that are not a :data:`DataWrite`."""

    UNCHANGED = "unchanged"
    """Nothing to write: the data is as loaded and the idle clock need not move."""
    GENERAL = "general"
    """Create, rotation, renewal, logout, metadata change or idle refresh: the engine's full
    save flow decides."""


# The members as module constants: on the per-request path an enum member read through its
# class costs several times a global look-up (CPython 3.11). LIVE above likewise.
UNCHANGED: Final = Plan.UNCHANGED
GENERAL: Final = Plan.GENERAL

DataWrite: TypeAlias = tuple[str, bytes, bytes, float]
"""The common write: ``(key, expected, value, ttl)``, a compare-and-set of the loaded record
with only its data replaced."""


def plan_save(state: SessionState, now: float, config: SessionConfig) -> DataWrite | Plan:
    """The common cases of a save, decided without I/O.

    A stored session whose only change is its data (nested changes included: the encodings
    are compared) is one compare-and-set whose metadata bytes are reused as stored; an
    unchanged one writes nothing unless the idle clock must move or the ID is due for renewal.
    """
    key, loaded, raw, pristine = state.key, state.record, state.raw, state.pristine
    if (
        key is None
        or loaded is None
        or raw is None
        or pristine is None
        or state.logout
        or state.rotate is not None
        or state.meta_dirty
    ):
        return GENERAL
    if now - loaded.last_seen >= config.touch_interval:  # needs_touch: the idle refresh
        return GENERAL
    if not state.follower and needs_renewal(loaded, now, config):
        return GENERAL
    data_json = encode_data(state.data)
    if data_json == pristine:
        return UNCHANGED
    value = replace_data(raw, pristine, data_json)
    if len(value) > config.max_bytes:
        return GENERAL  # the general path raises the error that names the largest key
    return key, raw, value, record_ttl(loaded, now, config)


def resolve(found: SessionRecord | Tombstone | None, now: float) -> SessionRecord | str | None:
    """What a save does with ``found``, read under its key after a lost race: merge onto the
    record, follow a renewal still within its grace window (the successor's store key), or
    nothing (``None``): the session was destroyed, expired or moved by a privilege change,
    and a save never brings it back."""
    if isinstance(found, Tombstone):
        if found.successor is None or now >= found.until:
            return None
        return record_key(found.successor)
    return found


# -- rotation --------------------------------------------------------------------------------


def renewal_due(state: SessionState, now: float, config: SessionConfig) -> bool:
    """Whether this save must renew the ID (no other rotation pending; a request that follows
    a renewal's tombstone never renews again)."""
    loaded = state.record
    return (
        state.rotate is None
        and not state.follower
        and loaded is not None
        and needs_renewal(loaded, now, config)
    )


def rotated_record(
    state: SessionState,
    kind: Rotation,
    now: float,
    *,
    client_ip: str | None,
    user_agent: str | None,
) -> SessionRecord:
    """The record stored under the new ID of a rotation of the loaded session."""
    loaded = state.record
    if loaded is None:
        raise ValueError("a rotation needs the loaded record")
    record = build(state, loaded, dict(state.data), now, client_ip=client_ip, user_agent=user_agent)
    record.issued_at = now
    record.last_seen = now
    if kind != "renew":
        if kind == "login" or record.user_id != loaded.user_id:
            # A new login (or its end) starts a new absolute lifetime; regenerate() of the
            # same login moves the ID only, or calling it would keep a login forever.
            record.created_at = now
        record.ip = client_ip or record.ip
        record.user_agent = user_agent or record.user_agent
    return record


def tombstone_for(kind: Rotation, new_handle: str, now: float, config: SessionConfig) -> Tombstone:
    """What replaces the old ID: a renewal points at the new record for ``renew_grace``
    seconds (parallel requests with the old cookie are not logged out); a login or
    regenerate leaves a dead tombstone (a fixated pre-login ID never reaches the session)."""
    successor = new_handle if kind == "renew" else None
    return Tombstone(successor=successor, until=now + config.renew_grace)
