"""``protect(app, ...)``: bastion's WSGI middlewares around an app, in the one documented order.

::

    SecurityHeadersMiddleware      outermost: every response carries the headers, including
      RateLimitMiddleware          bastion's own 403 / 429 / 503 refusals
        SessionMiddleware          (only when configured)
          CSRFMiddleware           reads the session's CSRF secret
            app

Why this order: the headers layer must see every response, so it is outermost. Rate limiting
comes before any store read the session would do, so a flood is refused cheaply. The session
must exist before CSRF checks a synchronizer token, and a CSRF refusal still passes through the
session layer (which then writes nothing).

Each layer is optional (``headers=None``, ``rate_limit=None``, ``store=None``, ``csrf=False``)
and each is an ordinary middleware, usable alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from bastion.core.clock import Clock, system_clock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.headers import Preset
from bastion.errors import ConfigurationError
from bastion.wsgi.csrf import CSRFMiddleware
from bastion.wsgi.headers import SecurityHeadersMiddleware
from bastion.wsgi.sessions import SessionMiddleware

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.core.audit import Auditor
    from bastion.core.headers import HeaderPolicy
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.core.sessions import SessionConfig
    from bastion.stores.base import Store
    from bastion.wsgi.csrf import IdentityFunc, WSGIApp

__all__ = ["protect"]


def protect(
    app: WSGIApp,
    *,
    store: Store | str | None = None,
    sessions: SessionConfig | None = None,
    csrf: CSRFConfig | Literal[False] | None = None,
    headers: HeaderPolicy | Preset | str | None = Preset.STRICT,
    header_overrides: Mapping[str, HeaderPolicy | Preset | str] | None = None,
    rate_limit: Mapping[str, Any] | None = None,
    keyring: KeyRing | SecretKey | None = None,
    identity: IdentityFunc | None = None,
    auditor: Auditor | None = None,
    clock: Clock = system_clock,
    production: bool | None = None,
) -> WSGIApp:
    """Wrap ``app`` in bastion's middlewares (see the module docstring) and return the result.

    * ``store``: a store or URL; turns server-side sessions on (``sessions`` configures them).
    * ``csrf``: a :class:`~bastion.core.csrf.CSRFConfig`, ``None`` for the defaults, ``False``
      to leave CSRF off. The default token source (the session) needs ``store``.
    * ``headers``: a policy or preset name; ``None`` leaves security headers off.
    * ``rate_limit``: keyword arguments of
      :class:`~bastion.wsgi.ratelimit.RateLimitMiddleware` (``limiter=``, ``rules=``, ...);
      ``None`` leaves rate limiting off.
    * ``keyring``, ``auditor``, ``clock`` and ``production`` are shared by every layer.
    """
    wrapped: WSGIApp = app
    if csrf is not False:
        config = CSRFConfig() if csrf is None else csrf
        if config.token_source is TokenSource.SESSION and store is None:
            raise ConfigurationError(
                "protect(): CSRF tokens live in the session by default, so pass store= "
                "(for example store='sqlite:///app.db'), or csrf=CSRFConfig(token_source="
                "TokenSource.DOUBLE_SUBMIT) with keyring=, or csrf=False",
                setting="store",
            )
        wrapped = CSRFMiddleware(
            wrapped,
            config=config,
            keyring=keyring,
            identity=identity,
            auditor=auditor,
            clock=clock,
            production=production,
        )
    if store is not None:
        wrapped = SessionMiddleware(
            wrapped,
            store=store,
            config=sessions,
            keyring=keyring,
            auditor=auditor,
            clock=clock,
            production=production,
        )
    elif sessions is not None:
        raise ConfigurationError(
            "protect(): sessions= was given without store=; pass store='sqlite:///app.db' "
            "(or another store URL)",
            setting="store",
        )
    if rate_limit is not None:
        # Imported here: rate limiting is optional, and its module pulls in its own engine.
        from bastion.wsgi.ratelimit import RateLimitMiddleware  # noqa: PLC0415

        wrapped = RateLimitMiddleware(wrapped, **rate_limit)
    if headers is not None:
        wrapped = SecurityHeadersMiddleware(
            wrapped,
            headers,
            overrides=header_overrides,
            auditor=auditor,
            clock=clock,
            production=production,
        )
    return wrapped
