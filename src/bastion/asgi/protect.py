"""``protect(app, config)``: bastion's ASGI layers around an app, in the one documented order.

::

    config = bastion.Bastion(store="sqlite:///app.db", keyring=...)
    app = bastion.asgi.protect(app, config)             # Starlette, FastAPI, Litestar, Quart
    # or, the way any middleware is added:
    app.add_middleware(bastion.asgi.BastionMiddleware, config=config)

SecurityHeaders -> CORS -> RateLimit -> Bearer -> RequestLimits -> Session -> CSRF -> Authz ->
app; the order and the reasons for it are in :mod:`bastion.runtime`. The request limits
(:mod:`bastion.asgi.limits`) sit outside every layer that reads the body (CSRF reads forms), so
no layer reads past the cap or the body's deadline, and inside the layers that answer from
headers alone (a flood, a missing token, a preflight is refused before any body is awaited).
Given a :class:`~bastion.config.Bastion`, ``protect`` builds the runtime and closes it (the
auditor flushed, the store closed) when the server's lifespan shuts down; given a
:class:`~bastion.runtime.Runtime` (``config.build()``, to reach ``runtime.throttle`` or the
session registry from the app), the caller owns it and closes it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Final

from bastion.asgi._http import audit_unavailable_handler
from bastion.asgi.csrf import CSRFMiddleware
from bastion.asgi.headers import SecurityHeadersMiddleware
from bastion.asgi.limits import RequestLimitsMiddleware
from bastion.asgi.sessions import SessionMiddleware
from bastion.errors import AuditUnavailable
from bastion.runtime import Layers, Runtime, as_runtime

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
    from bastion.authz.service import Authorizer
    from bastion.config import Bastion

__all__ = ["BastionMiddleware", "compose", "protect"]

logger = logging.getLogger("bastion.security.protect")


def protect(app: ASGIApp, config: Bastion | Runtime) -> ASGIApp:
    """Wrap ``app`` in the layers ``config`` turns on (see the module docstring)."""
    return _wrap(app, config)[1]


def _wrap(app: ASGIApp, config: Bastion | Runtime) -> tuple[Runtime, ASGIApp]:
    """The runtime and the wrapped app; a runtime built here closes at lifespan shutdown."""
    runtime = as_runtime(config)
    _handle_audit_outage(app)
    wrapped = compose(runtime, app)
    if isinstance(config, Runtime):
        return runtime, wrapped
    return runtime, _ClosesAtShutdown(wrapped, runtime)


def _handle_audit_outage(app: ASGIApp) -> None:
    """On a Starlette or FastAPI app, answer :class:`~bastion.errors.AuditUnavailable` raised
    inside it with ``503 audit_unavailable`` (their own 500 page would come first otherwise,
    before the headers layer outside could answer). An app's own handler for it is kept."""
    handlers = getattr(app, "exception_handlers", None)
    add = getattr(app, "add_exception_handler", None)
    if isinstance(handlers, dict) and callable(add) and AuditUnavailable not in handlers:
        add(AuditUnavailable, audit_unavailable_handler)


def compose(runtime: Runtime, app: ASGIApp) -> ASGIApp:
    """``app`` in the runtime's layers, the request limits placed between the layers that
    answer from headers (:data:`_OUTER`) and those that read the body (:data:`_INNER`)."""
    wrapped = runtime.compose(app, _INNER)
    if runtime.config.limits is None:
        logger.warning("bastion: limits=None; no request body cap, body-read or handler timeout")
    else:
        wrapped = RequestLimitsMiddleware(wrapped, bastion=runtime)
    return runtime.compose(wrapped, _OUTER)


class BastionMiddleware:
    """``protect()`` in the form frameworks add middleware in:
    ``app.add_middleware(BastionMiddleware, config=config)`` or
    ``Middleware(BastionMiddleware, config=config)``."""

    __slots__ = ("_app", "runtime")

    def __init__(self, app: ASGIApp, config: Bastion | Runtime) -> None:
        # One runtime: the one this middleware exposes is the one serving requests.
        self.runtime, self._app = _wrap(app, config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class _ClosesAtShutdown:
    """Closes the runtime ``protect()`` built once the app has finished its lifespan
    shutdown (before the server is told it is complete), and when the lifespan fails
    (``lifespan.startup.failed``, ``lifespan.shutdown.failed``, or an exception after startup
    completed): the server exits then, and nothing else would close the store. An app that
    raises on the lifespan scope before saying anything does not support lifespan; the server
    keeps serving it, so the runtime stays open."""

    __slots__ = ("_app", "runtime")

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self._app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self._app(scope, receive, send)
            return
        runtime = self.runtime
        state = {"started": False, "closed": False}

        async def close() -> None:
            if not state["closed"]:
                state["closed"] = True
                await runtime.aclose()

        async def send_wrapper(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                state["started"] = True
            elif kind in _FINAL_LIFESPAN_MESSAGES:
                await close()
            await send(message)

        try:
            await self._app(scope, receive, send_wrapper)
        except BaseException:
            if state["started"]:
                await close()
            raise


_FINAL_LIFESPAN_MESSAGES: Final = frozenset(
    {"lifespan.shutdown.complete", "lifespan.shutdown.failed", "lifespan.startup.failed"}
)


def _cors() -> Callable[..., ASGIApp]:
    from bastion.asgi.cors import CORSMiddleware  # noqa: PLC0415 (optional layer)

    return CORSMiddleware


def _rate_limit() -> Callable[..., ASGIApp]:
    from bastion.asgi.ratelimit import RateLimitMiddleware  # noqa: PLC0415 (optional layer)

    return RateLimitMiddleware


def _bearer() -> Callable[..., ASGIApp]:
    from bastion.asgi.bearer import BearerMiddleware  # noqa: PLC0415 (optional layer)

    return BearerMiddleware


def _authz() -> Callable[..., ASGIApp]:
    from bastion.asgi.authz import AuthzMiddleware, ShareAuthorizer  # noqa: PLC0415

    def build(app: ASGIApp, authorizer: Authorizer, **kwargs: Any) -> ASGIApp:
        # Without routes there is no table to enforce (an empty one would refuse everything):
        # the layer only hands the authorizer to the dependencies and decorators.
        if not authorizer.routes.rules:
            return ShareAuthorizer(app, authorizer)
        return AuthzMiddleware(app, authorizer, **kwargs)

    return build


_LAYERS: Layers[ASGIApp] = Layers(
    headers=SecurityHeadersMiddleware,
    cors=_cors,
    rate_limit=_rate_limit,
    sessions=SessionMiddleware,
    csrf=CSRFMiddleware,
    bearer=_bearer,
    authz=_authz,
)


def _through(app: ASGIApp, *_args: Any, **_kwargs: Any) -> ASGIApp:
    return app


def _through_loader() -> Callable[..., ASGIApp]:
    return _through


# Runtime.compose builds each layer it is given, in its one order; run twice, once with the
# outer layers passed through and once with the inner ones left out, it leaves the request
# limits a place between them.
_INNER: Final = dataclasses.replace(
    _LAYERS, headers=_through, cors=_through_loader, rate_limit=_through_loader, bearer=None
)
_OUTER: Final = dataclasses.replace(_LAYERS, sessions=None, csrf=None, authz=None)
