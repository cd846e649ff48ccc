"""bastion for Flask: ``protect(app, config)`` and ``flask.session`` as a server-side session.

::

    from flask import Flask, session
    import bastion, bastion.flask

    app = Flask(__name__)
    runtime = bastion.flask.protect(app, bastion.Bastion(store="sqlite:///app.db", ...))

    @app.post("/cart")
    def add():
        session["cart"] = [*session.get("cart", []), request.form["item"]]
        ...

    @app.post("/login")
    def sign_in():
        ...
        session.login(user_id)          # a new session ID and CSRF secret

Existing code keeps using ``flask.session``: :func:`protect` installs a session interface whose
session object is bastion's :class:`~bastion.engine.sessions.Session` (a Flask
``SessionMixin``: ``session.login()``, ``session.logout()``, ``session.regenerate()``). It is
driven by the synchronous engine driver on the store's sync side, so no event loop is involved.
CSRF is checked once, before Flask sees the request; templates get ``csrf_token()`` and
``csrf_input()``. Security headers and rate limits wrap ``app.wsgi_app``. A store outage while
the session is read or saved answers ``503`` with an audit event. :func:`session_engine` gives
the engine of the current app (``create``, ``destroy_sync``, ``list_sessions_sync``, ...), as
does ``runtime.sessions``. Access tokens: :func:`bearer_required` and :func:`principal`
(:mod:`bastion.flask.bearer`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from flask import Flask, current_app, request
from flask import session as flask_session
from flask.sessions import SessionInterface, SessionMixin

from bastion.core.cookies import parse_cookie
from bastion.core.request_limits import RequestLimitExceeded
from bastion.core.vary import merge_vary_text
from bastion.engine.sessions import Session, SessionEngine
from bastion.errors import AuditUnavailable, ConfigurationError, StoreUnavailable
from bastion.flask._data import tuples_as_lists
from bastion.flask.bearer import bearer_required, init_bearer, principal
from bastion.flask.csrf import _EXTENSION as CSRF_EXTENSION
from bastion.flask.csrf import CSRF, csrf_input, csrf_token
from bastion.runtime import Layers, as_runtime
from bastion.wsgi._http import audit_unavailable
from bastion.wsgi.headers import add_jinja2_globals as add_nonce_global
from bastion.wsgi.protect import LAYERS, limited
from bastion.wsgi.sessions import (
    client_address,
    response_headers,
    sync_engine,
    unavailable_response,
)

if TYPE_CHECKING:
    from flask import Request, Response

    from bastion.config import Bastion
    from bastion.core.client import TrustedProxies
    from bastion.runtime import Runtime
    from bastion.wsgi.types import WSGIApp

__all__ = [
    "FlaskSession",
    "SessionInterfaceAdapter",
    "bearer_required",
    "csrf_input",
    "csrf_token",
    "init_bearer",
    "principal",
    "protect",
    "session",
    "session_engine",
]

logger = logging.getLogger("bastion.security.audit")

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


session: FlaskSession = flask_session  # type: ignore[assignment]
"""``flask.session``, typed as bastion's session: ``session.login(user_id)`` type-checks.

The same proxy object as ``flask.session``, not a second session: either name reaches the
current request's session.
"""


class SessionInterfaceAdapter(SessionInterface):
    """Flask's session interface over a :class:`SessionEngine` (sync driver)."""

    def __init__(self, engine: SessionEngine, *, proxies: TrustedProxies | None = None) -> None:
        self.engine = engine
        self.proxies = proxies if proxies is not None and proxies.trusts_any else None

    def open_session(self, app: Flask, request: Request) -> FlaskSession:  # noqa: ARG002 (Flask's signature)
        engine = self.engine
        environ = request.environ
        # bastion's own parser, as the ASGI and WSGI middlewares use: request.cookies would
        # build werkzeug's whole cookie MultiDict on every request.
        cookie = parse_cookie(environ.get("HTTP_COOKIE") or "").get(engine.config.name)
        return FlaskSession(
            engine,
            cookie or None,
            client_ip=client_address(environ, self.proxies),
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
            merged = merge_vary_text(vary or "", "Cookie")
            if merged is not None:
                headers["Vary"] = merged
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


class _Extension:
    """What :func:`protect` leaves in ``app.extensions["bastion"]``."""

    __slots__ = ("engine", "runtime")

    def __init__(self, runtime: Runtime, engine: SessionEngine | None) -> None:
        self.runtime = runtime
        self.engine = engine


def protect(app: Flask, config: Bastion | Runtime) -> Runtime:
    """Protect a Flask app with ``config`` and return the runtime (``runtime.throttle``,
    ``runtime.sessions`` for the session registry, ``runtime.close()``).

    * sessions (with ``Bastion(store=...)``): ``flask.session`` becomes bastion's server-side
      session (``session.login(user_id)``, ``session.logout()``);
    * CSRF: checked before Flask sees the request, once (the token in ``flask.session``);
      ``csrf_token()`` and ``csrf_input()`` in templates;
    * security headers, CORS and rate limits: the WSGI layers around ``app.wsgi_app``, in the order
      of :mod:`bastion.runtime`; ``csp_nonce()`` in templates;
    * authorization (with ``Bastion(authz=...)``): the route table before each view, and the
      authorizer for ``bastion.flask.authz.require_permission`` and ``require_owner``.
    """
    if _EXTENSION in app.extensions:
        # A second call would stack a second CSRF check and a second set of layers (and, from a
        # Bastion, a second runtime with its own store) around the first.
        raise ConfigurationError(
            f"bastion.flask.protect() was already called on the Flask app {app.name!r}; call "
            "it once (build the configuration once and pass it, or its runtime, to that call)",
            setting="app",
        )
    runtime = as_runtime(config)
    # A refusal part-way (a layer's production check) must leave the app as it was: an app
    # that caught the error would otherwise serve bastion's sessions without the CSRF check.
    interface, wsgi_app = app.session_interface, app.wsgi_app
    try:
        _install(app, runtime)
    except BaseException:
        app.session_interface = interface
        app.wsgi_app = wsgi_app  # type: ignore[method-assign]
        app.extensions.pop(_EXTENSION, None)
        app.extensions.pop(CSRF_EXTENSION, None)
        raise
    if runtime.sessions is not None:
        app.register_error_handler(StoreUnavailable, _unavailable_handler)
    # A body over its cap or its time raises in the view (or in the CSRF check): answered
    # here, not logged as a crash; the limits layer outside replaces this with its refusal.
    app.register_error_handler(RequestLimitExceeded, _limit_handler)
    # Fail-closed auditing refusing an event raised in a view (a decorator's denial, the
    # app's own event): the action was not done, a 503 rather than Flask's 500.
    app.register_error_handler(AuditUnavailable, _audit_handler)
    return runtime


def _install(app: Flask, runtime: Runtime) -> None:
    engine = None
    if runtime.sessions is not None:
        engine = sync_engine(runtime.sessions)
        app.session_interface = SessionInterfaceAdapter(engine, proxies=runtime.proxies)
    app.extensions[_EXTENSION] = _Extension(runtime, engine)
    if runtime.config.csrf is not None:
        CSRF(
            app,
            config=runtime.config.csrf,
            proxies=runtime.proxies,
            keyring=runtime.keyring,
            identity=runtime.config.csrf_identity,
            auditor=runtime.auditor,
            clock=runtime.config.clock,
            production=runtime.production,
        )
    if runtime.config.headers is not None:
        add_nonce_global(app.jinja_env)  # {{ csp_nonce() }}
    if runtime.config.authz is not None:
        # Inside Flask's request context, where flask.session is bastion's session: the route
        # table as a before_request hook, and the authorizer for the decorators.
        from bastion.flask.authz import EXTENSION, init_authz  # noqa: PLC0415

        if runtime.authz.routes.rules:
            init_authz(app, runtime.authz, proxies=runtime.proxies)
        else:
            app.extensions[EXTENSION] = runtime.authz
    inner: WSGIApp = app.wsgi_app
    # The request limits around the Flask app (its CSRF check reads forms), inside the rest.
    wrapped = runtime.compose(limited(runtime, inner), _OUTER)
    app.wsgi_app = wrapped  # type: ignore[method-assign, assignment]


# Sessions are Flask's session interface and CSRF the extension above; the WSGI layers add the
# rest around app.wsgi_app.
_OUTER: Final[Layers[WSGIApp]] = Layers(
    headers=LAYERS.headers,
    cors=LAYERS.cors,
    rate_limit=LAYERS.rate_limit,
    sessions=None,
    csrf=None,
    bearer=LAYERS.bearer,
)


def _limit_handler(error: RequestLimitExceeded) -> Any:
    return "", error.reason.status


def _audit_handler(error: AuditUnavailable) -> Any:
    logger.warning("bastion: %s; answered 503 audit_unavailable", error)
    headers, body = audit_unavailable(request.environ)
    return body, 503, headers


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
    """The session engine of the current app (set up by :func:`protect`)."""
    extension = current_app.extensions.get(_EXTENSION)
    if not isinstance(extension, _Extension) or extension.engine is None:
        raise ConfigurationError(
            "bastion sessions are not set up on this app; call "
            "bastion.flask.protect(app, Bastion(store=...))",
            setting="extension",
        )
    return extension.engine
