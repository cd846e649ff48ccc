"""Flask extension: server-side sessions behind ``flask.session``.

::

    from flask import Flask, session
    from bastion.flask import Bastion, login

    app = Flask(__name__)
    Bastion(app, store="redis://localhost:6379/0")      # or Bastion().init_app(app)

    @app.post("/cart")
    def add():
        session["cart"] = [*session.get("cart", []), request.form["item"]]
        ...

Existing code keeps using ``flask.session``: the extension installs a session interface whose
session object is bastion's :class:`~bastion.engine.sessions.Session` (a Flask
``SessionMixin``). It is driven by the synchronous engine driver on the store's sync side, so
no event loop is involved. Settings come from the arguments, else from ``app.config``:
``BASTION_SESSION_STORE`` (a store URL), ``BASTION_SESSION_CONFIG`` (a
:class:`~bastion.core.sessions.SessionConfig`) and ``BASTION_KEYRING``.

Lifecycle helpers: :func:`login`, :func:`logout`, :func:`regenerate` act on the current
session; :func:`session_engine` gives the engine (``create``, ``destroy_sync``,
``list_sessions_sync``, ``revoke_*_sync``). A store outage while the session is read or saved
answers ``503`` with an audit event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from flask import Flask, current_app, request
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin

from bastion.core.clock import system_clock
from bastion.core.cookies import parse_cookie
from bastion.engine.sessions import Session, SessionEngine
from bastion.errors import ConfigurationError, StoreUnavailable
from bastion.flask._data import tuples_as_lists
from bastion.flask.csrf import CSRF, csrf_input, csrf_token
from bastion.wsgi.sessions import build_engine, response_headers, unavailable_response

if TYPE_CHECKING:
    from collections.abc import Callable

    from flask import Request, Response

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.core.sessions import SessionConfig, SessionRecord
    from bastion.stores.base import Store

__all__ = [
    "CSRF",
    "Bastion",
    "FlaskSession",
    "SessionInterfaceAdapter",
    "csrf_input",
    "csrf_token",
    "login",
    "logout",
    "regenerate",
    "session_engine",
]

_EXTENSION: Final = "bastion"


class FlaskSession(Session, SessionMixin):
    """bastion's session as Flask sees it. ``permanent`` maps to ``persistent``.

    Tuples are stored as lists (``flash()`` writes tuples; see :mod:`bastion.flask._data`).
    """

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, tuples_as_lists(value))

    def setdefault(self, key: str, default: Any = None) -> Any:
        # MutableMapping's would return ``default`` itself, not the list stored for a tuple.
        if key not in self:
            self[key] = default
        return self[key]

    @property
    def new(self) -> bool:  # type: ignore[override]
        return self.is_new

    @property
    def permanent(self) -> bool:
        return self.persistent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self.persistent = value


class SessionInterfaceAdapter(SessionInterface):
    """Flask's session interface over a :class:`SessionEngine` (sync driver)."""

    def __init__(self, engine: SessionEngine) -> None:
        self.engine = engine

    def open_session(self, app: Flask, request: Request) -> FlaskSession:  # noqa: ARG002 (Flask's signature)
        engine = self.engine
        environ = request.environ
        # bastion's own parser, as the ASGI and WSGI middlewares use: request.cookies would
        # build werkzeug's whole cookie MultiDict on every request.
        cookie = parse_cookie(environ.get("HTTP_COOKIE") or "").get(engine.config.name)
        return FlaskSession(
            engine,
            cookie or None,
            client_ip=environ.get("REMOTE_ADDR"),
            # The raw header: request.user_agent would build a parsed UserAgent per request.
            user_agent=environ.get("HTTP_USER_AGENT") or None,
            loader=engine.load_sync,
        )

    def is_null_session(self, obj: object) -> bool:  # noqa: ARG002 (Flask's signature)
        return False

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:  # noqa: ARG002 (Flask's signature)
        if not isinstance(session, Session):
            return
        try:
            result = self.engine.save_sync(session, status=response.status_code)
        except StoreUnavailable:
            self.engine.audit_unavailable(session, "save")
            _make_unavailable(response)
            return
        headers = response.headers
        if result.vary:
            # Edited as text: response.vary would parse the header into a HeaderSet and back.
            vary = headers.get("Vary")
            if not vary:
                headers["Vary"] = "Cookie"
            elif "cookie" not in vary.lower() and vary.strip() != "*":
                headers["Vary"] = vary + ", Cookie"
        for name, value in response_headers(result):
            if name == "Cache-Control":
                headers[name] = value
            else:
                headers.add(name, value)


def _make_unavailable(response: Response) -> None:
    """Turn ``response`` into the 503 (Flask's save hook can only change the response)."""
    status, headers, body = unavailable_response(
        request.headers.get("Accept"), request.headers.get("Content-Type")
    )
    response.status = status
    response.set_data(body)
    for name in ("Set-Cookie", "Vary", "Location"):
        response.headers.pop(name, None)
    for name, value in headers:
        response.headers[name] = value


class Bastion:
    """The Flask extension. ``Bastion(app, store=...)`` or ``Bastion(store=...).init_app(app)``.

    Arguments left out are read from ``app.config`` (see the module docstring); ``production``
    defaults to ``ENV`` / ``BASTION_ENV``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: Store | str | None = None,
        config: SessionConfig | None = None,
        keyring: KeyRing | SecretKey | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
        user_loader: Callable[[str], Any] | None = None,
        session_filter: Callable[[SessionRecord], bool] | None = None,
    ) -> None:
        self._user_loader = user_loader
        self._session_filter = session_filter
        self._store = store
        self._config = config
        self._keyring = keyring
        self._auditor = auditor
        self._clock = clock
        self._production = production
        self.engine: SessionEngine | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        store = self._store if self._store is not None else app.config.get("BASTION_SESSION_STORE")
        if store is None:
            raise ConfigurationError(
                "bastion.flask.Bastion needs a session store: pass store='sqlite:///app.db' "
                "(or a Store) or set app.config['BASTION_SESSION_STORE']",
                setting="BASTION_SESSION_STORE",
            )
        engine = build_engine(
            store=store,
            config=self._config or app.config.get("BASTION_SESSION_CONFIG"),
            keyring=self._keyring or app.config.get("BASTION_KEYRING"),
            auditor=self._auditor,
            clock=self._clock,
            production=self._production,
            user_loader=self._user_loader,
            session_filter=self._session_filter,
        )
        self.engine = engine
        app.session_interface = SessionInterfaceAdapter(engine)
        app.extensions[_EXTENSION] = self
        app.register_error_handler(StoreUnavailable, _unavailable_handler)

    def __repr__(self) -> str:
        return f"Bastion(engine={self.engine!r})"


def _unavailable_handler(error: StoreUnavailable) -> Any:
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, Session) or session.loaded or not session.accessed:
        raise error  # not a session load: the app's own failure, handled as Flask would
    session_engine().audit_unavailable(session, "load")
    status, headers, body = unavailable_response(
        request.headers.get("Accept"), request.headers.get("Content-Type")
    )
    return body, status, headers


def session_engine() -> SessionEngine:
    """The engine of the current app's :class:`Bastion` extension."""
    extension = current_app.extensions.get(_EXTENSION)
    if not isinstance(extension, Bastion) or extension.engine is None:
        raise ConfigurationError(
            "bastion.flask.Bastion is not set up on this app; call Bastion(app, store=...)",
            setting="extension",
        )
    return extension.engine


def _current() -> Session:
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, Session):
        session_engine()
        raise ConfigurationError("flask.session is not a bastion session", setting="extension")
    return session


def login(user_id: str | int, *, remember: bool | None = None) -> None:
    """Rotate the session ID and CSRF secret and bind ``user_id`` (see ``Session.login``)."""
    _current().login(user_id, remember=remember)


def logout() -> None:
    """Delete the session's server data and expire its cookie."""
    _current().logout()


def regenerate() -> None:
    """A new session ID for the same data (after a privilege change)."""
    _current().regenerate()
