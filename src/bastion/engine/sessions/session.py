"""The session a handler sees: a mapping of JSON values plus lifecycle operations.

:class:`Session` holds a core :class:`~bastion.core.sessions.SessionState` and does no I/O of
its own: the adapter gives it a *loader*, called on first touch, and asks the
:class:`~bastion.engine.sessions.SessionEngine` to save it when the response starts. Every
mutation goes through the state's methods; the engine reads and updates the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from bastion.core.sessions.record import check_session_value
from bastion.core.sessions.state import SessionState, diff
from bastion.errors import ConfigurationError, SessionStateError, StoreError

if TYPE_CHECKING:
    from bastion.engine.sessions.engine import SessionEngine

__all__ = ["Session"]


class Session(MutableMapping[str, Any]):
    """The session of one request: a mapping of JSON values plus lifecycle operations.

    Loaded on first touch (``session["x"]``, ``len(session)``, ``session.id`` ...) through the
    loader the adapter installed; never loaded when untouched. Values are checked at assignment
    (:func:`~bastion.core.sessions.check_session_value`). Changes to nested values
    (``session["cart"].append(x)``) are seen too: the save compares the data with what was
    loaded.
    """

    __slots__ = (
        "_engine",
        "_loader",
        "_no_response",
        "_state",
        "_user",
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
        self._state = SessionState(cookie_value, engine.config.persistent)
        self._loader = loader
        self._no_response: str | None = None
        self._user: tuple[str, Any] | None = None
        self.client_ip = client_ip
        self.user_agent = user_agent

    # -- loading ----------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._state.loaded

    @property
    def accessed(self) -> bool:
        """Whether the handler touched the session (an untouched one is never saved)."""
        return self._state.accessed

    @accessed.setter
    def accessed(self, value: bool) -> None:
        self._state.accessed = value

    @property
    def has_cookie(self) -> bool:
        """Whether the request carried a session cookie (valid or not). No I/O."""
        return self._state.cookie_value is not None

    def _ensure(self) -> None:
        state = self._state
        state.accessed = True
        if state.loaded:
            return
        if state.cookie_value is None:
            state.start_fresh(None)
            return
        loader = self._loader
        if loader is None:
            raise StoreError(
                "this session was not loaded and has no synchronous loader: await "
                "load_session(request) first, or use a store with a sync side"
            )
        loader(self)

    # -- the mapping --------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        self._ensure()
        return self._state.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        check_session_value(key, value)
        self._ensure()
        self._state.data[key] = value

    def __delitem__(self, key: str) -> None:
        self._ensure()
        del self._state.data[key]

    def __iter__(self) -> Iterator[str]:
        self._ensure()
        return iter(self._state.data)

    def __len__(self) -> int:
        self._ensure()
        return len(self._state.data)

    def __contains__(self, key: object) -> bool:
        self._ensure()
        return key in self._state.data

    def get(self, key: str, default: Any = None) -> Any:
        self._ensure()
        return self._state.data.get(key, default)

    def clear(self) -> None:
        """Empty the session. On a stored or logged-in session this is :meth:`logout`: the
        login, the ID and the CSRF secret end with the data (``request.session.clear()`` and
        ``flask.session.clear()`` are the idiomatic logout). Values set afterwards start a new
        session under a new ID (Flask's ``session.clear(); session["user_id"] = ...``)."""
        self._ensure()
        if self._state.key is not None or self._state.user_id is not None:
            self._lifecycle("clear")
            self._end()
        else:
            self._state.data.clear()

    def replace(self, data: Mapping[str, Any]) -> None:
        """Replace all the data with ``data``, keeping the session, its ID and its login."""
        for key, value in data.items():
            check_session_value(key, value)
        self._ensure()
        self._state.data.clear()
        self._state.data.update(data)

    def __repr__(self) -> str:
        state = "loaded" if self._state.loaded else "not loaded"
        return f"<Session {state}, {len(self._state.data)} keys>"

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
        return self._state.id

    @property
    def handle(self) -> str | None:
        """The non-secret name of this session in the store and the user's registry.

        Within a renewal's grace window (a request sent with the previous cookie) this is the
        handle of the renewed record the request uses, not of the tombstone its cookie names:
        "log out other devices" from such a request keeps the caller's own session.
        """
        self._ensure()
        return self._state.handle

    @property
    def is_new(self) -> bool:
        self._ensure()
        return self._state.key is None

    @property
    def user_id(self) -> str | None:
        self._ensure()
        return self._state.user_id

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
        return self._state.authenticated_at

    @property
    def csrf_secret(self) -> str:
        """The per-session CSRF secret (created on first use, rotated by :meth:`login`).

        A visitor without a stored session gets a pre-session cookie instead of a store write
        (:data:`~bastion.core.sessions.PRESESSION_PREFIX`): the secret is derived from it, and
        the session record, once a real write creates it, keeps that secret.
        """
        self._ensure()
        return self._state.issue_csrf_secret()

    def verification_csrf_secret(self) -> str | None:
        """The secret a submitted CSRF token is checked against, without issuing one: the
        stored session's, or the pre-session cookie's; ``None`` when the request has neither
        (the token cannot belong to this client)."""
        self._ensure()
        return self._state.verification_secret()

    @property
    def persistent(self) -> bool:
        """Whether the cookie outlives the browser session ("remember me")."""
        self._ensure()
        return self._state.persistent

    @persistent.setter
    def persistent(self, value: bool) -> None:
        self._ensure()
        if value != self._state.persistent:
            self._state.persistent = bool(value)
            self._state.meta_dirty = True

    @property
    def modified(self) -> bool:
        """Whether the save will write (data changed, lifecycle call, metadata changed)."""
        if not self._state.loaded:
            return False
        if self._state.meta_dirty or self._state.rotate is not None or self._state.logout:
            return True
        changed, removed = diff(self._state)
        return bool(changed or removed)

    @modified.setter
    def modified(self, value: bool) -> None:
        # Flask code sets ``session.modified = True`` after changing a nested value. The save
        # finds nested changes by itself; True also forces a write (and an idle refresh).
        if value:
            self._ensure()
            self._state.meta_dirty = True

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
        self._state.login(str(user_id), self._engine.clock.now(), remember=remember)

    def end_login(self) -> None:
        """Forget the logged-in user but keep the session and its data: a new ID (the old one
        dies), a new CSRF secret, no user, no ``authenticated_at``; the session leaves the
        user's registry. Used when a new login starts on a session that is logged in, so that
        the previous user's access never coexists with the new attempt."""
        self._lifecycle("end_login")
        self._ensure()
        self._state.end_login()

    def regenerate(self) -> None:
        """Issue a new ID for the same data (after a privilege change); the old ID dies."""
        self._lifecycle("regenerate")
        self._ensure()
        self._state.regenerate()

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
        self._state.end()

    # The adapter calls this when it cannot save (5xx): nothing is written.
    def discard(self) -> None:
        self._state.discard()
