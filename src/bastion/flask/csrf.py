"""CSRF protection for Flask: the WSGI :class:`~bastion.wsgi.csrf.CSRFMiddleware` around
``app.wsgi_app`` plus ``csrf_token()`` / ``csrf_input()`` in templates.

:func:`bastion.flask.protect` installs it, once, from the ``Bastion`` configuration::

    runtime = bastion.flask.protect(app, bastion.Bastion(store="sqlite:///app.db", ...))

    # template: <form method="post">{{ csrf_input() }} ...</form>
    # JavaScript: fetch(url, {method: "POST", headers: {"X-CSRF-Token": "{{ csrf_token() }}"}})

The checks run before Flask sees the request, so a refusal costs no view, no session save and
no form parsing; a form body read to find the token is handed to Flask unchanged. :class:`CSRF`
is the layer alone, for an app that wires Flask itself (``CSRF(app, config=..., keyring=...)``);
with ``TokenSource.SESSION`` it needs bastion's sessions on the app first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from flask import current_app, request
from flask import session as flask_session
from markupsafe import Markup

from bastion.core.clock import system_clock
from bastion.core.csrf import CSRFConfig, TokenSource, mask_secret, secret_from_text
from bastion.engine.sessions import Session
from bastion.errors import ConfigurationError
from bastion.wsgi.csrf import ENVIRON_KEY, CSRFContext, CSRFMiddleware

if TYPE_CHECKING:
    from flask import Flask

    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.wsgi.csrf import IdentityFunc

__all__ = ["CSRF", "csrf_input", "csrf_token"]

_EXTENSION: Final = "bastion.csrf"


class CSRF:
    """The Flask CSRF extension: ``CSRF(app)`` or ``CSRF().init_app(app)``.

    With ``TokenSource.SESSION`` (default) bastion's sessions must be on the app first
    (:func:`bastion.flask.protect` does both in order).
    ``proxies`` is the app's :class:`~bastion.core.client.TrustedProxies` (see the WSGI
    middleware).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        config: CSRFConfig | None = None,
        keyring: KeyRing | SecretKey | None = None,
        identity: IdentityFunc | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self._config = config
        self._keyring = keyring
        self._identity = identity
        self._auditor = auditor
        self._clock = clock
        self._production = production
        self._proxies = proxies
        self.middleware: CSRFMiddleware | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        config = self._config or CSRFConfig()
        if not isinstance(config, CSRFConfig):
            raise ConfigurationError("config must be a CSRFConfig", setting="config")
        engine = None
        if config.token_source is TokenSource.SESSION:
            extension = app.extensions.get("bastion")
            engine = getattr(extension, "engine", None)
            if engine is None:
                raise ConfigurationError(
                    "CSRF with token_source=SESSION keeps its secret in bastion's session: use "
                    "bastion.flask.protect(app, Bastion(store=...)), which sets up sessions "
                    "first, or token_source=TokenSource.DOUBLE_SUBMIT with a keyring",
                    setting="token_source",
                )
        self.middleware = CSRFMiddleware(
            app.wsgi_app,
            config=config,
            keyring=self._keyring,
            identity=self._identity,
            auditor=self._auditor,
            clock=self._clock,
            production=self._production,
            session_engine=engine,
            proxies=self._proxies,
        )
        app.wsgi_app = self.middleware  # type: ignore[method-assign]
        app.extensions[_EXTENSION] = self
        app.jinja_env.globals["csrf_token"] = csrf_token
        app.jinja_env.globals["csrf_input"] = csrf_input

    @property
    def field_name(self) -> str:
        return "csrf_token" if self.middleware is None else self.middleware.config.field_name

    def __repr__(self) -> str:
        return f"CSRF(middleware={self.middleware!r})"


def _extension() -> CSRF:
    extension = current_app.extensions.get(_EXTENSION)
    if not isinstance(extension, CSRF) or extension.middleware is None:
        raise ConfigurationError(
            "bastion.flask.CSRF is not set up on this app; call CSRF(app)", setting="extension"
        )
    return extension


def csrf_token() -> str:
    """A masked CSRF token for the current request (new text on every call)."""
    middleware = _extension().middleware
    if middleware is not None and middleware.double_submit is None:
        session = flask_session._get_current_object()  # type: ignore[attr-defined]
        if not isinstance(session, Session):
            raise ConfigurationError(
                "flask.session is not a bastion session; use bastion.flask.protect(app, "
                "Bastion(store=...))",
                setting="extension",
            )
        return mask_secret(secret_from_text(session.csrf_secret))
    context = request.environ.get(ENVIRON_KEY)
    if not isinstance(context, CSRFContext):  # pragma: no cover - the middleware always sets it
        raise ConfigurationError("no CSRF context on this request", setting="extension")
    return context.token()


def csrf_input() -> Markup:
    """A hidden ``<input>`` carrying a token, safe to put in a template as it is."""
    name = _extension().field_name
    return Markup(f'<input type="hidden" name="{name}" value="{csrf_token()}">')  # noqa: S704 (base64url token, validated field name)
