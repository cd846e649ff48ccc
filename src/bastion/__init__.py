"""bastion: the security layer for Python web apps.

The front door: one configuration value and one verb per adapter::

    import bastion
    import bastion.asgi                       # or bastion.wsgi, bastion.flask

    config = bastion.Bastion(store="sqlite:///app.db", keyring=bastion.KeyRing.from_secrets([s]))
    app = bastion.asgi.protect(app, config)

This module exports what a user needs to write a configuration and handle bastion's errors;
the adapters live in :mod:`bastion.asgi`, :mod:`bastion.wsgi` and :mod:`bastion.flask`. Names
behind an optional extra (``TOTPManager`` needs ``bastion[totp]``, ``JWTKey`` and
``JWTKeySet`` need ``bastion[jwt]``) load on first use, with an
error naming the extra when it is missing. The package is layered (see DESIGN.md): ``errors``
< ``core`` < ``stores`` < ``engine`` < ``config``/``runtime`` < ``asgi``/``wsgi`` < ``flask``,
``testing`` < ``demo`` < ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.authz import AuthzPolicy
from bastion.config import Bastion
from bastion.core.audit import Auditor
from bastion.core.client import TrustedProxies
from bastion.core.clock import Clock, FrozenClock, system_clock
from bastion.core.cors import CORSPolicy
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.environment import Environment
from bastion.core.headers import ContentSecurityPolicy, HeaderPolicy, Preset
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.passwords import PasswordPolicy
from bastion.core.sessions import SessionConfig
from bastion.core.throttle import ThrottlePolicy, normalize_username
from bastion.engine.ratelimit import Limit, Rule
from bastion.engine.throttle import LoginOutcome
from bastion.errors import (
    BadData,
    BadSignature,
    BadToken,
    BastionError,
    ConfigurationError,
    CookieError,
    Forbidden,
    PasswordRejected,
    RateLimitExceeded,
    SessionDataError,
    SessionStateError,
    SignatureExpired,
    StoreError,
    StoreUnavailable,
)
from bastion.passwords import PasswordHasher, default_policy
from bastion.runtime import Runtime
from bastion.stores import Store, open_store
from bastion.tokens import DPoPMode, TokenPolicy, TokenReason, TokenRejected

if TYPE_CHECKING:
    from bastion.core.tokens.jwk import JWTKey, JWTKeySet
    from bastion.engine.totp import TOTPManager

__version__ = "0.1.0.dev0"

__all__ = [
    "Auditor",
    "AuthzPolicy",
    "BadData",
    "BadSignature",
    "BadToken",
    "Bastion",
    "BastionError",
    "CORSPolicy",
    "CSRFConfig",
    "Clock",
    "ConfigurationError",
    "ContentSecurityPolicy",
    "CookieError",
    "DPoPMode",
    "Environment",
    "Forbidden",
    "FrozenClock",
    "HeaderPolicy",
    "JWTKey",
    "JWTKeySet",
    "KeyRing",
    "Limit",
    "LoginOutcome",
    "PasswordHasher",
    "PasswordPolicy",
    "PasswordRejected",
    "Preset",
    "RateLimitExceeded",
    "Rule",
    "Runtime",
    "SecretKey",
    "SessionConfig",
    "SessionDataError",
    "SessionStateError",
    "SignatureExpired",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TOTPManager",
    "ThrottlePolicy",
    "TokenPolicy",
    "TokenReason",
    "TokenRejected",
    "TokenSource",
    "TrustedProxies",
    "__version__",
    "default_policy",
    "normalize_username",
    "open_store",
    "system_clock",
]

_LAZY = {
    "TOTPManager": ("bastion.engine.totp", "totp"),
    "JWTKey": ("bastion.core.tokens.jwk", "jwt"),
    "JWTKeySet": ("bastion.core.tokens.jwk", "jwt"),
}


def __getattr__(name: str) -> Any:
    """Names behind an extra, imported on first use (an error names the missing extra)."""
    found = _LAZY.get(name)
    if found is None:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    module_name, extra = found
    import importlib  # noqa: PLC0415 (only for the lazy names)

    try:
        module = importlib.import_module(module_name)
    except ImportError as error:  # pragma: no cover (the dev environment has every extra)
        raise ImportError(
            f"bastion.{name} needs the {extra!r} extra: pip install 'bastion[{extra}]'"
        ) from error
    value = getattr(module, name)
    globals()[name] = value
    return value
