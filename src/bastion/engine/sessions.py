"""The session engine: load, save, rotate and revoke sessions as store flows.

:class:`Session` is the mapping a handler sees (``request.session``, ``flask.session``). It does
no I/O of its own: the adapter gives it a *loader*, called on first touch, and asks the
:class:`SessionEngine` to save it when the response starts. Every operation is a generator flow
(:mod:`bastion.engine.flows`) run by the async driver (ASGI) or the sync driver (WSGI). The two
per-request hot paths, the load and the common save (only the data changed), are split into
steps without I/O (``_load_key`` / ``_load_found``, ``_plan_save`` / ``_finish``) that the
flows use too, so the drivers can also run them as direct store calls: no generator, and on a
store whose sync side never blocks (memory, see ``nonblocking`` in
:mod:`bastion.stores.base`) no coroutine per store call either. Records are decoded by a
:class:`~bastion.core.sessions.RecordDecoder` that remembers recently checked metadata.

Store round trips per request kind:

* untouched: 0 (nothing is read unless the handler touches the session);
* read-only: 1 (``GET``), 2 for a logged-in session (its user's revocation epoch is read too),
  plus 1 (``CAS``) at most once per ``touch_interval`` to push the idle deadline;
* modified: 2 (``GET`` + ``CAS``); one more ``GET`` + ``CAS`` per lost race.

Concurrency. A save never overwrites blindly: it is ``compare_and_set(expected=<the bytes this
request loaded>)``. When another request changed the record meanwhile, the save re-reads it and
applies only this request's per-key changes (set, changed or deleted keys, found by comparing
the data with what was loaded) onto the current record, then retries (bounded). So two requests
that change different keys both keep their change. A save never creates a session it loaded:
if the record is gone (logout, revocation, expiry) the changes are dropped and the cookie
cleared, so a slow request cannot resurrect a destroyed session.

Rotation (``login()``, ``regenerate()``, periodic renewal) creates the new record with
create-if-absent, then replaces the old record by a tombstone with a CAS on the loaded bytes. A
renewal's tombstone names the new handle for ``renew_grace`` seconds, so parallel requests that
still send the old cookie read and write the new record instead of being logged out; a
privilege-change rotation leaves a dead tombstone (a fixated ID never reaches the logged-in
session). Of two parallel renewals exactly one wins the tombstone CAS; the loser drops its new
record and merges its changes into the winner's.

Per-user registry. A session with a user (after ``login()``) is listed in that user's index
record, under a hash-tagged key, updated with CAS loops. :meth:`SessionEngine.list_sessions`
reads the index and each record (created, last seen, IP, user agent);
:meth:`SessionEngine.revoke`, :meth:`SessionEngine.revoke_others` and
:meth:`SessionEngine.revoke_all` delete records, which also makes every in-flight save of those
sessions fail (see above). The index is bounded; a login past the bound destroys the user's
oldest session, so the list never misses a live one.

Revocation epochs. "Revoke all" and "revoke others" do not depend on the index: they raise the
user's epoch (a record under its own key), and every session record carries the epoch its
login was made under. A load refuses a record whose epoch is lower than its user's, so a
revocation ends every session of the user, listed or not, including one renewed or logged in
while the revocation ran (a login whose password was checked before the revocation is refused
at its save). "Revoke others" re-stamps the kept session with the new epoch before raising it.
The listed sessions a revocation then deletes are those its epoch ended, each checked and
deleted in one compare-and-set: a session under the new epoch (the caller's own, renewed by a
parallel request, or a login made meanwhile) stays. The epoch record and the registry live as
long as the longest kind of session (browser sessions may outlive "remember me" ones).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bastion.core.audit import (
    Auditor,
    EventName,
    Outcome,
)
from bastion.core.clock import system_clock
from bastion.core.cookies import parse_cookie
from bastion.core.sessions import (
    PRESESSION_PREFIX,
    Epoch,
    Liveness,
    RecordDecoder,
    SessionConfig,
    SessionIndex,
    SessionRecord,
    Tombstone,
    check_session_value,
    cookie_max_age,
    data_slice,
    decode_epoch,
    decode_index,
    encode_data,
    encode_epoch,
    encode_index,
    encode_record,
    encode_tombstone,
    is_session_id,
    liveness,
    needs_renewal,
    needs_touch,
    new_csrf_secret,
    new_session_id,
    presession_csrf_secret,
    record_key,
    session_handle,
)
from bastion.core.signing import Signer
from bastion.engine.flows import (
    CompareAndSet,
    Delete,
    Flow,
    Get,
    backoff,
    drive_async,
    drive_sync,
)
from bastion.errors import (
    BadData,
    BadToken,
    ConfigurationError,
    SessionStateError,
    StoreBusy,
    StoreError,
)
from bastion.stores.base import Store, SupportsSync, SyncStore
from bastion.stores.keyspace import hash_tag

if TYPE_CHECKING:
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing, SecretKey

__all__ = [
    "SaveResult",
    "Session",
    "SessionEngine",
    "SessionInfo",
    "epoch_key",
    "index_key",
]

_MISSING: Final = object()
_MAX_RETRIES: Final = 32
"""Seconds: a lost compare-and-set waits a random time up to ``base * 2**attempt`` (at most
``cap``) before it reads again ("full jitter"), so many writers of one record spread out
instead of colliding in lock step; 32 attempts wait about 0.7 s in all on average."""
_EXPIRY_SLACK: Final = 300.0
"""Seconds a record outlives its deadline in the store, so that a late request is told (and
audited) ``session_expired`` rather than ``unknown``. Deadlines are checked on every load."""
_STORE_UNAVAILABLE_EVENT: Final = "session_store_unavailable"
_DESTROYED_EVENT: Final = "session_destroyed"


def index_key(user_id: str) -> str:
    """The store key of ``user_id``'s session index (one Redis Cluster slot per user)."""
    return hash_tag("sessions-of", user_id)


def epoch_key(user_id: str) -> str:
    """The store key of ``user_id``'s revocation epoch (same Redis Cluster slot as the index)."""
    return hash_tag("session-epoch", user_id)


@dataclass(frozen=True, slots=True)
class SaveResult:
    """What the adapter adds to the response: a ``Set-Cookie`` value and headers."""

    set_cookie: str | None = dataclasses.field(default=None, repr=False)  # carries the ID
    clear_site_data: bool = False
    vary: bool = False


_NOTHING: Final = SaveResult()
_VARY_ONLY: Final = SaveResult(vary=True)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One entry of a user's session list. ``handle`` names the session for :meth:`revoke`
    (it is not a session ID and cannot be used as a cookie)."""

    handle: str
    created_at: float
    last_seen: float
    ip: str | None
    user_agent: str | None
    current: bool = False


class Session(MutableMapping[str, Any]):
    """The session of one request: a mapping of JSON values plus lifecycle operations.

    Loaded on first touch (``session["x"]``, ``len(session)``, ``session.id`` ...) through the
    loader the adapter installed; never loaded when untouched. Values are checked at assignment
    (:func:`~bastion.core.sessions.check_session_value`). Changes to nested values
    (``session["cart"].append(x)``) are seen too: the save compares the data with what was
    loaded.
    """

    __slots__ = (
        "_authenticated_at",
        "_cookie_value",
        "_csrf_secret",
        "_data",
        "_ended",
        "_engine",
        "_follower",
        "_id",
        "_key",
        "_loaded",
        "_loader",
        "_logout",
        "_meta_dirty",
        "_no_response",
        "_persistent",
        "_presession",
        "_presession_new",
        "_pristine",
        "_raw",
        "_record",
        "_rejected",
        "_rotate",
        "_user",
        "_user_id",
        "accessed",
        "client_ip",
        "user_agent",
    )

    def __init__(
        self,
        engine: SessionEngine,
        cookie_value: str | None,
        *,
        client_ip: str | None = None,
        user_agent: str | None = None,
        loader: Callable[[Session], None] | None = None,
    ) -> None:
        self._engine = engine
        self._cookie_value = cookie_value
        self._loader = loader
        self._loaded = False
        self._id: str | None = None
        self._key: str | None = None
        self._raw: bytes | None = None
        self._pristine: bytes | None = None
        self._record: SessionRecord | None = None
        self._data: dict[str, Any] = {}
        self._follower = False
        self._rejected: str | None = None
        self._rotate: str | None = None
        self._logout = False
        self._ended: tuple[str, str | None] | None = None
        self._meta_dirty = False
        self._no_response: str | None = None
        self._presession: str | None = None
        self._presession_new = False
        self._user: tuple[str, Any] | None = None
        self._user_id: str | None = None
        self._authenticated_at: float | None = None
        self._csrf_secret: str | None = None
        self._persistent = engine.config.persistent
        self.accessed = False
        self.client_ip = client_ip
        self.user_agent = user_agent

    # -- loading ----------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def has_cookie(self) -> bool:
        """Whether the request carried a session cookie (valid or not). No I/O."""
        return self._cookie_value is not None

    def _ensure(self) -> None:
        self.accessed = True
        if self._loaded:
            return
        if self._cookie_value is None:
            self._start_fresh(None)
            return
        loader = self._loader
        if loader is None:
            raise StoreError(
                "this session was not loaded and has no synchronous loader: await "
                "load_session(request) first, or use a store with a sync side"
            )
        loader(self)

    def _start_fresh(self, rejected: str | None) -> None:
        self._loaded = True
        self._rejected = rejected
        self._id = None
        self._key = None
        self._raw = None
        self._pristine = None
        self._record = None
        self._data = {}
        self._follower = False
        self._user_id = None
        self._authenticated_at = None
        self._csrf_secret = None
        self._persistent = self._engine.config.persistent

    def _adopt(
        self, session_id: str, key: str, raw: bytes, record: SessionRecord, *, follower: bool
    ) -> None:
        self._loaded = True
        self._id = session_id
        self._key = key
        self._raw = raw
        self._pristine = data_slice(raw)
        self._record = record
        self._data = record.data
        self._follower = follower
        self._user_id = record.user_id
        self._authenticated_at = record.authenticated_at
        self._csrf_secret = record.csrf_secret
        self._persistent = record.persistent

    # -- the mapping --------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._ensure()
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        check_session_value(key, value)
        self._ensure()
        self._data[key] = value

    def __delitem__(self, key: str) -> None:
        self._ensure()
        del self._data[key]

    def __iter__(self) -> Iterator[str]:
        self._ensure()
        return iter(self._data)

    def __len__(self) -> int:
        self._ensure()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self._ensure()
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        self._ensure()
        return self._data.get(key, default)

    def clear(self) -> None:
        """Empty the session. On a stored or logged-in session this is :meth:`logout`: the
        login, the ID and the CSRF secret end with the data (``request.session.clear()`` and
        ``flask.session.clear()`` are the idiomatic logout). Values set afterwards start a new
        session under a new ID (Flask's ``session.clear(); session["user_id"] = ...``)."""
        self._ensure()
        if self._key is not None or self._user_id is not None:
            self._lifecycle("clear")
            self._end()
        else:
            self._data.clear()

    def replace(self, data: Mapping[str, Any]) -> None:
        """Replace all the data with ``data``, keeping the session, its ID and its login."""
        for key, value in data.items():
            check_session_value(key, value)
        self._ensure()
        self._data.clear()
        self._data.update(data)

    def __repr__(self) -> str:
        state = "loaded" if self._loaded else "not loaded"
        return f"<Session {state}, {len(self._data)} keys>"

    # -- facts ---------------------------------------------------------------------------------

    @property
    def engine(self) -> SessionEngine:
        """The engine this session belongs to (its clock, its configuration). No I/O."""
        return self._engine

    @property
    def id(self) -> str | None:
        """The current session ID (``None`` while the session has never been stored).

        Danger: the ID is the credential. Never log it or put it in a page.
        """
        self._ensure()
        return self._id

    @property
    def handle(self) -> str | None:
        """The non-secret name of this session in the store and the user's registry.

        Within a renewal's grace window (a request sent with the previous cookie) this is the
        handle of the renewed record the request uses, not of the tombstone its cookie names:
        "log out other devices" from such a request keeps the caller's own session.
        """
        self._ensure()
        if self._key is not None and self._rotate is None:
            return self._key.removeprefix("session:")
        return None if self._id is None else session_handle(self._id)

    @property
    def is_new(self) -> bool:
        self._ensure()
        return self._key is None

    @property
    def user_id(self) -> str | None:
        self._ensure()
        return self._user_id

    @property
    def user(self) -> Any:
        """The logged-in user's object from the engine's ``user_loader`` (``None`` when nobody
        is logged in), loaded once per request. An async loader needs
        ``await session.load_user()`` first."""
        user_id = self.user_id
        if user_id is None:
            return None
        cached = self._user
        if cached is not None and cached[0] == user_id:
            return cached[1]
        loader = self._user_loader()
        if self._engine.user_loader_is_async:
            raise ConfigurationError(
                "user_loader is asynchronous: await session.load_user() (for example in a "
                "dependency) before reading session.user",
                setting="user_loader",
            )
        value = loader(user_id)
        self._user = (user_id, value)
        return value

    async def load_user(self) -> Any:
        """:attr:`user`, awaiting the ``user_loader`` when it is a coroutine function."""
        user_id = self.user_id
        if user_id is None:
            return None
        cached = self._user
        if cached is not None and cached[0] == user_id:
            return cached[1]
        loader = self._user_loader()
        value = await loader(user_id) if self._engine.user_loader_is_async else loader(user_id)
        self._user = (user_id, value)
        return value

    def _user_loader(self) -> Callable[[str], Any]:
        loader = self._engine.user_loader
        if loader is None:
            raise ConfigurationError(
                "session.user needs a user_loader: pass user_loader=... (a function of the user "
                "id) to the session middleware or SessionEngine",
                setting="user_loader",
            )
        return loader

    @property
    def authenticated_at(self) -> float | None:
        """When :meth:`login` ran for this session (Unix seconds), for step-up checks."""
        self._ensure()
        return self._authenticated_at

    @property
    def csrf_secret(self) -> str:
        """The per-session CSRF secret (created on first use, rotated by :meth:`login`).

        A visitor without a stored session gets a pre-session cookie instead of a store write
        (:data:`~bastion.core.sessions.PRESESSION_PREFIX`): the secret is derived from it, and
        the session record, once a real write creates it, keeps that secret.
        """
        self._ensure()
        if self._csrf_secret is None:
            if self._key is None:
                if self._presession is None:
                    self._presession = new_session_id()
                    self._presession_new = True
                self._csrf_secret = presession_csrf_secret(self._presession)
            else:  # pragma: no cover - a stored record always has its secret
                self._csrf_secret = new_csrf_secret()
                self._meta_dirty = True
        return self._csrf_secret

    def verification_csrf_secret(self) -> str | None:
        """The secret a submitted CSRF token is checked against, without issuing one: the
        stored session's, or the pre-session cookie's; ``None`` when the request has neither
        (the token cannot belong to this client)."""
        self._ensure()
        if self._csrf_secret is not None:
            return self._csrf_secret
        if self._key is None and self._presession is not None:
            return presession_csrf_secret(self._presession)
        return None

    @property
    def persistent(self) -> bool:
        """Whether the cookie outlives the browser session ("remember me")."""
        self._ensure()
        return self._persistent

    @persistent.setter
    def persistent(self, value: bool) -> None:
        self._ensure()
        if value != self._persistent:
            self._persistent = bool(value)
            self._meta_dirty = True

    @property
    def modified(self) -> bool:
        """Whether the save will write (data changed, lifecycle call, metadata changed)."""
        if not self._loaded:
            return False
        if self._meta_dirty or self._rotate is not None or self._logout:
            return True
        changed, removed = self._engine.diff(self)
        return bool(changed or removed)

    @modified.setter
    def modified(self, value: bool) -> None:
        # Flask code sets ``session.modified = True`` after changing a nested value. The save
        # finds nested changes by itself; True also forces a write (and an idle refresh).
        if value:
            self._ensure()
            self._meta_dirty = True

    # -- lifecycle -----------------------------------------------------------------------------

    def without_response(self, where: str) -> None:
        """Mark this session as one whose changes no response will carry (``where``: "a
        WebSocket handler"). Lifecycle calls then raise
        :class:`~bastion.errors.SessionStateError` instead of being silently lost; the data
        stays readable."""
        self._no_response = where

    def _lifecycle(self, call: str) -> None:
        if self._no_response is not None:
            raise SessionStateError(
                f"session.{call}() cannot take effect in {self._no_response}: there is no "
                "response to carry the new cookie. "
                + (
                    "await bastion.asgi.sessions.end_session(websocket) ends the session now"
                    if call in {"logout", "clear"}
                    else "do it in an HTTP request"
                )
            )

    def login(self, user_id: str | int, *, remember: bool | None = None) -> None:
        """Bind the session to ``user_id``: new ID, new CSRF secret, ``authenticated_at`` = now.

        Takes effect when the response is sent: the old ID is killed (a dead tombstone, so an
        in-flight request sent with it can never write it back) and the new cookie is set.
        ``remember`` picks a persistent cookie (the persistent lifetimes apply).
        """
        if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
            raise ConfigurationError(
                "login() needs a non-empty str or int user_id", setting="user_id"
            )
        self._lifecycle("login")
        self._ensure()
        self._user_id = str(user_id)
        self._authenticated_at = self._engine.clock.now()
        self._csrf_secret = new_csrf_secret()
        if remember is not None:
            self._persistent = bool(remember)
        self._meta_dirty = True
        self._rotate = "login"
        self._id = new_session_id()

    def end_login(self) -> None:
        """Forget the logged-in user but keep the session and its data: a new ID (the old one
        dies), a new CSRF secret, no user, no ``authenticated_at``; the session leaves the
        user's registry. Used when a new login starts on a session that is logged in, so that
        the previous user's access never coexists with the new attempt."""
        self._lifecycle("end_login")
        self._ensure()
        if self._user_id is None:
            return
        self._user_id = None
        self._authenticated_at = None
        self._csrf_secret = new_csrf_secret()
        self._meta_dirty = True
        self._rotate = "regenerate"
        self._id = new_session_id()

    def regenerate(self) -> None:
        """Issue a new ID for the same data (after a privilege change); the old ID dies."""
        self._lifecycle("regenerate")
        self._ensure()
        self._rotate = self._rotate or "regenerate"
        self._id = new_session_id()

    def logout(self) -> None:
        """End the session: server data deleted, cookie expired, ``Clear-Site-Data`` sent
        when the configuration asks for it. Happens even when the response is a 5xx.

        The session is new and empty afterwards: no ID, no user, no CSRF secret. Values set
        after the logout (a flash message) start a new session under a new ID; the response
        then sets that cookie instead of clearing it."""
        self._lifecycle("logout")
        self._end()

    def _end(self) -> None:
        self._ensure()
        if self._key is not None and self._ended is None:
            self._ended = (self._key, None if self._record is None else self._record.user_id)
        rejected = self._rejected
        self._start_fresh(rejected)
        self._logout = True
        self._rotate = None
        self._meta_dirty = False

    # The adapter calls this when it cannot save (5xx): nothing is written.
    def discard(self) -> None:
        self._loaded = False
        self._logout = False
        self._ended = None
        self._rotate = None

    def _keep_only_lifecycle(self) -> bool:
        """After a 5xx: drop this request's data changes, keep what must happen anyway (a
        logout, the old ID's death in a rotation). Says whether anything is left to write.

        A ``login()`` is not committed on a 5xx (the view failed, so whether it meant to grant
        the login is unknown): the loaded session moves to a new ID as :meth:`regenerate`
        would, unbound as before. ``regenerate()`` and ``end_login()`` are committed with the
        loaded data."""
        if self._logout:
            if self._ended is None:
                return False
            self._start_fresh(self._rejected)
            self._meta_dirty = False
            return True
        loaded, pristine = self._record, self._pristine
        if self._rotate is None or loaded is None or self._key is None or pristine is None:
            return False
        self._data = json.loads(pristine)
        if self._rotate == "login" or self._user_id == loaded.user_id:
            self._user_id = loaded.user_id
            self._authenticated_at = loaded.authenticated_at
            self._csrf_secret = loaded.csrf_secret
            self._persistent = loaded.persistent
            self._meta_dirty = False
        self._rotate = "regenerate"
        return True


class SessionEngine:
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
    """

    __slots__ = (
        "_auditor",
        "_cookie_name",
        "_decoder",
        "_filter",
        "_inline",
        "_loader",
        "_signer",
        "_store",
        "_sync",
        "clock",
        "config",
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
        first = self._load_key(session)
        if first is None:
            return
        session_id, key = first
        raw = sync.get(key)
        successor = self._load_found(session, session_id, key, raw, follower=False)
        if successor is not None:
            raw = sync.get(successor)
            self._load_found(session, session_id, successor, raw, follower=True)
        user = _bound_user(session)
        if user is not None:
            self._load_checked(session, sync.get(epoch_key(user)))

    async def load(self, session: Session) -> None:
        """Load ``session`` now (one round trip when a cookie is present). Idempotent."""
        if self._inline:
            self.load_sync(session)
            return
        first = self._load_key(session)
        if first is None:
            return
        session_id, key = first
        raw = await self._store.get(key)
        successor = self._load_found(session, session_id, key, raw, follower=False)
        if successor is not None:
            raw = await self._store.get(successor)
            self._load_found(session, session_id, successor, raw, follower=True)
        user = _bound_user(session)
        if user is not None:
            self._load_checked(session, await self._store.get(epoch_key(user)))

    def _decode_cookie(self, value: str) -> tuple[str | None, str]:
        """``(session ID, "")``, ``(pre-session value, "presession")`` or ``(None, reason)``."""
        signer = self._signer
        if signer is None:
            if value.startswith(PRESESSION_PREFIX) and is_session_id(value[2:]):
                return value[2:], "presession"
            return (value, "") if is_session_id(value) else (None, "malformed")
        result = signer.verify(value)
        if result.value is None:
            return None, "bad_signature" if result.status == "bad_signature" else "malformed"
        try:
            text = result.value.decode("ascii")
        except UnicodeDecodeError:
            return None, "malformed"
        if text.startswith(PRESESSION_PREFIX) and is_session_id(text[2:]):
            return text[2:], "presession"
        return (text, "") if is_session_id(text) else (None, "malformed")

    def _cookie_text(self, session_id: str) -> str:
        return session_id if self._signer is None else self._signer.sign(session_id)

    def load_flow(self, session: Session) -> Flow[None]:
        """The load as a flow: at most two reads (the second follows a renewal tombstone).

        :meth:`load` and :meth:`load_sync` run the same two steps with direct store calls.
        """
        first = self._load_key(session)
        if first is None:
            return
        session_id, key = first
        raw = yield Get(key)
        successor = self._load_found(session, session_id, key, raw, follower=False)
        if successor is not None:
            raw = yield Get(successor)
            self._load_found(session, session_id, successor, raw, follower=True)
        user = _bound_user(session)
        if user is not None:
            self._load_checked(session, (yield Get(epoch_key(user))))

    def _load_key(self, session: Session) -> tuple[str, str] | None:
        """A load's first step, without I/O: ``(session ID, store key)`` to read, or ``None``
        when the session is settled already (loaded, no cookie, or a rejected cookie)."""
        session.accessed = True
        if session.loaded:
            return None
        value = session._cookie_value
        if value is None:
            session._start_fresh(None)
            return None
        session_id, reason = self._decode_cookie(value)
        if reason == "presession":
            # No stored session yet: nothing to read, nothing to reject.
            session._start_fresh(None)
            session._presession = session_id
            return None
        if session_id is None:
            self._reject(session, reason, EventName.INPUT_VALIDATION_FAIL)
            return None
        return session_id, record_key(session_handle(session_id))

    def _load_found(
        self, session: Session, session_id: str, key: str, raw: bytes | None, *, follower: bool
    ) -> str | None:
        """A load's second step: judge what ``key`` held. Adopts the record or starts a fresh
        session; returns the successor's key when ``raw`` is a renewal tombstone still within
        its grace window (read it and call again with ``follower=True``)."""
        if raw is None:
            self._reject(session, "unknown", EventName.SESSION_USE_AFTER_EXPIRE)
            return None
        try:
            found: SessionRecord | Tombstone | None = self._decoder.decode(raw)
        except BadData:
            found = None
        now = self.clock.now()
        if isinstance(found, Tombstone) and not follower:
            if found.successor is None or now >= found.until:
                self._reject(session, "rotated", EventName.SESSION_USE_AFTER_EXPIRE)
                return None
            return record_key(found.successor)
        if not isinstance(found, SessionRecord):
            self._reject(session, "unknown", EventName.SESSION_USE_AFTER_EXPIRE)
            return None
        state = liveness(found, now, self.config)
        refused: str | None = None
        if state is not Liveness.LIVE:
            refused = state.value
        elif self._filter is not None and not self._filter(found):
            refused = "filtered"  # the app's session_filter ended it (a disabled user)
        if refused is not None:
            self._reject(session, refused, EventName.SESSION_EXPIRED, user=found.user_id)
            return None
        session._adopt(session_id, key, raw, found, follower=follower)
        return None

    def _load_checked(self, session: Session, raw_epoch: bytes | None) -> None:
        """A load's last step for a logged-in session: refuse it when the user's sessions were
        revoked after its login (its epoch is lower than the user's; an unreadable epoch
        record refuses too, rather than guess)."""
        record = session._record
        if record is None or record.user_id is None:  # pragma: no cover - see _bound_user
            return
        try:
            current = decode_epoch(raw_epoch).number
        except BadData:
            current = None
        if current is None or record.epoch < current:
            self._reject(
                session, "revoked", EventName.SESSION_USE_AFTER_EXPIRE, user=record.user_id
            )

    def _reject(
        self, session: Session, reason: str, name: EventName, *, user: str | None = None
    ) -> None:
        session._start_fresh(reason)
        self._auditor.emit(
            name,
            outcome=Outcome.FAILURE,
            user=user,
            client_ip=session.client_ip,
            details={"reason": reason, "action": "fresh_session_issued"},
        )

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
        data = session._data
        raw = session._pristine
        if raw is None:
            return dict(data), set()
        pristine = json.loads(raw)
        changed = {k: v for k, v in data.items() if pristine.get(k, _MISSING) != v}
        removed = {k for k in pristine if k not in data}
        return changed, removed

    async def save(self, session: Session, *, status: int = 200) -> SaveResult:
        """Write ``session`` if needed and say what the response must carry.

        When ``status`` is 500 or more no data is written, but a pending logout still deletes
        the session and a rotation still kills the old ID (see ``Session._keep_only_lifecycle``).
        """
        skipped = _skip_save(session, status)
        if skipped is not None:
            return skipped
        if self._inline:
            return self._save_direct(session)
        now = self.clock.now()
        plan = self._plan_save(session, now)
        if isinstance(plan, SaveResult):
            return plan
        if plan is None:
            result: SaveResult = await self.run(self.save_flow(session))
            return result
        key, expected, value, ttl = plan
        if await self._store.compare_and_set(key, expected, value, ttl):
            return self._finish(session, (key, session._record), now)
        outcome = await self.run(self._retry_save(session, now))
        return self._finish(session, outcome, now)

    def save_sync(self, session: Session, *, status: int = 200) -> SaveResult:
        """:meth:`save` through the store's sync side (blocking)."""
        skipped = _skip_save(session, status)
        return skipped if skipped is not None else self._save_direct(session)

    def _save_direct(self, session: Session) -> SaveResult:
        sync = self._sync
        if sync is None:
            raise StoreError(f"{self._store!r} has no synchronous side (store.sync)")
        now = self.clock.now()
        plan = self._plan_save(session, now)
        if isinstance(plan, SaveResult):
            return plan
        if plan is None:
            return drive_sync(self.save_flow(session), sync)
        key, expected, value, ttl = plan
        if sync.compare_and_set(key, expected, value, ttl):
            return self._finish(session, (key, session._record), now)
        return self._finish(session, drive_sync(self._retry_save(session, now), sync), now)

    def _plan_save(
        self, s: Session, now: float
    ) -> SaveResult | tuple[str, bytes, bytes, float] | None:
        """The common cases of a save, decided without I/O.

        A :class:`SaveResult` when nothing needs writing (the data is unchanged and the idle
        clock need not move); ``(key, expected, value, ttl)`` for the common write, a
        compare-and-set of the stored record with only its data replaced (the metadata bytes
        are reused as stored); ``None`` for everything else, which :meth:`save_flow` handles
        (create, rotation, renewal, logout, metadata changes, idle refresh).
        """
        key, loaded, raw, pristine = s._key, s._record, s._raw, s._pristine
        if (
            key is None
            or loaded is None
            or raw is None
            or pristine is None
            or s._logout
            or s._rotate is not None
            or s._meta_dirty
        ):
            return None
        config = self.config
        if now - loaded.last_seen >= config.touch_interval:  # needs_touch: the idle refresh
            return None
        if not s._follower and needs_renewal(loaded, now, config):
            return None
        # Comparing encodings finds every change, nested ones included, without decoding.
        data_json = encode_data(s._data)
        if data_json == pristine:
            return _VARY_ONLY
        value = raw[: len(raw) - len(pristine) - 1] + data_json + b"}"
        if len(value) > config.max_bytes:
            return None  # the general path raises the error that names the largest key
        return key, raw, value, self._ttl(loaded, now)

    def _retry_save(self, s: Session, now: float) -> Flow[tuple[str, SessionRecord] | None]:
        """After the common write lost its compare-and-set: re-read and merge."""
        key, loaded = s._key, s._record
        if key is None or loaded is None:  # pragma: no cover - a planned save has both
            raise StoreError("session has no stored record to merge onto")
        return self._merge_save(s, key, s._raw, loaded, None, now, reread=True)

    def _finish(
        self, s: Session, outcome: tuple[str, SessionRecord | None] | None, now: float
    ) -> SaveResult:
        """What the response carries after a save that kept (or lost) the session."""
        if outcome is None:
            return self._clear_cookie() if not s._follower else _VARY_ONLY
        record = outcome[1]
        if s._follower or s._id is None or record is None:
            return _VARY_ONLY
        if record.persistent or s._meta_dirty:
            return self._set_cookie(s._id, record, now)
        return _VARY_ONLY

    def _set_cookie(self, session_id: str, record: SessionRecord, now: float) -> SaveResult:
        cookie = self.config.cookie
        max_age = cookie_max_age(record, now, self.config)
        text = self._cookie_text(session_id)
        if max_age is None:
            line = cookie.with_value(text).serialize()
        else:
            line = dataclasses.replace(cookie, value=text, max_age=max_age).serialize()
        return SaveResult(set_cookie=line, vary=True)

    def _presession_cookie(self, s: Session) -> SaveResult:
        """The cookie of a visitor given a CSRF secret but no stored session (no store I/O)."""
        value = s._presession
        if value is None:  # pragma: no cover - only called once a value was issued
            return _VARY_ONLY
        s._presession_new = False
        text = self._cookie_text(PRESESSION_PREFIX + value)
        return SaveResult(set_cookie=self.config.cookie.with_value(text).serialize(), vary=True)

    def _clear_cookie(self, *, clear_site_data: bool = False) -> SaveResult:
        return SaveResult(
            set_cookie=self.config.cookie.expired().serialize(),
            clear_site_data=clear_site_data,
            vary=True,
        )

    def _ttl(self, record: SessionRecord, now: float) -> float:
        return max(1.0, record.deadline(self.config) - now) + _EXPIRY_SLACK

    def _build(
        self,
        session: Session,
        base: SessionRecord | None,
        data: dict[str, Any],
        now: float,
    ) -> SessionRecord:
        """A record with ``data`` and this session's metadata, on top of ``base``."""
        s = session
        if base is None:
            return SessionRecord(
                data=data,
                created_at=now,
                issued_at=now,
                last_seen=now,
                # A visitor's pre-session secret carries over: the tokens in its pages stay good.
                csrf_secret=s.verification_csrf_secret() or new_csrf_secret(),
                user_id=s._user_id,
                authenticated_at=s._authenticated_at,
                persistent=s._persistent,
                ip=s.client_ip,
                user_agent=s.user_agent,
            )
        if s._meta_dirty:
            return SessionRecord(
                data=data,
                created_at=base.created_at,
                issued_at=base.issued_at,
                last_seen=max(now, base.last_seen),
                csrf_secret=s._csrf_secret or base.csrf_secret,
                user_id=s._user_id,
                authenticated_at=s._authenticated_at,
                persistent=s._persistent,
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

    def save_flow(self, session: Session) -> Flow[SaveResult]:  # noqa: PLR0911, PLR0912 (one decision table)
        now = self.clock.now()
        s = session
        old_key = s._key
        if s._logout:
            ended = s._ended
            if ended is not None:
                ended_key, ended_user = ended
                yield Delete(ended_key)
                if ended_user is not None:
                    handle = ended_key.removeprefix("session:")
                    yield from self._index_update(ended_user, _remove(handle))
                self._audit_destroyed(s, "logout")
            s._logout, s._ended = False, None
            if _worth_storing(s):
                # Written after the logout: a new session, under a new ID, replaces the cookie.
                return (yield from self._create(s, dict(s._data), now))
            if s._presession_new:
                return self._presession_cookie(s)  # a token for the page after the logout
            if ended is None and s._cookie_value is None:
                return _VARY_ONLY
            return self._clear_cookie(clear_site_data=self.config.clear_site_data)
        # Comparing encodings finds every change, nested ones included, without decoding.
        data_json = encode_data(s._data)
        unchanged = data_json == s._pristine
        if old_key is None:
            if not _worth_storing(s):
                if s._presession_new:
                    return self._presession_cookie(s)
                return self._clear_cookie() if s._rejected else _VARY_ONLY
            return (yield from self._create(s, dict(s._data), now))
        loaded = s._record
        if loaded is None:  # pragma: no cover - a stored session always has its record
            raise StoreError("session has a key but no record")
        if s._rotate is None and not s._follower and needs_renewal(loaded, now, self.config):
            s._rotate = "renew"
            s._id = new_session_id()
        if s._rotate is not None:
            return (yield from self._rotate_flow(s, data_json, now))
        plan = self._plan_save(s, now)
        if isinstance(plan, SaveResult):
            return plan
        outcome: tuple[str, SessionRecord] | None
        if plan is None:
            if unchanged and not s._meta_dirty and not needs_touch(loaded, now, self.config):
                return _VARY_ONLY
            outcome = yield from self._merge_save(s, old_key, s._raw, loaded, data_json, now)
        elif (yield CompareAndSet(*plan)):
            outcome = old_key, loaded
        else:
            outcome = yield from self._retry_save(s, now)
        return self._finish(s, outcome, now)

    def _login_epoch(self, user_id: str, authenticated_at: float | None) -> Flow[int | None]:
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

    def _create(self, s: Session, data: dict[str, Any], now: float) -> Flow[SaveResult]:
        record = self._build(s, None, data, now)
        if record.user_id is not None:
            epoch = yield from self._login_epoch(record.user_id, record.authenticated_at)
            if epoch is None:
                self._audit_destroyed(s, "revoked")
                s._start_fresh("revoked")
                return self._clear_cookie()
            record.epoch = epoch
        value = encode_record(record, max_bytes=self.config.max_bytes)
        session_id = s._id or new_session_id()
        for _ in range(3):
            key = record_key(session_handle(session_id))
            created = yield CompareAndSet(key, None, value, self._ttl(record, now))
            if created:
                break
            session_id = new_session_id()  # a collision of 256-bit IDs: never in practice
        else:
            raise StoreError("could not create a session: three random IDs were all taken")
        if record.user_id is not None:
            yield from self._index_update(
                record.user_id, _add(session_handle(session_id), record, now)
            )
        self._adopt_saved(s, session_id, key, value, record)
        self._auditor.emit(
            EventName.SESSION_CREATED,
            outcome=Outcome.SUCCESS,
            user=record.user_id,
            session=session_id,
            client_ip=s.client_ip,
        )
        return self._set_cookie(session_id, record, now)

    def _adopt_saved(
        self, s: Session, session_id: str, key: str, value: bytes, record: SessionRecord
    ) -> None:
        s._adopt(session_id, key, value, record, follower=False)
        s._rotate = None
        s._meta_dirty = False
        s._data = json.loads(value)["d"]

    def _merged(self, s: Session, onto: dict[str, Any]) -> dict[str, Any]:
        """``onto`` (the data stored now) with this request's per-key changes applied."""
        changed, removed = self.diff(s)
        data = dict(onto)
        data.update(changed)
        for name in removed:
            data.pop(name, None)
        return data

    def _merge_save(  # noqa: PLR0917 (private: the state of one CAS loop)
        self,
        s: Session,
        key: str,
        expected: bytes | None,
        current: SessionRecord,
        data_json: bytes | None,
        now: float,
        *,
        reread: bool = False,
    ) -> Flow[tuple[str, SessionRecord] | None]:
        """CAS this request's changes onto the record under ``key``; ``None`` if it is gone.

        ``data_json`` is the encoded data when ``current`` is the record this request loaded
        (no merge needed); ``None`` makes the first attempt merge too. ``reread`` says that a
        compare-and-set against ``expected`` has just failed: the record is read again first.
        """
        for attempt in range(_MAX_RETRIES):
            if attempt:
                yield backoff(attempt)
            if reread:
                expected = yield Get(key)
                found = None if expected is None else self._decode_or_none(expected)
                if isinstance(found, Tombstone):
                    if found.successor is None or now >= found.until:
                        return None
                    key = record_key(found.successor)
                    expected = yield Get(key)
                    found = None if expected is None else self._decode_or_none(expected)
                    s._follower = True
                if not isinstance(found, SessionRecord):
                    return None
                current = found
            reread = True
            if data_json is None:
                record = self._build(s, current, self._merged(s, current.data), now)
                value = encode_record(record, max_bytes=self.config.max_bytes)
            elif (
                not s._meta_dirty
                and s._raw is not None
                and s._pristine is not None
                and not needs_touch(current, now, self.config)
            ):
                # Only the data changed and the idle clock need not move: the stored metadata
                # is reused byte for byte and only the data part is replaced.
                record = current
                head = s._raw[: len(s._raw) - len(s._pristine) - 1]
                value = head + data_json + b"}"
                if len(value) > self.config.max_bytes:
                    value = encode_record(record, max_bytes=self.config.max_bytes)
                data_json = None
            else:
                record = self._build(s, current, s._data, now)
                value = encode_record(record, max_bytes=self.config.max_bytes, data_json=data_json)
                data_json = None
            if (yield CompareAndSet(key, expected, value, self._ttl(record, now))):
                return key, record
        raise StoreBusy(
            f"session save lost {_MAX_RETRIES} compare-and-set races in a row, backing off "
            "between them; the session is being written by too many requests at once"
        )

    def _rotate_flow(self, s: Session, data_json: bytes, now: float) -> Flow[SaveResult]:  # noqa: PLR0912, PLR0915 (one rotation, each race answered)
        kind = s._rotate
        old_key = s._key
        loaded = s._record
        if old_key is None or loaded is None or s._id is None:
            raise StoreError("rotation needs a stored session")
        new_id = s._id
        new_handle = session_handle(new_id)
        new_key = record_key(new_handle)
        old_handle = old_key.removeprefix("session:")
        data = dict(s._data)
        record = self._build(s, loaded, data, now)
        record.issued_at = now
        record.last_seen = now
        if kind != "renew":
            if kind == "login" or record.user_id != loaded.user_id:
                # A new login (or its end) starts a new absolute lifetime; regenerate() of
                # the same login moves the ID only, or calling it would keep a login forever.
                record.created_at = now
            record.ip = s.client_ip or record.ip
            record.user_agent = s.user_agent or record.user_agent
        if kind == "login" and record.user_id is not None:
            epoch = yield from self._login_epoch(record.user_id, record.authenticated_at)
            if epoch is None:
                # Revoked after this login was authenticated: the pre-login session ends too.
                yield Delete(old_key)
                if loaded.user_id is not None:
                    yield from self._index_update(loaded.user_id, _remove(old_handle))
                self._audit_destroyed(s, "revoked")
                return self._clear_cookie()
            record.epoch = epoch
        value = encode_record(record, max_bytes=self.config.max_bytes, data_json=data_json)
        if not (yield CompareAndSet(new_key, None, value, self._ttl(record, now))):
            raise StoreError("could not create the rotated session: its new ID is taken")
        # Listed before the old ID is tombstoned, so a revocation that reads the registry in
        # between finds the new session (the epoch check covers the rest of the window).
        if record.user_id is not None:
            yield from self._index_update(record.user_id, _add(new_handle, record, now))
        successor = new_handle if kind == "renew" else None
        tomb = encode_tombstone(Tombstone(successor=successor, until=now + self.config.renew_grace))
        expected = s._raw
        for attempt in range(_MAX_RETRIES):
            if attempt:
                yield backoff(attempt)
            if (yield CompareAndSet(old_key, expected, tomb, self.config.renew_grace)):
                break
            expected = yield Get(old_key)
            found = None if expected is None else self._decode_or_none(expected)
            if not isinstance(found, SessionRecord):
                # Destroyed meanwhile, or another request rotated first: ours must not live.
                yield Delete(new_key)
                if record.user_id is not None:
                    yield from self._index_update(record.user_id, _remove(new_handle))
                if isinstance(found, Tombstone) and found.successor is not None and kind == "renew":
                    s._rotate = None
                    winner = record_key(found.successor)
                    raw = yield Get(winner)
                    current = None if raw is None else self._decode_or_none(raw)
                    if isinstance(current, SessionRecord):
                        yield from self._merge_save(s, winner, raw, current, None, now)
                        s._follower = True
                        return _VARY_ONLY
                return self._clear_cookie()
            updated = dataclasses.replace(record, data=self._merged(s, found.data))
            if kind != "login":
                # The same login, moved: it keeps the epoch the stored record has now (a
                # "log out other devices" may have re-stamped it meanwhile).
                updated.epoch = found.epoch
            new_value = encode_record(updated, max_bytes=self.config.max_bytes)
            if not (yield CompareAndSet(new_key, value, new_value, self._ttl(updated, now))):
                raise StoreError("the rotated session changed during its own rotation")
            value, record = new_value, updated
        else:
            raise StoreBusy(f"session rotation lost {_MAX_RETRIES} races in a row")
        if loaded.user_id is not None:
            if loaded.user_id == record.user_id:
                yield from self._index_update(
                    record.user_id, _replace(old_handle, new_handle, record, now)
                )
            else:
                yield from self._index_update(loaded.user_id, _remove(old_handle))
        self._adopt_saved(s, new_id, new_key, value, record)
        self._auditor.emit(
            EventName.SESSION_RENEWED,
            outcome=Outcome.SUCCESS,
            user=record.user_id,
            session=new_id,
            client_ip=s.client_ip,
            details={"reason": kind},
        )
        return self._set_cookie(new_id, record, now)

    def _decode_or_none(self, raw: bytes) -> SessionRecord | Tombstone | None:
        try:
            return self._decoder.decode(raw)
        except BadData:
            return None

    def _audit_destroyed(self, s: Session | None, reason: str) -> None:
        self._auditor.emit(
            _DESTROYED_EVENT,
            outcome=Outcome.SUCCESS,
            client_ip=None if s is None else s.client_ip,
            details={"reason": reason},
        )

    # -- the per-user registry ------------------------------------------------------------------

    def _index_update(self, user_id: str, change: _IndexChange) -> Flow[None]:
        """CAS ``change`` into ``user_id``'s index. The sessions a change pushes out of the
        bounded index are destroyed *before* the index is stored, so no live session is ever
        missing from the list (or from a revocation that walks it)."""
        key = index_key(user_id)
        # As long as the longest session can live: browser sessions may outlive "remember
        # me" ones (absolute_lifetime > persistent_absolute_lifetime), and the list must not.
        ttl = self._longest_lifetime() + _EXPIRY_SLACK
        for attempt in range(_MAX_RETRIES):
            if attempt:
                yield backoff(attempt)
            raw = yield Get(key)
            try:
                index = decode_index(raw)
            except BadData:
                index = SessionIndex()
            for handle in change(index) or ():
                if (yield Delete(record_key(handle))):
                    self._audit_destroyed(None, "registry_full")
            if (yield CompareAndSet(key, raw, encode_index(index), ttl)):
                return
        raise StoreBusy(f"session index update lost {_MAX_RETRIES} races in a row")

    def _longest_lifetime(self) -> float:
        """The absolute lifetime of the longest-lived kind of session, browser or persistent
        (the configuration lets either be the longer)."""
        config = self.config
        return max(config.absolute_lifetime, config.persistent_absolute_lifetime)

    def _epoch_ttl(self) -> float:
        # Outlives every session made under the previous epoch, of either kind, by a wide
        # margin: a rotation restarts the absolute lifetime of a session loaded just before a
        # bump. An epoch record that expired first would bring its revoked sessions back.
        return 2 * self._longest_lifetime() + _EXPIRY_SLACK

    def _bump_epoch_flow(self, user_id: str, keep: str | None) -> Flow[int]:
        """Raise ``user_id``'s epoch, so every session of the user made under an earlier one
        is refused at its next load. ``keep`` (a handle of this user's) is re-stamped with
        the new epoch first, so the caller's own session never sees itself revoked, not even
        by a request of its own that loads in between."""
        key = epoch_key(user_id)
        now = self.clock.now()
        for attempt in range(_MAX_RETRIES):
            if attempt:
                yield backoff(attempt)
            raw = yield Get(key)
            try:
                number = decode_epoch(raw).number
            except BadData:
                number = 0
            # Time-based and increasing: a lost or unreadable epoch record can only be
            # replaced by a higher number, never reopen older sessions.
            bumped = Epoch(max(number + 1, int(now * 1000)), now)
            if keep is not None:
                yield from self._stamp_flow(user_id, keep, bumped.number, now)
            if (yield CompareAndSet(key, raw, encode_epoch(bumped), self._epoch_ttl())):
                return bumped.number
        raise StoreBusy(f"session epoch update lost {_MAX_RETRIES} races in a row")

    def _stamp_flow(self, user_id: str, handle: str, epoch: int, now: float) -> Flow[None]:
        """Give the live record of ``handle`` (following a renewal tombstone) ``epoch``."""
        key = record_key(handle)
        for attempt in range(_MAX_RETRIES):
            if attempt:
                yield backoff(attempt)
            raw = yield Get(key)
            found = None if raw is None else self._decode_or_none(raw)
            if isinstance(found, Tombstone):
                if found.successor is None or now >= found.until:
                    return
                key = record_key(found.successor)
                continue
            if not isinstance(found, SessionRecord) or found.user_id != user_id:
                return
            if found.epoch >= epoch:
                return
            stamped = dataclasses.replace(found, epoch=epoch)
            value = encode_record(stamped, max_bytes=self.config.max_bytes)
            if (yield CompareAndSet(key, raw, value, self._ttl(stamped, now))):
                return
        raise StoreBusy(f"session re-stamp lost {_MAX_RETRIES} races in a row")

    def list_sessions_flow(
        self, user_id: str, current: str | None = None
    ) -> Flow[list[SessionInfo]]:
        raw = yield Get(index_key(str(user_id)))
        try:
            index = decode_index(raw)
        except BadData:
            return []
        try:
            epoch: int | None = decode_epoch((yield Get(epoch_key(str(user_id))))).number
        except BadData:
            epoch = None  # unreadable: every load of this user's sessions refuses them
        now = self.clock.now()
        found: list[SessionInfo] = []
        gone: list[str] = []
        for handle, entry in index.entries.items():
            value = yield Get(record_key(handle))
            record = None if value is None else self._decode_or_none(value)
            if (
                not isinstance(record, SessionRecord)
                or record.user_id != str(user_id)
                or epoch is None
                or record.epoch < epoch
            ):
                gone.append(handle)
                continue
            if liveness(record, now, self.config) is not Liveness.LIVE:
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
            yield from self._index_update(str(user_id), _remove(*gone))
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
        epoch = (yield from self._bump_epoch_flow(str(user_id), keep)) if everywhere else None
        raw = yield Get(index_key(str(user_id)))
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
                ended = yield from self._end_before_flow(str(user_id), handle, epoch)
                if ended is None:
                    chosen.remove(handle)  # live under the new epoch: stays listed
            if ended:
                count += 1
        if chosen:
            yield from self._index_update(str(user_id), _remove(*chosen))
        return count

    def _end_before_flow(self, user_id: str, handle: str, epoch: int) -> Flow[bool | None]:
        """Delete the record of ``handle`` unless it is ``user_id``'s under ``epoch`` or later.

        After a revocation raised the epoch, a listed session that carries the new epoch was
        made or re-stamped while the revocation ran: the caller's own session renewed by a
        parallel request, or a login with the new password. It must live. The check and the
        deletion are one compare-and-set (onto a dead tombstone, then deleted), so a re-stamp
        landing in between is never deleted. Says whether a session record was ended
        (``None``: the session lives under the new epoch and stays listed)."""
        key = record_key(handle)
        dead = encode_tombstone(Tombstone(successor=None, until=self.clock.now()))
        for attempt in range(_MAX_RETRIES):
            if attempt:
                yield backoff(attempt)
            raw = yield Get(key)
            if raw is None:
                return False
            found = self._decode_or_none(raw)
            if (
                isinstance(found, SessionRecord)
                and found.user_id == user_id
                and found.epoch >= epoch
            ):
                return None
            if (yield CompareAndSet(key, raw, dead, self.config.renew_grace)):
                yield Delete(key)
                return isinstance(found, SessionRecord)
        raise StoreBusy(f"session revocation lost {_MAX_RETRIES} races in a row")

    def destroy_flow(self, session_id: str) -> Flow[bool]:
        if not is_session_id(session_id):
            return False
        handle = session_handle(session_id)
        key = record_key(handle)
        raw = yield Get(key)
        record = None if raw is None else self._decode_or_none(raw)
        removed: bool = yield Delete(key)
        if isinstance(record, SessionRecord) and record.user_id is not None:
            yield from self._index_update(record.user_id, _remove(handle))
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
        s = Session(self, None, client_ip=client_ip, user_agent=user_agent)
        s._start_fresh(None)
        s._data = dict(data)
        s._meta_dirty = True
        if user_id is not None:
            s._user_id = str(user_id)
            s._authenticated_at = self.clock.now()
        if persistent is not None:
            s._persistent = persistent
        yield from self._create(s, s._data, self.clock.now())
        if s._id is None:  # pragma: no cover
            raise StoreError("session creation returned no ID")
        return s._id

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
        return self._cookie_text(session_id)

    def _set_cookie_for(self, session_id: str, raw: bytes | None) -> str:
        record = None if raw is None else self._decode_or_none(raw)
        now = self.clock.now()
        if not isinstance(record, SessionRecord) or liveness(record, now, self.config) is not (
            Liveness.LIVE
        ):
            raise BadToken("no live session has this ID")
        line = self._set_cookie(session_id, record, now).set_cookie
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
        key = record_key(handle)
        for attempt in range(_MAX_RETRIES):
            if attempt:
                yield backoff(attempt)
            raw = yield Get(key)
            found = None if raw is None else self._decode_or_none(raw)
            now = self.clock.now()
            if isinstance(found, Tombstone):
                if found.successor is None or now >= found.until:
                    return False
                key = record_key(found.successor)
                continue
            if not isinstance(found, SessionRecord) or (
                liveness(found, now, self.config) is not Liveness.LIVE
            ):
                return False
            data = json.loads(encode_data(found.data))  # the change gets its own copy
            change(data)
            for name, value in data.items():
                check_session_value(name, value)
            updated = dataclasses.replace(found, data=data)
            value = encode_record(updated, max_bytes=self.config.max_bytes)
            if (yield CompareAndSet(key, raw, value, self._ttl(updated, now))):
                return True
        raise StoreBusy(f"session update lost {_MAX_RETRIES} races in a row")

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
        session._end()
        await self.run(self.save_flow(session))

    def end_sync(self, session: Session) -> None:
        """:meth:`end` through the store's sync side (blocking)."""
        self.load_sync(session)
        session._end()
        self.run_sync(self.save_flow(session))

    async def destroy(self, session_id: str) -> bool:
        """Delete the session with ``session_id`` (and its registry entry); says if it existed."""
        removed: bool = await self.run(self.destroy_flow(session_id))
        if removed:
            self._audit_destroyed(None, "destroy")
        return removed

    def destroy_sync(self, session_id: str) -> bool:
        removed: bool = self.run_sync(self.destroy_flow(session_id))
        if removed:
            self._audit_destroyed(None, "destroy")
        return removed

    async def list_sessions(
        self, user_id: str | int, *, current: str | None = None
    ) -> list[SessionInfo]:
        """``user_id``'s live sessions, oldest first; ``current`` (a handle) is flagged."""
        found: list[SessionInfo] = await self.run(self.list_sessions_flow(str(user_id), current))
        return found

    def list_sessions_sync(
        self, user_id: str | int, *, current: str | None = None
    ) -> list[SessionInfo]:
        found: list[SessionInfo] = self.run_sync(self.list_sessions_flow(str(user_id), current))
        return found

    async def revoke(self, user_id: str | int, handle: str) -> bool:
        """Revoke one of ``user_id``'s sessions by handle. Says whether it was live."""
        count: int = await self.run(self.revoke_flow(str(user_id), _only(handle)))
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
        return self.revoke_flow(user_id, _all_but(keep), everywhere=True, keep=keep)

    def revoke_sync(self, user_id: str | int, handle: str) -> bool:
        count: int = self.run_sync(self.revoke_flow(str(user_id), _only(handle)))
        return count == 1

    def revoke_others_sync(self, user_id: str | int, keep_handle: str | None) -> int:
        count: int = self.run_sync(self._revoke_others_flow(str(user_id), keep_handle))
        return count

    def revoke_all_sync(self, user_id: str | int) -> int:
        count: int = self.run_sync(self._revoke_others_flow(str(user_id), None))
        return count


def _bound_user(session: Session) -> str | None:
    """The user of the record a load has just adopted (``None``: anonymous, or not adopted)."""
    record = session._record
    return None if record is None or session._key is None else record.user_id


def _worth_storing(session: Session) -> bool:
    """Whether a session with no stored record needs one: it holds data, a login or a rotation.

    A setting alone (``persistent``, ``modified = True``: Flask apps set both on every request,
    a bot's included) is not enough, as Flask sets no cookie for an empty session: storing it
    would let anonymous traffic write a record per request. The setting applies when the first
    value is written."""
    return bool(session._data) or session._rotate is not None or session._user_id is not None


def _skip_save(session: Session, status: int) -> SaveResult | None:
    """The save's answer when it must not write at all: untouched, not loaded, or a 5xx with
    no logout or rotation pending (``None``: go on and save)."""
    if not session.accessed:
        return _NOTHING
    if status >= 500:
        if session._keep_only_lifecycle():
            return None
        session.discard()
        return _VARY_ONLY
    if not session.loaded:
        return _VARY_ONLY
    return None


_IndexChange = Callable[[SessionIndex], "list[str] | None"]
"""A change to a user's index; returns the handles it pushed out (to destroy), if any."""


def _add(handle: str, record: SessionRecord, now: float) -> _IndexChange:
    def change(index: SessionIndex) -> list[str]:
        return index.add(handle, created=now, ip=record.ip, ua=record.user_agent)

    return change


def _remove(*handles: str) -> _IndexChange:
    def change(index: SessionIndex) -> None:
        for handle in handles:
            index.entries.pop(handle, None)

    return change


def _replace(old: str, new: str, record: SessionRecord, now: float) -> _IndexChange:
    def change(index: SessionIndex) -> list[str]:
        previous = index.entries.pop(old, None)
        created = now if previous is None else float(previous.get("created", now))
        return index.add(new, created=created, ip=record.ip, ua=record.user_agent)

    return change


def _only(handle: str) -> Callable[[SessionIndex], list[str]]:
    return lambda index: [handle] if handle in index.entries else []


def _all_but(keep: str | None) -> Callable[[SessionIndex], list[str]]:
    return lambda index: [h for h in index.entries if h != keep]
