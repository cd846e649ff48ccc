"""The pure decisions of a save: what changed, what to write, and how the ID rotates.

The engine drives the store; these functions decide, over plain values, so property tests can
drive them:

* :func:`plan_save`: nothing to write, the common write (a compare-and-set of the loaded
  record with only its data replaced), or the general save;
* :func:`diff` and :func:`merge`: this request's per-key changes, and those changes applied
  onto what another request stored meanwhile (both changes to different keys survive);
* :func:`resolve`: what a save does with what it finds under its key (a destroyed session
  stays destroyed; a renewal within its grace window is followed);
* :func:`renewal_due`, :func:`rotated_record` and :func:`tombstone_for`: the rotation rules (the
  old ID never comes back: a renewal's tombstone points at the new record, a privilege
  change's is dead).
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from bastion.core.sessions.deadlines import needs_renewal, record_ttl
from bastion.core.sessions.ids import new_csrf_secret, record_key
from bastion.core.sessions.record import SessionRecord, Tombstone, encode_data, replace_data

if TYPE_CHECKING:
    from bastion.core.sessions.config import SessionConfig
    from bastion.core.sessions.state import Rotation, SessionState

__all__ = [
    "GENERAL",
    "UNCHANGED",
    "DataWrite",
    "Plan",
    "build",
    "diff",
    "merge",
    "plan_save",
    "renewal_due",
    "resolve",
    "rotated_record",
    "tombstone_for",
    "worth_storing",
]

_MISSING: Final = object()


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
