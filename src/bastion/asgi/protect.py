"""``protect(app, ...)``: bastion's ASGI middlewares around an app, in the one documented order.

SecurityHeaders -> RateLimit -> Session -> CSRF -> app; the order and the reasons for it are in
:mod:`bastion.engine.protect`, which composes the layers for both adapters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from bastion.asgi.csrf import CSRFMiddleware
from bastion.asgi.headers import SecurityHeadersMiddleware
from bastion.asgi.sessions import SessionMiddleware
from bastion.core.clock import Clock, system_clock
from bastion.core.headers import Preset
from bastion.engine.protect import Layers, compose

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from bastion.asgi.csrf import ASGIApp, IdentityFunc
    from bastion.core.audit import Auditor
    from bastion.core.csrf import CSRFConfig
    from bastion.core.headers import HeaderPolicy
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.core.sessions import SessionConfig
    from bastion.stores.base import Store

__all__ = ["protect"]


def protect(
    app: ASGIApp,
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
) -> ASGIApp:
    """Wrap ``app`` in bastion's middlewares (see the module docstring) and return the result.

    * ``store``: a store or URL; turns server-side sessions on (``sessions`` configures them).
    * ``csrf``: a :class:`~bastion.core.csrf.CSRFConfig`, ``None`` for the defaults, ``False``
      to leave CSRF off. The default token source (the session) needs ``store``.
    * ``headers``: a policy or preset name; ``None`` leaves security headers off.
    * ``rate_limit``: keyword arguments of
      :class:`~bastion.asgi.ratelimit.RateLimitMiddleware` (``limiter=``, ``rules=``, ...);
      ``None`` leaves rate limiting off.
    * ``keyring``, ``auditor``, ``clock`` and ``production`` are shared by every layer.
    """
    return compose(
        app,
        _LAYERS,
        store=store,
        sessions=sessions,
        csrf=csrf,
        headers=headers,
        header_overrides=header_overrides,
        rate_limit=rate_limit,
        keyring=keyring,
        identity=identity,
        auditor=auditor,
        clock=clock,
        production=production,
    )


def _rate_limit_middleware() -> Callable[..., ASGIApp]:
    from bastion.asgi.ratelimit import RateLimitMiddleware  # noqa: PLC0415 (optional layer)

    return RateLimitMiddleware


_LAYERS: Layers[ASGIApp] = Layers(
    headers=SecurityHeadersMiddleware,
    rate_limit=_rate_limit_middleware,
    sessions=SessionMiddleware,
    csrf=CSRFMiddleware,
)
