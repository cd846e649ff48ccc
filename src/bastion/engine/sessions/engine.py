"""SessionEngine: sessions over one store, loaded and saved as store flows.

Every operation is a generator flow (:mod:`bastion.engine.flows`) run by the async driver
(ASGI) or the sync driver (WSGI). The two per-request hot paths, the load and the common save
(only the data changed), are split into steps without I/O (``_load_key`` / ``_load_found``,
:func:`~bastion.core.sessions.plan_save` / ``Saver.finish``) that the flows use too, so the
drivers can also run them as direct store calls: no generator, and on a store whose sync side
never blocks (memory, see ``nonblocking`` in :mod:`bastion.stores.base`) no coroutine per store
call either. Records are decoded by a :class:`~bastion.core.sessions.RecordDecoder` that
remembers recently checked metadata.

Store round trips per request kind:

* untouched: 0 (nothing is read unless the handler touches the session);
* read-only: 1 (``GET``), 2 for a logged-in session (its user's revocation epoch is read too),
  plus 1 (``CAS``) at most once per ``touch_interval`` to push the idle deadline;
* modified: 2 (``GET`` + ``CAS``); one more ``GET`` + ``CAS`` per lost race.

The save flows are in :mod:`~bastion.engine.sessions.saving`, the registry and revocation
epochs in :mod:`~bastion.engine.sessions.registry`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import TYPE_CHECKING, Any, Final

from bastion.core.audit import Auditor, Outcome
from bastion.core.clock import system_clock
from bastion.core.cookies import parse_cookie
from bastion.core.sessions.config import SessionConfig
from bastion.core.sessions.ids import is_session_id, record_key, session_handle
from bastion.core.sessions.record import (
    RecordDecoder,
    SessionRecord,
    check_session_value,
    encode_record,
    stored_data,
)
from bastion.core.sessions.state import (
    GENERAL,
    UNCHANGED,
    Liveness,
    SessionState,
    diff,
    liveness,
    plan_save,
    record_ttl,
    resolve,
)
from bastion.core.signing import Signer
from bastion.engine.flows import (
    Delete,
    Done,
    Flow,
    Follow,
    Get,
    Write,
    drive_async,
    drive_sync,
    update,
)
from bastion.engine.sessions.loading import Loader, bound_user
from bastion.engine.sessions.registry import (
    RegistryOperations,
    SessionRegistry,
    epoch_key,
    remove_entries,
)
from bastion.engine.sessions.saving import NOTHING, VARY_ONLY, Saver, SaveResult
from bastion.engine.sessions.session import Session
from bastion.errors import BadToken, ConfigurationError, StoreError
from bastion.stores.base import Store, SupportsSync, SyncStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing, SecretKey

__all__ = ["SessionEngine"]

_STORE_UNAVAILABLE_EVENT: Final = "session_store_unavailable"


class SessionEngine(RegistryOperations):
    """Sessions over one store: loads, saves, lifecycle and the per-user registry.

    ``store`` is any :class:`~bastion.stores.base.Store`; its ``sync`` side (when it has one)
    serves WSGI apps and lazy loads. ``keyring`` signs cookie values when ``config.signed``
    and keys the audit hasher. ``auditor`` defaults to JSON lines on the ``bastion.audit``
    logger.

    App hooks: ``user_loader(user_id)`` gives the user object behind :attr:`Session.user`,
    called at most once per request (it may be a coroutine function, decided once by
    ``inspect.iscoroutinefunction``: then await :meth:`Session.load_user`).
    ``session_filter(record)`` runs on every stored session a request loads; ``False`` refuses
    it (a fresh session, as for an expired one), e.g. every session of a disabled user. It runs
    on the load path: keep it cheap and synchronous.

    ``min_epoch_ttl`` (seconds) is the least time a user's revocation epoch is kept after a
    "revoke all": tokens read the same epoch and may outlive every session, so an app with
    tokens passes their longest lifetime plus a margin
    (:func:`bastion.engine.tokens.revocation.min_epoch_ttl`). ``0`` keeps the sessions' own
    (twice the longest session lifetime).
    """

    __slots__ = (
        "_auditor",
        "_cookie_name",
        "_decoder",
        "_filter",
        "_inline",
        "_loader",
        "_saver",
        "_signer",
        "_steps",
        "_store",
        "_sync",
        "clock",
        "config",
        "registry",
        "user_loader",
        "user_loader_is_async",
    )

    def __init__(
        self,
        store: Store,
        *,
        config: SessionConfig | None = None,
        keyring: KeyRing | SecretKey | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        user_loader: Callable[[str], Any] | None = None,
        session_filter: Callable[[SessionRecord], bool] | None = None,
        min_epoch_ttl: float = 0.0,
    ) -> None:
        if not isinstance(store, Store):
            raise ConfigurationError(
                f"store must be a bastion Store (see bastion.stores.open_store), got "
                f"{type(store).__name__}",
                setting="store",
            )
        self.config = SessionConfig() if config is None else config
        if not isinstance(self.config, SessionConfig):
            raise ConfigurationError("config must be a SessionConfig", setting="config")
        if self.config.signed and keyring is None:
            raise ConfigurationError(
                "signed=True needs a key ring: pass keyring=KeyRing.from_secrets([...])",
                setting="keyring",
            )
        self._store = store
        self._sync: SyncStore | None = store.sync if isinstance(store, SupportsSync) else None
        # A sync side that never waits (the memory store) runs whole flows inline: no
        # coroutine per store call. See bastion.stores.base on ``nonblocking``.
        self._inline = self._sync is not None and self._sync.nonblocking is True
        self.clock = clock
        self._decoder = RecordDecoder()
        self._cookie_name = self.config.name
        self._loader: Callable[[Session], None] | None = (
            self.load_sync if self._sync is not None else None
        )
        self._signer = (
            Signer(keyring, "session") if self.config.signed and keyring is not None else None
        )
        self._auditor = auditor if auditor is not None else Auditor.default(keyring, clock)
        for name, hook in (("user_loader", user_loader), ("session_filter", session_filter)):
            if hook is not None and not callable(hook):
                raise ConfigurationError(f"{name} must be callable or None", setting=name)
        self.user_loader = user_loader
        # Decided once: a coroutine function is awaited by load_user(), anything else called.
        self.user_loader_is_async = inspect.iscoroutinefunction(user_loader)
        self._filter = session_filter
        self.registry = SessionRegistry(
            self.config, clock, self._decoder, self._auditor, min_epoch_ttl=min_epoch_ttl
        )
        self._steps = Loader(
            self.config, clock, self._decoder, self._signer, self._auditor, session_filter
        )
        self._saver = Saver(self.config, clock, self.registry, self._auditor, self._signer)

    @property
    def store(self) -> Store:
        return self._store

    @property
    def sync_store(self) -> SyncStore | None:
        return self._sync

    @property
    def inline(self) -> bool:
        """Whether flows run inline through a never-blocking sync side (the memory store), so
        that :meth:`save_sync` is safe to call on an event loop thread."""
        return self._inline

    def __repr__(self) -> str:
        return f"SessionEngine(store={self._store!r}, cookie={self.config.name!r})"

    # -- drivers ----------------------------------------------------------------------------

    async def run(self, flow: Flow[Any]) -> Any:
        if self._inline and self._sync is not None:
            return drive_sync(flow, self._sync)
        return await drive_async(flow, self._store)

    def run_sync(self, flow: Flow[Any]) -> Any:
        if self._sync is None:
            raise StoreError(f"{self._store!r} has no synchronous side (store.sync)")
        return drive_sync(flow, self._sync)

    # -- per request -------------------------------------------------------------------------

    def open(
        self,
        cookie_header: str | None,
        *,
        cookies: dict[str, str] | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
        lazy: bool = True,
    ) -> Session:
        """A session for one request; no I/O. ``cookies`` is the parsed ``Cookie`` header
        (``cookie_header`` is parsed when it is not given). With ``lazy`` and a store that has
        a sync side, the first touch loads the session through it."""
        if cookies is None:
            cookies = parse_cookie(cookie_header or "")
        value = cookies.get(self._cookie_name)
        loader = self._loader if lazy else None
        return Session(
            self, value or None, client_ip=client_ip, user_agent=user_agent, loader=loader
        )

    def load_sync(self, session: Session) -> None:
        """Load ``session`` now through the store's sync side (blocking). Idempotent."""
        sync = self._sync
        if sync is None:
            raise StoreError(f"{self._store!r} has no synchronous side (store.sync)")
        steps = self._steps
        first = steps.key(session)
        if first is None:
            return
        session_id, key = first
        raw = sync.get(key)
        successor = steps.found(session, session_id, key, raw, follower=False)
        if successor is not None:
            raw = sync.get(successor)
            steps.found(session, session_id, successor, raw, follower=True)
        user = bound_user(session)
        if user is not None:
            steps.checked(session, sync.get(epoch_key(user)))

    async def load(self, session: Session) -> None:
        """Load ``session`` now (one round trip when a cookie is present). Idempotent."""
        if self._inline:
            self.load_sync(session)
            return
        steps = self._steps
        first = steps.key(session)
        if first is None:
            return
        session_id, key = first
        raw = await self._store.get(key)
        successor = steps.found(session, session_id, key, raw, follower=False)
        if successor is not None:
            raw = await self._store.get(successor)
            steps.found(session, session_id, successor, raw, follower=True)
        user = bound_user(session)
        if user is not None:
            steps.checked(session, await self._store.get(epoch_key(user)))

    def load_flow(self, session: Session) -> Flow[None]:
        """The load as a flow: at most two reads (the second follows a renewal tombstone).

        :meth:`load` and :meth:`load_sync` run the same two steps with direct store calls.
        """
        steps = self._steps
        first = steps.key(session)
        if first is None:
            return
        session_id, key = first
        raw = yield Get(key)
        successor = steps.found(session, session_id, key, raw, follower=False)
        if successor is not None:
            raw = yield Get(successor)
            steps.found(session, session_id, successor, raw, follower=True)
        user = bound_user(session)
        if user is not None:
            steps.checked(session, (yield Get(epoch_key(user))))

    def audit_unavailable(self, session: Session | None, operation: str) -> None:
        """Record that the store failed while ``operation`` ran (the adapter answers 503)."""
        self._auditor.emit(
            _STORE_UNAVAILABLE_EVENT,
            outcome=Outcome.FAILURE,
            client_ip=None if session is None else session.client_ip,
            details={"operation": operation},
        )

    # -- saving ------------------------------------------------------------------------------

    def diff(self, session: Session) -> tuple[dict[str, Any], set[str]]:
        """This request's changes: keys set or changed (with their values), keys removed."""
        return diff(session._state)

    async def save(self, session: Session, *, status: int = 200) -> SaveResult:
        """Write ``session`` if needed and say what the response must carry.

        When ``status`` is 500 or more no data is written, but a pending logout still deletes
        the session and a rotation still kills the old ID (see
        :meth:`~bastion.core.sessions.SessionState.keep_only_lifecycle`).
        """
        st = session._state
        skipped = _skip_save(st, status)
        if skipped is not None:
            return skipped
        if self._inline:
            return self._save_direct(session)
        now = self.clock.now()
        plan = plan_save(st, now, self.config)
        if plan is UNCHANGED:
            return VARY_ONLY
        saver = self._saver
        if plan is GENERAL:
            result: SaveResult = await self.run(saver.save_flow(session))
            return result
        key, expected, value, ttl = plan
        if await self._store.compare_and_set(key, expected, value, ttl):
            return saver.finish(st, (key, st.record), now)
        outcome = await self.run(saver.retry_save(st, now))
        return saver.finish(st, outcome, now)

    def save_sync(self, session: Session, *, status: int = 200) -> SaveResult:
        """:meth:`save` through the store's sync side (blocking)."""
        skipped = _skip_save(session._state, status)
        return skipped if skipped is not None else self._save_direct(session)

    def _save_direct(self, session: Session) -> SaveResult:
        sync = self._sync
        if sync is None:
            raise StoreError(f"{self._store!r} has no synchronous side (store.sync)")
        st = session._state
        now = self.clock.now()
        plan = plan_save(st, now, self.config)
        if plan is UNCHANGED:
            return VARY_ONLY
        saver = self._saver
        if plan is GENERAL:
            return drive_sync(saver.save_flow(session), sync)
        key, expected, value, ttl = plan
        if sync.compare_and_set(key, expected, value, ttl):
            return saver.finish(st, (key, st.record), now)
        return saver.finish(st, drive_sync(saver.retry_save(st, now), sync), now)

    def save_flow(self, session: Session) -> Flow[SaveResult]:
        """The whole save as a flow (what :meth:`save` runs when the plan is not the common
        write)."""
        return self._saver.save_flow(session)

    def destroy_flow(self, session_id: str) -> Flow[bool]:
        if not is_session_id(session_id):
            return False
        handle = session_handle(session_id)
        key = record_key(handle)
        record = self.registry.decode_or_none((yield Get(key)))
        removed: bool = yield Delete(key)
        if isinstance(record, SessionRecord) and record.user_id is not None:
            yield from self.registry.index_update(record.user_id, remove_entries(handle))
        return removed

    def create_flow(
        self,
        data: dict[str, Any],
        *,
        user_id: str | None,
        persistent: bool | None,
        client_ip: str | None,
        user_agent: str | None,
    ) -> Flow[str]:
        for key, value in data.items():
            check_session_value(key, value)
        session = Session(self, None, client_ip=client_ip, user_agent=user_agent)
        st = session._state
        st.start_fresh(None)
        st.data = dict(data)
        st.meta_dirty = True
        if user_id is not None:
            st.user_id = str(user_id)
            st.authenticated_at = self.clock.now()
        if persistent is not None:
            st.persistent = persistent
        yield from self._saver.create(session, st.data, self.clock.now())
        if st.id is None:  # pragma: no cover
            raise StoreError("session creation returned no ID")
        return st.id

    # -- public lifecycle and registry operations, async and sync -----------------------------

    async def create(
        self,
        data: dict[str, Any] | None = None,
        *,
        user_id: str | int | None = None,
        persistent: bool | None = None,
        client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> str:
        """Store a new session (for programmatic use: tests, magic links) and return its ID."""
        flow = self.create_flow(
            dict(data or {}),
            user_id=None if user_id is None else str(user_id),
            persistent=persistent,
            client_ip=client_ip,
            user_agent=user_agent,
        )
        session_id: str = await self.run(flow)
        return session_id

    def cookie_value(self, session_id: str) -> str:
        """The session cookie's value for ``session_id`` (signed when ``config.signed``), for a
        session made outside a request with :meth:`create`. No I/O; the ID is the credential,
        so never log what this returns."""
        if not is_session_id(session_id):
            raise BadToken("session_id is not a session ID (43 base64url characters)")
        return self._saver.cookie_text(session_id)

    def _set_cookie_for(self, session_id: str, raw: bytes | None) -> str:
        record = self.registry.decode_or_none(raw)
        now = self.clock.now()
        if not isinstance(record, SessionRecord) or liveness(record, now, self.config) is not (
            Liveness.LIVE
        ):
            raise BadToken("no live session has this ID")
        line = self._saver.set_cookie(session_id, record, now).set_cookie
        if line is None:  # pragma: no cover - _set_cookie always sets one
            raise StoreError("no Set-Cookie line was made")
        return line

    async def set_cookie_header(self, session_id: str) -> str:
        """The ``Set-Cookie`` header value that hands the stored session ``session_id`` to a
        client (the cookie policy of ``config``; ``Max-Age`` from the server's deadline for a
        persistent session). Raises :class:`~bastion.errors.BadToken` unless it is live."""
        self.cookie_value(session_id)
        raw = await self._store.get(record_key(session_handle(session_id)))
        return self._set_cookie_for(session_id, raw)

    def set_cookie_header_sync(self, session_id: str) -> str:
        """:meth:`set_cookie_header` through the store's sync side (blocking)."""
        self.cookie_value(session_id)
        sync = self._sync
        if sync is None:
            raise StoreError(f"{self._store!r} has no synchronous side (store.sync)")
        return self._set_cookie_for(session_id, sync.get(record_key(session_handle(session_id))))

    def update_flow(self, handle: str, change: Callable[[dict[str, Any]], None]) -> Flow[bool]:
        config = self.config

        def step(_key: str, raw: bytes | None) -> Write[bool] | Done[bool] | Follow:
            now = self.clock.now()
            found = resolve(self.registry.decode_or_none(raw), now)
            if isinstance(found, str):
                return Follow(found)
            if found is None or liveness(found, now, config) is not Liveness.LIVE:
                return Done(result=False)
            data = stored_data(encode_record(found, max_bytes=config.max_bytes))
            change(data)  # on its own copy
            for name, value in data.items():
                check_session_value(name, value)
            updated = dataclasses.replace(found, data=data)
            value = encode_record(updated, max_bytes=config.max_bytes)
            return Write(value, result=True, ttl=record_ttl(updated, now, config))

        return (yield from update(record_key(handle), step, what="a session"))

    async def update(self, handle: str, change: Callable[[dict[str, Any]], None]) -> bool:
        """Change another session's data from outside its requests (an admin tool): ``change``
        edits a copy of the data in place and is applied with compare-and-set, re-run on a
        lost race, so it never overwrites that session's concurrent requests (they merge their
        own per-key changes onto it). Follows a renewal within its grace window. Says whether
        a live session was updated; ``handle`` is from :meth:`list_sessions`."""
        updated: bool = await self.run(self.update_flow(handle, change))
        return updated

    def update_sync(self, handle: str, change: Callable[[dict[str, Any]], None]) -> bool:
        """:meth:`update` through the store's sync side (blocking)."""
        updated: bool = self.run_sync(self.update_flow(handle, change))
        return updated

    async def end(self, session: Session) -> None:
        """Log ``session`` out now, in the store: its record is deleted and it leaves its
        user's registry. For code without a response of its own (a WebSocket handler); the
        client's cookie then names nothing and its next request gets a fresh session."""
        await self.load(session)
        session._state.accessed = True
        session._state.end()
        await self.run(self.save_flow(session))

    def end_sync(self, session: Session) -> None:
        """:meth:`end` through the store's sync side (blocking)."""
        self.load_sync(session)
        session._state.accessed = True
        session._state.end()
        self.run_sync(self.save_flow(session))

    async def destroy(self, session_id: str) -> bool:
        """Delete the session with ``session_id`` (and its registry entry); says if it existed."""
        removed: bool = await self.run(self.destroy_flow(session_id))
        if removed:
            self.registry.audit_destroyed(None, "destroy")
        return removed

    def destroy_sync(self, session_id: str) -> bool:
        removed: bool = self.run_sync(self.destroy_flow(session_id))
        if removed:
            self.registry.audit_destroyed(None, "destroy")
        return removed


def _skip_save(st: SessionState, status: int) -> SaveResult | None:
    """The save's answer when it must not write at all: untouched, not loaded, or a 5xx with
    no logout or rotation pending (``None``: go on and save)."""
    if not st.accessed:
        return NOTHING
    if status >= 500:
        if st.keep_only_lifecycle():
            return None
        st.discard()
        return VARY_ONLY
    if not st.loaded:
        return VARY_ONLY
    return None
