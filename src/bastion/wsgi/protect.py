"""``protect(app, config)``: bastion's WSGI layers around an app, in the one documented order.

::

    config = bastion.Bastion(store="sqlite:///app.db", keyring=...)
    app = bastion.wsgi.protect(app, config)

SecurityHeaders -> CORS -> RateLimit -> Bearer -> RequestLimits -> Session -> CSRF -> Authz ->
app; the order and the reasons for it are in :mod:`bastion.runtime`. The request limits
(:mod:`bastion.wsgi.limits`) sit outside every layer that reads the body (CSRF reads forms)
and inside those that answer from headers alone.

WSGI has no shutdown hook: pass a :class:`~bastion.runtime.Runtime` (``runtime =
config.build()``) to close it yourself (``runtime.close()``) or to reach ``runtime.throttle``
and the session registry. Flask apps use :func:`bastion.flask.protect`, which serves
``flask.session`` from the same runtime.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Final

from bastion.runtime import Layers, Runtime, as_runtime
from bastion.wsgi.csrf import CSRFMiddleware
from bastion.wsgi.headers import SecurityHeadersMiddleware
from bastion.wsgi.limits import RequestLimitsMiddleware
from bastion.wsgi.sessions import SessionMiddleware

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.authz.service import Authorizer
    from bastion.config import Bastion
    from bastion.wsgi.types import WSGIApp

__all__ = ["LAYERS", "compose", "limited", "protect"]

logger = logging.getLogger("bastion.security.protect")


def protect(app: WSGIApp, config: Bastion | Runtime) -> WSGIApp:
    """Wrap ``app`` in the layers ``config`` turns on (see the module docstring)."""
    return compose(as_runtime(config), app)


def compose(runtime: Runtime, app: WSGIApp) -> WSGIApp:
    """``app`` in the runtime's layers, the request limits placed between the layers that
    answer from headers (:data:`OUTER`) and those that read the body."""
    return runtime.compose(limited(runtime, runtime.compose(app, _INNER)), OUTER)


def limited(runtime: Runtime, app: WSGIApp) -> WSGIApp:
    """``app`` under the runtime's request limits (``Bastion(limits=None)``: as it is, logged).
    :func:`bastion.flask.protect` puts them around the Flask app, whose CSRF reads forms."""
    if runtime.config.limits is None:
        logger.warning("bastion: limits=None; no request body cap or body-read timeout")
        return app
    return RequestLimitsMiddleware(app, bastion=runtime)


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


def _through(app: WSGIApp, *_args: Any, **_kwargs: Any) -> WSGIApp:
    return app


def _through_loader() -> Callable[..., WSGIApp]:
    return _through


# Runtime.compose builds each layer it is given, in its one order; run twice, once with the
# outer layers passed through and once with the inner ones left out, it leaves the request
# limits a place between them.
_INNER: Final = dataclasses.replace(
    LAYERS, headers=_through, cors=_through_loader, rate_limit=_through_loader, bearer=None
)
OUTER: Final = dataclasses.replace(LAYERS, sessions=None, csrf=None, authz=None)
"""The layers outside the request limits: headers, CORS, rate limits, bearer tokens."""
