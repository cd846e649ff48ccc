"""The front door's public names, pinned: a change to what ``import bastion`` offers is a
deliberate edit of this file, never an accident of a refactor."""

from __future__ import annotations

import importlib

import pytest

import bastion

FRONT_DOOR = [
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

ADAPTERS = {
    "bastion.asgi": {"BastionMiddleware", "protect", "load_session", "get_session"},
    "bastion.wsgi": {"protect", "get_session"},
    "bastion.flask": {"protect", "session", "csrf_token", "csrf_input", "session_engine"},
}


def test_the_front_door_is_pinned() -> None:
    assert bastion.__all__ == FRONT_DOOR
    assert sorted(FRONT_DOOR) == FRONT_DOOR


@pytest.mark.parametrize("name", FRONT_DOOR)
def test_every_front_door_name_resolves(name: str) -> None:
    assert getattr(bastion, name) is not None


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = bastion.Nope


def test_lazy_names_load_on_first_use() -> None:
    from bastion.engine.totp import TOTPManager  # noqa: PLC0415

    assert bastion.TOTPManager is TOTPManager
    from bastion.core.tokens.jwk import JWTKey, JWTKeySet  # noqa: PLC0415

    assert (bastion.JWTKey, bastion.JWTKeySet) == (JWTKey, JWTKeySet)


@pytest.mark.parametrize("module", sorted(ADAPTERS))
def test_each_adapter_offers_the_verb(module: str) -> None:
    loaded = importlib.import_module(module)
    exported = set(loaded.__all__)
    assert ADAPTERS[module] <= exported, ADAPTERS[module] - exported
    for name in exported:
        assert hasattr(loaded, name), f"{module}.{name} is in __all__ but missing"


@pytest.mark.parametrize("module", sorted(ADAPTERS))
def test_the_removed_spellings_stay_removed(module: str) -> None:
    """One spelling per action: the Session methods log in and out (issue 13)."""
    loaded = importlib.import_module(module)
    for name in ("login", "logout", "regenerate", "Bastion", "CSRF"):
        assert name not in loaded.__all__
