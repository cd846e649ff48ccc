"""``protect(app, config)``: bastion's WSGI layers around an app, in the one documented order.

::

    config = bastion.Bastion(store="sqlite:///app.db", keyring=...)
    app = bastion.wsgi.protect(app, config)

SecurityHeaders -> RateLimit -> Session -> CSRF -> app; the order and the reasons for it are in
:mod:`bastion.runtime`. WSGI has no shutdown hook: pass a :class:`~bastion.runtime.Runtime`
(``runtime = config.build()``) to close it yourself (``runtime.close()``) or to reach
``runtime.throttle`` and the session registry. Flask apps use :func:`bastion.flask.protect`,
which serves ``flask.session`` from the same runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.runtime import Layers, Runtime, as_runtime
from bastion.wsgi.csrf import CSRFMiddleware
from bastion.wsgi.headers import SecurityHeadersMiddleware
from bastion.wsgi.sessions import SessionMiddleware

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.authz.service import Authorizer
    from bastion.config import Bastion
    from bastion.wsgi.types import WSGIApp

__all__ = ["LAYERS", "protect"]


def protect(app: WSGIApp, config: Bastion | Runtime) -> WSGIApp:
    """Wrap ``app`` in the layers ``config`` turns on (see the module docstring)."""
    return as_runtime(config).compose(app, LAYERS)


def _cors() -> Callable[..., WSGIApp]:
    from bastion.wsgi.cors import CORSMiddleware  # noqa: PLC0415 (optional layer)

    return CORSMiddleware


def _rate_limit() -> Callable[..., WSGIApp]:
    from bastion.wsgi.ratelimit import RateLimitMiddleware  # noqa: PLC0415 (optional layer)

    return RateLimitMiddleware


def _bearer() -> Callable[..., WSGIApp]:
    from bastion.wsgi.bearer import BearerMiddleware  # noqa: PLC0415 (optional layer)

    return BearerMiddleware


def _authz() -> Callable[..., WSGIApp]:
    from bastion.wsgi.authz import AuthzMiddleware, ShareAuthorizer  # noqa: PLC0415

    def build(app: WSGIApp, authorizer: Authorizer, **kwargs: Any) -> WSGIApp:
        # Without routes: no table to enforce, only the authorizer for the decorators.
        if not authorizer.routes.rules:
            return ShareAuthorizer(app, authorizer)
        return AuthzMiddleware(app, authorizer, **kwargs)

    return build


LAYERS: Layers[WSGIApp] = Layers(
    headers=SecurityHeadersMiddleware,
    cors=_cors,
    rate_limit=_rate_limit,
    sessions=SessionMiddleware,
    csrf=CSRFMiddleware,
    bearer=_bearer,
    authz=_authz,
)
"""The WSGI layers; :func:`bastion.flask.protect` reuses all but sessions and CSRF."""
