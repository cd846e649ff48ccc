"""The composition behind ``bastion.asgi.protect`` and ``bastion.wsgi.protect``, written once.

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
and each is an ordinary middleware, usable alone. The adapters pass their own middleware
classes in a :class:`Layers`; this module decides which to build and in which order.

Turning a protection off is an opt-out and is logged (``bastion.security.protect``):
``headers=None`` (the app or a proxy must send the headers) and ``csrf=False``. ``csrf=False``
together with ``store=`` (cookie sessions with no CSRF check at all) is refused under
``ENV=production``: a page on any site could post with the user's session cookie.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.environment import is_production
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.headers import HeaderPolicy, Preset
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.core.sessions import SessionConfig
    from bastion.stores.base import Store

__all__ = ["Layers", "compose"]

App = TypeVar("App")

logger = logging.getLogger("bastion.security.protect")


@dataclass(frozen=True, slots=True)
class Layers(Generic[App]):
    """One adapter family's middleware classes. ``rate_limit`` is a loader: rate limiting is
    optional and its module pulls in its own engine, so it is imported only when asked for."""

    headers: Callable[..., App]
    rate_limit: Callable[[], Callable[..., App]]
    sessions: Callable[..., App]
    csrf: Callable[..., App]


def compose(
    app: App,
    layers: Layers[App],
    *,
    store: Store | str | None,
    sessions: SessionConfig | None,
    csrf: CSRFConfig | Literal[False] | None,
    headers: HeaderPolicy | Preset | str | None,
    header_overrides: Mapping[str, HeaderPolicy | Preset | str] | None,
    rate_limit: Mapping[str, Any] | None,
    keyring: KeyRing | SecretKey | None,
    identity: Any,
    auditor: Auditor | None,
    clock: Clock,
    production: bool | None,
) -> App:
    """Wrap ``app`` in ``layers`` in the documented order (see the module docstring)."""
    _check_opt_outs(store=store, csrf=csrf, headers=headers, production=production)
    wrapped = app
    if csrf is not False:
        config = CSRFConfig() if csrf is None else csrf
        if config.token_source is TokenSource.SESSION and store is None:
            raise ConfigurationError(
                "protect(): CSRF tokens live in the session by default, so pass store= "
                "(for example store='sqlite:///app.db'), or csrf=CSRFConfig(token_source="
                "TokenSource.DOUBLE_SUBMIT) with keyring=, or csrf=False",
                setting="store",
            )
        wrapped = layers.csrf(
            wrapped,
            config=config,
            keyring=keyring,
            identity=identity,
            auditor=auditor,
            clock=clock,
            production=production,
        )
    if store is not None:
        wrapped = layers.sessions(
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
        wrapped = layers.rate_limit()(wrapped, **rate_limit)
    if headers is not None:
        wrapped = layers.headers(
            wrapped,
            headers,
            overrides=header_overrides,
            auditor=auditor,
            clock=clock,
            production=production,
        )
    return wrapped


def _check_opt_outs(
    *,
    store: Store | str | None,
    csrf: CSRFConfig | Literal[False] | None,
    headers: HeaderPolicy | Preset | str | None,
    production: bool | None,
) -> None:
    """Log each layer turned off; refuse cookie sessions without CSRF in production."""
    if csrf is False:
        if store is not None and (is_production() if production is None else production):
            raise ConfigurationError(
                "protect(csrf=False) with store= serves cookie sessions with no CSRF check, "
                "so a page on any site can post with the user's session; this is refused when "
                "ENV=production. Keep CSRF on (exempt= routes that authenticate otherwise, or "
                "CSRFConfig(skip_authenticated=True) for bearer-token APIs)",
                setting="csrf",
            )
        logger.warning(
            "bastion protect(): csrf=False; no CSRF check on any request%s",
            " (cookie sessions are on: never use this in production)" if store is not None else "",
        )
    if headers is None:
        logger.warning(
            "bastion protect(): headers=None; no security headers (CSP, HSTS, framing, "
            "nosniff) unless the app or a proxy sends them"
        )
