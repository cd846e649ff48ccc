"""The save of one request's session, as store flows over the core's save plan.

The decisions are :mod:`bastion.core.sessions.state`'s (:func:`plan_save`, :func:`merge`,
:func:`resolve`, the rotation rules); this module performs them against the store and says
what the response carries (:class:`SaveResult`).

Concurrency. A save never overwrites blindly: it is ``compare_and_set(expected=<the bytes this
request loaded>)``. When another request changed the record meanwhile, the save re-reads it and
applies only this request's per-key changes onto the current record, then retries (bounded, by
:func:`~bastion.engine.flows.update`). So two requests that change different keys both keep
their change. A save never creates a session it loaded: if the record is gone (logout,
revocation, expiry) the changes are dropped and the cookie cleared, so a slow request cannot
resurrect a destroyed session.

Rotation (``login()``, ``regenerate()``, periodic renewal) creates the new record with
create-if-absent, then replaces the old record by a tombstone with a CAS on the loaded bytes. A
renewal's tombstone names the new handle for ``renew_grace`` seconds, so parallel requests that
still send the old cookie read and write the new record instead of being logged out; a
privilege-change rotation leaves a dead tombstone (a fixated ID never reaches the logged-in
session). Of two parallel renewals exactly one wins the tombstone CAS; the loser drops its new
record and merges its changes into the winner's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bastion.core.audit import EventName, Outcome
from bastion.core.sessions.ids import (
    PRESESSION_PREFIX,
    handle_of,
    new_session_id,
    record_key,
    session_handle,
)
from bastion.core.sessions.record import (
    SessionRecord,
    Tombstone,
    encode_data,
    encode_record,
    encode_tombstone,
    replace_data,
)
from bastion.core.sessions.state import (
    GENERAL,
    UNCHANGED,
    Rotation,
    SessionState,
    build,
    cookie_max_age,
    merge,
    needs_touch,
    plan_save,
    record_ttl,
    renewal_due,
    resolve,
    rotated_record,
    tombstone_for,
    worth_storing,
)
from bastion.engine.flows import (
    UNREAD,
    CompareAndSet,
    Delete,
    Done,
    Flow,
    Follow,
    Get,
    Write,
    update,
)
from bastion.engine.sessions.registry import add_entry, remove_entries, replace_entry
from bastion.errors import StoreError

if TYPE_CHECKING:
    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.sessions.config import SessionConfig
    from bastion.core.signing import Signer
    from bastion.engine.sessions.registry import SessionRegistry
    from bastion.engine.sessions.session import Session

__all__ = ["SaveResult", "Saver"]


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What the adapter adds to the response: a ``Set-Cookie`` value and headers."""

    set_cookie: str | None = dataclasses.field(default=None, repr=False)  # carries the ID
    clear_site_data: bool = False
    vary: bool = False


NOTHING: Final = SaveResult()
VARY_ONLY: Final = SaveResult(vary=True)

_Saved = tuple[str, SessionRecord]
"""Where a save landed: the store key and the record now stored there."""


class Saver:
    """The save flows of one engine (its configuration, clock, registry and cookie signer)."""

    __slots__ = ("_auditor", "_clock", "_config", "_registry", "_signer")

    def __init__(
        self,
        config: SessionConfig,
        clock: Clock,
        registry: SessionRegistry,
        auditor: Auditor,
        signer: Signer | None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._registry = registry
        self._auditor = auditor
        self._signer = signer

    # -- what the response carries ---------------------------------------------------------

    def cookie_text(self, session_id: str) -> str:
        return session_id if self._signer is None else self._signer.sign(session_id)

    def set_cookie(self, session_id: str, record: SessionRecord, now: float) -> SaveResult:
        cookie = self._config.cookie
        max_age = cookie_max_age(record, now, self._config)
        text = self.cookie_text(session_id)
        if max_age is None:
            line = cookie.with_value(text).serialize()
        else:
            line = dataclasses.replace(cookie, value=text, max_age=max_age).serialize()
        return SaveResult(set_cookie=line, vary=True)

    def presession_cookie(self, st: SessionState) -> SaveResult:
        """The cookie of a visitor given a CSRF secret but no stored session (no store I/O)."""
        value = st.presession
        if value is None:  # pragma: no cover - only called once a value was issued
            return VARY_ONLY
        st.presession_new = False
        text = self.cookie_text(PRESESSION_PREFIX + value)
        return SaveResult(set_cookie=self._config.cookie.with_value(text).serialize(), vary=True)

    def clear_cookie(self, *, clear_site_data: bool = False) -> SaveResult:
        return SaveResult(
            set_cookie=self._config.cookie.expired().serialize(),
            clear_site_data=clear_site_data,
            vary=True,
        )

    def finish(
        self, st: SessionState, outcome: tuple[str, SessionRecord | None] | None, now: float
    ) -> SaveResult:
        """What the response carries after a save that kept (or lost) the session."""
        if outcome is None:
            return self.clear_cookie() if not st.follower else VARY_ONLY
        record = outcome[1]
        if st.follower or st.id is None or record is None:
            return VARY_ONLY
        if record.persistent or st.meta_dirty:
            return self.set_cookie(st.id, record, now)
        return VARY_ONLY

    # -- the flows -----------------------------------------------------------------------------

    def retry_save(self, st: SessionState, now: float) -> Flow[_Saved | None]:
        """After the common write lost its compare-and-set: re-read and merge."""
        if st.key is None or st.record is None:  # pragma: no cover - a planned save has both
            raise StoreError("session has no stored record to merge onto")
        return self.merge_save(st, st.key, None, None, None, now)

    def save_flow(self, session: Session) -> Flow[SaveResult]:  # noqa: PLR0911, PLR0912 (one decision table)
        now = self._clock.now()
        st = session._state
        if st.logout:
            ended = st.ended
            if ended is not None:
                ended_key, ended_user = ended
                yield Delete(ended_key)
                if ended_user is not None:
                    yield from self._registry.index_update(
                        ended_user, remove_entries(handle_of(ended_key))
                    )
                self._registry.audit_destroyed(session.client_ip, "logout")
            st.logout, st.ended = False, None
            if worth_storing(st):
                # Written after the logout: a new session, under a new ID, replaces the cookie.
                return (yield from self.create(session, dict(st.data), now))
            if st.presession_new:
                return self.presession_cookie(st)  # a token for the page after the logout
            if ended is None and st.cookie_value is None:
                return VARY_ONLY
            return self.clear_cookie(clear_site_data=self._config.clear_site_data)
        if st.key is None:
            if not worth_storing(st):
                if st.presession_new:
                    return self.presession_cookie(st)
                return self.clear_cookie() if st.rejected else VARY_ONLY
            return (yield from self.create(session, dict(st.data), now))
        loaded = st.record
        if loaded is None:  # pragma: no cover - a stored session always has its record
            raise StoreError("session has a key but no record")
        if renewal_due(st, now, self._config):
            st.rotate = "renew"
            st.id = new_session_id()
        if st.rotate is not None:
            return (yield from self.rotate_flow(session, st.rotate, now))
        plan = plan_save(st, now, self._config)
        if plan is UNCHANGED:
            return VARY_ONLY
        outcome: _Saved | None
        if plan is GENERAL:
            data_json = encode_data(st.data)
            if (
                data_json == st.pristine
                and not st.meta_dirty
                and not needs_touch(loaded, now, self._config)
            ):
                return VARY_ONLY
            outcome = yield from self.merge_save(st, st.key, st.raw, loaded, data_json, now)
        elif (yield CompareAndSet(*plan)):
            outcome = st.key, loaded
        else:
            outcome = yield from self.retry_save(st, now)
        return self.finish(st, outcome, now)

    def create(self, session: Session, data: dict[str, Any], now: float) -> Flow[SaveResult]:
        st = session._state
        record = build(
            st, None, data, now, client_ip=session.client_ip, user_agent=session.user_agent
        )
        if record.user_id is not None:
            epoch = yield from self._registry.login_epoch(record.user_id, record.authenticated_at)
            if epoch is None:
                self._registry.audit_destroyed(session.client_ip, "revoked")
                st.start_fresh("revoked")
                return self.clear_cookie()
            record.epoch = epoch
        value = encode_record(record, max_bytes=self._config.max_bytes)
        session_id = st.id or new_session_id()
        for _ in range(3):
            key = record_key(session_handle(session_id))
            created = yield CompareAndSet(key, None, value, record_ttl(record, now, self._config))
            if created:
                break
            session_id = new_session_id()  # a collision of 256-bit IDs: never in practice
        else:
            raise StoreError("could not create a session: three random IDs were all taken")
        if record.user_id is not None:
            yield from self._registry.index_update(
                record.user_id, add_entry(session_handle(session_id), record, now)
            )
        st.adopt_saved(session_id, key, value, record)
        self._auditor.emit(
            EventName.SESSION_CREATED,
            outcome=Outcome.SUCCESS,
            user=record.user_id,
            session=session_id,
            client_ip=session.client_ip,
        )
        return self.set_cookie(session_id, record, now)

    def merge_save(  # noqa: PLR0917 (the state of one merge)
        self,
        st: SessionState,
        key: str,
        expected: bytes | None,
        current: SessionRecord | None,
        data_json: bytes | None,
        now: float,
    ) -> Flow[_Saved | None]:
        """CAS this request's changes onto the record under ``key``; ``None`` if it is gone.

        ``expected`` and ``current`` are the bytes and record the caller holds for ``key``
        (``None``: read them first); ``data_json`` is the encoded data when ``current`` is the
        record this request loaded (no merge needed), ``None`` to merge on every attempt.
        """
        config = self._config
        given, pending, followed = current, data_json, False

        def step(key: str, raw: bytes | None) -> Write[_Saved] | Done[None] | Follow:
            nonlocal given, pending, followed
            found: SessionRecord | str | None
            if given is not None:  # the first attempt, on what the caller holds
                found, given = given, None
            else:
                found = resolve(self._registry.decode_or_none(raw), now)
            if isinstance(found, str):
                if followed:
                    return Done(None)  # one hop per read: a renewal of the renewal is gone
                followed = True
                st.follower = True
                return Follow(found)
            followed = False
            if found is None:
                return Done(None)
            data_json, pending = pending, None
            if data_json is None:
                record = build(
                    st, found, merge(st, found.data), now, client_ip=None, user_agent=None
                )
                value = encode_record(record, max_bytes=config.max_bytes)
            elif (
                not st.meta_dirty
                and st.raw is not None
                and st.pristine is not None
                and not needs_touch(found, now, config)
            ):
                # Only the data changed and the idle clock need not move: the stored metadata
                # is reused byte for byte and only the data part is replaced.
                record = found
                value = replace_data(st.raw, st.pristine, data_json)
                if len(value) > config.max_bytes:
                    value = encode_record(record, max_bytes=config.max_bytes)
            else:
                record = build(st, found, st.data, now, client_ip=None, user_agent=None)
                value = encode_record(record, max_bytes=config.max_bytes, data_json=data_json)
            return Write(value, (key, record), record_ttl(record, now, config))

        first = expected if current is not None else UNREAD
        return (yield from update(key, step, current=first, what="a session"))

    def rotate_flow(self, session: Session, kind: Rotation, now: float) -> Flow[SaveResult]:
        st = session._state
        config, registry = self._config, self._registry
        old_key, loaded, new_id = st.key, st.record, st.id
        if old_key is None or loaded is None or new_id is None:
            raise StoreError("rotation needs a stored session")
        new_handle = session_handle(new_id)
        new_key = record_key(new_handle)
        old_handle = handle_of(old_key)
        record = rotated_record(
            st, kind, now, client_ip=session.client_ip, user_agent=session.user_agent
        )
        if kind == "login" and record.user_id is not None:
            epoch = yield from registry.login_epoch(record.user_id, record.authenticated_at)
            if epoch is None:
                # Revoked after this login was authenticated: the pre-login session ends too.
                yield Delete(old_key)
                if loaded.user_id is not None:
                    yield from registry.index_update(loaded.user_id, remove_entries(old_handle))
                registry.audit_destroyed(session.client_ip, "revoked")
                return self.clear_cookie()
            record.epoch = epoch
        data_json = encode_data(st.data)
        value = encode_record(record, max_bytes=config.max_bytes, data_json=data_json)
        if not (yield CompareAndSet(new_key, None, value, record_ttl(record, now, config))):
            raise StoreError("could not create the rotated session: its new ID is taken")
        # Listed before the old ID is tombstoned, so a revocation that reads the registry in
        # between finds the new session (the epoch check covers the rest of the window).
        if record.user_id is not None:
            yield from registry.index_update(record.user_id, add_entry(new_handle, record, now))
        tomb = encode_tombstone(tombstone_for(kind, new_handle, now, config))
        first = True

        def step(_key: str, raw: bytes | None) -> Flow[Write[str] | Done[Tombstone | None]]:
            nonlocal first, value, record
            if first:  # the loaded bytes: nobody has written the old record since
                first = False
                return Write(tomb, "moved")
            found = registry.decode_or_none(raw)
            if not isinstance(found, SessionRecord):
                # Destroyed meanwhile, or another request rotated first: ours must not live.
                return Done(found)
            updated = dataclasses.replace(record, data=merge(st, found.data))
            if kind != "login":
                # The same login, moved: it keeps the epoch the stored record has now (a
                # "log out other devices" may have re-stamped it meanwhile).
                updated.epoch = found.epoch
            new_value = encode_record(updated, max_bytes=config.max_bytes)
            ttl = record_ttl(updated, now, config)
            if not (yield CompareAndSet(new_key, value, new_value, ttl)):
                raise StoreError("the rotated session changed during its own rotation")
            value, record = new_value, updated
            return Write(tomb, "moved")

        lost = yield from update(
            old_key, step, ttl=config.renew_grace, current=st.raw, what="a rotating session"
        )
        if not isinstance(lost, str):
            return (yield from self._lost_rotation(session, kind, new_key, record, lost, now))
        if loaded.user_id is not None:
            if loaded.user_id == record.user_id:
                change = replace_entry(old_handle, new_handle, record, now)
            else:
                change = remove_entries(old_handle)
            yield from registry.index_update(loaded.user_id, change)
        st.adopt_saved(new_id, new_key, value, record)
        self._auditor.emit(
            EventName.SESSION_RENEWED,
            outcome=Outcome.SUCCESS,
            user=record.user_id,
            session=new_id,
            client_ip=session.client_ip,
            details={"reason": kind},
        )
        return self.set_cookie(new_id, record, now)

    def _lost_rotation(  # noqa: PLR0917 (the state of one rotation)
        self,
        session: Session,
        kind: Rotation,
        new_key: str,
        record: SessionRecord,
        found: Tombstone | None,
        now: float,
    ) -> Flow[SaveResult]:
        """The old record was destroyed, or another request rotated it first (``found`` is
        what is there now): the new record must not live. A renewal that lost to another
        renewal merges into the winner's."""
        st = session._state
        registry = self._registry
        yield Delete(new_key)
        if record.user_id is not None:
            yield from registry.index_update(record.user_id, remove_entries(handle_of(new_key)))
        if kind == "renew" and found is not None and found.successor is not None:
            st.rotate = None
            winner = record_key(found.successor)
            raw = yield Get(winner)
            current = registry.decode_or_none(raw)
            if isinstance(current, SessionRecord):
                yield from self.merge_save(st, winner, raw, current, None, now)
                st.follower = True
                return VARY_ONLY
        return self.clear_cookie()
