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

from typing import TYPE_CHECKING

from bastion.runtime import Layers, Runtime, as_runtime
from bastion.wsgi.csrf import CSRFMiddleware
from bastion.wsgi.headers import SecurityHeadersMiddleware
from bastion.wsgi.sessions import SessionMiddleware

if TYPE_CHECKING:
    from bastion.config import Bastion
    from bastion.wsgi.types import WSGIApp

__all__ = ["LAYERS", "protect"]


def protect(app: WSGIApp, config: Bastion | Runtime) -> WSGIApp:
    """Wrap ``app`` in the layers ``config`` turns on (see the module docstring)."""
    return as_runtime(config).compose(app, LAYERS)


def _csrf(app: WSGIApp, runtime: Runtime) -> WSGIApp:
    config = runtime.config
    return CSRFMiddleware(
        app,
        config=config.csrf,
        keyring=runtime.keyring,
        identity=config.csrf_identity,
        auditor=runtime.auditor,
        proxies=runtime.proxies,
        clock=config.clock,
        production=runtime.production,
    )


def _sessions(app: WSGIApp, runtime: Runtime) -> WSGIApp:
    return SessionMiddleware(app, bastion=runtime)


def _rate_limit(app: WSGIApp, runtime: Runtime) -> WSGIApp:
    from bastion.wsgi.ratelimit import (  # noqa: PLC0415 (optional layer)
        RateLimitMiddleware,
        client_ip_key,
    )

    return RateLimitMiddleware(
        app, runtime.limiter, runtime.config.rate_limits, key=client_ip_key(runtime.proxies)
    )


def _cors(app: WSGIApp, runtime: Runtime) -> WSGIApp:
    from bastion.wsgi.cors import CORSMiddleware  # noqa: PLC0415 (optional layer)

    config = runtime.config
    if config.cors is None:  # pragma: no cover (compose() checks)
        return app
    return CORSMiddleware(
        app,
        config.cors,
        auditor=runtime.auditor,
        proxies=runtime.proxies,
        clock=config.clock,
        production=runtime.production,
    )


def _headers(app: WSGIApp, runtime: Runtime) -> WSGIApp:
    config = runtime.config
    if config.headers is None:  # pragma: no cover (compose() checks)
        return app
    return SecurityHeadersMiddleware(
        app,
        config.headers,
        overrides=dict(config.header_routes) or None,
        auditor=runtime.auditor,
        proxies=runtime.proxies,
        clock=config.clock,
        production=runtime.production,
    )


LAYERS: Layers[WSGIApp] = Layers(
    headers=_headers, cors=_cors, rate_limit=_rate_limit, sessions=_sessions, csrf=_csrf
)
"""The WSGI layers; :func:`bastion.flask.protect` reuses ``headers`` and ``rate_limit``."""
