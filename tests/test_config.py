"""``bastion.Bastion``: one frozen, validated configuration value, and ``from_env()``."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

import pytest

import bastion
from bastion import Bastion, ConfigurationError, Environment, KeyRing, TrustedProxies
from bastion.core.headers import Preset
from bastion.stores.memory import MemoryStore

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "s" * 43
OLD = "o" * 43


def test_defaults_are_the_secure_ones() -> None:
    config = Bastion()
    assert config.headers is Preset.STRICT
    assert config.csrf == bastion.CSRFConfig()
    assert config.rate_limits == ()
    assert config.sessions is None
    assert not config.proxies.trusts_any


def test_the_value_is_frozen_and_compares_by_content() -> None:
    ring = KeyRing.from_secrets([SECRET])
    one = Bastion(store="memory://", keyring=ring, header_routes={"/docs/*": "relaxed"})
    two = Bastion(store="memory://", keyring=ring, header_routes={"/docs/*": Preset.RELAXED})
    assert one == two
    assert one != one.replace(headers="api")
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.store = "sqlite:///x.db"  # type: ignore[misc]
    with pytest.raises(TypeError):
        one.header_routes["/x"] = Preset.API  # type: ignore[index]


def test_repr_redacts_secrets_and_store_credentials() -> None:
    ring = KeyRing.from_secrets([SECRET])
    text = repr(Bastion(store="redis://app:hunter2@cache:6379/0?ssl=1", keyring=ring))
    assert "hunter2" not in text
    assert SECRET not in text
    assert text == "Bastion(store='redis://***@cache:6379/0', keyring=KeyRing(<1 key>))"
    assert repr(Bastion()) == "Bastion()"


@pytest.mark.parametrize(
    ("options", "setting", "message"),
    [
        ({"store": 42}, "store", "store must be a store URL or a Store"),
        ({"keyring": "secret"}, "keyring", "keyring must be a KeyRing"),
        ({"sessions": bastion.SessionConfig()}, "store", "sessions= was given without store="),
        ({"store": "memory://", "sessions": {}}, "sessions", "sessions must be a SessionConfig"),
        ({"csrf": False}, "csrf", "csrf must be a CSRFConfig, or None"),
        ({"headers": "lenient"}, "headers", "presets ['api', 'relaxed', 'strict']"),
        ({"header_routes": ["/x"]}, "header_routes", "must map path patterns"),
        ({"header_routes": {"/x": 3}}, "header_routes['/x']", "must be a HeaderPolicy"),
        ({"rate_limits": ("10/minute",)}, "rate_limits", "rate_limits must hold Rule values"),
        ({"proxies": ["10.0.0.0/8"]}, "proxies", "proxies must be a TrustedProxies"),
        ({"throttle": {}}, "throttle", "throttle must be a ThrottlePolicy"),
        ({"auditor": object()}, "auditor", "auditor must be an Auditor"),
        ({"clock": 3}, "clock", "clock must have a now() method"),
        ({"cors": ("https://a.example",)}, "cors", "cors must be a CORSPolicy"),
        ({"environment": "staging"}, "environment", "environment must be an Environment"),
        ({"user_loader": "users"}, "user_loader", "user_loader must be callable"),
    ],
)
def test_invalid_values_name_the_setting(
    options: dict[str, Any], setting: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Bastion(**options)
    assert caught.value.setting == setting
    assert message in str(caught.value)


def test_coercions() -> None:
    key = bastion.SecretKey(SECRET)
    config = Bastion(keyring=key, headers="api", environment="production")  # type: ignore[arg-type]
    assert isinstance(config.keyring, KeyRing)
    assert config.headers is Preset.API
    assert config.environment is Environment.PRODUCTION
    assert config.production
    rule = bastion.Rule("pages", "10/minute")
    assert Bastion(rate_limits=rule).rate_limits == (rule,)  # type: ignore[arg-type]
    assert Bastion(rate_limits=[rule]).rate_limits == (rule,)  # type: ignore[arg-type]


def test_a_store_object_is_accepted() -> None:
    store = MemoryStore()
    assert Bastion(store=store).store is store


# -- from_env ----------------------------------------------------------------------------------


def test_from_env_reads_every_documented_variable() -> None:
    config = Bastion.from_env(
        {
            "BASTION_STORE": "sqlite:///var/app.db",
            "BASTION_SECRET_KEY": SECRET,
            "BASTION_PREVIOUS_SECRET_KEYS": OLD,
            "BASTION_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
            "BASTION_HEADERS": "api",
            "BASTION_PUBLIC_ORIGINS": "https://app.example",
            "BASTION_TRUSTED_ORIGINS": "https://admin.example",
            "BASTION_TOTP_ISSUER": "Example",
            "BASTION_CORS_ORIGINS": "https://app.example, https://*.example.com",
            "ENV": "production",
        }
    )
    assert config.store == "sqlite:///var/app.db"
    assert config.keyring == KeyRing.from_secrets([SECRET, OLD])
    assert config.proxies == TrustedProxies(["10.0.0.0/8", "192.0.2.1"])
    assert config.headers is Preset.API
    assert config.csrf is not None
    assert config.csrf.public_origins == ("https://app.example",)
    assert config.csrf.trusted_origins == ("https://admin.example",)
    assert config.totp_issuer == "Example"
    assert config.cors == bastion.CORSPolicy(
        allow_origins=("https://app.example", "https://*.example.com")
    )
    assert config.environment is Environment.PRODUCTION


def test_from_env_reads_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    config = Bastion.from_env({"BASTION_SECRET_KEY_FILE": str(secret)})
    assert config.keyring == KeyRing.from_secrets([SECRET])


@pytest.mark.parametrize(
    ("environ", "setting", "message"),
    [
        ({"ENV": "production"}, "BASTION_SECRET_KEY", "is required when ENV=production"),
        (
            {"BASTION_SECRET_KEY": SECRET, "BASTION_SECRET_KEY_FILE": "/x"},
            "BASTION_SECRET_KEY",
            "are both set; keep one",
        ),
        (
            {"BASTION_SECRET_KEY_FILE": "/nonexistent/secret"},
            "BASTION_SECRET_KEY_FILE",
            "cannot be read",
        ),
        ({"BASTION_PREVIOUS_SECRET_KEYS": OLD}, "BASTION_SECRET_KEY", "without BASTION_SECRET_KEY"),
        ({"BASTION_TRUSTED_PROXIES": "nope"}, "trusted_proxies", "is not an IP address"),
        ({"BASTION_HEADERS": "loose"}, "BASTION_HEADERS", "must be a HeaderPolicy"),
        ({"ENV": "prodution"}, "ENV", "is not an environment bastion knows"),
    ],
)
def test_from_env_errors_are_clear(environ: dict[str, str], setting: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Bastion.from_env(environ)
    assert caught.value.setting is not None
    assert caught.value.setting.startswith(setting)
    assert message in str(caught.value)


def test_from_env_keeps_no_secret_in_its_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is empty"):
        Bastion.from_env({"BASTION_SECRET_KEY_FILE": str(empty)})
    with pytest.raises(ConfigurationError) as caught:
        Bastion.from_env({"BASTION_SECRET_KEY": "tooshort-secret", "ENV": "production"})
    assert "tooshort-secret" not in str(caught.value)


def test_from_env_overrides_win_and_a_typo_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    ring = KeyRing.from_secrets([SECRET])
    with caplog.at_level(logging.WARNING, logger="bastion.security.config"):
        config = Bastion.from_env(
            {"BASTION_STORE": "memory://", "BASTION_SECRETKEY": "x", "ENV": "production"},
            keyring=ring,
            headers=None,
        )
    assert config.keyring is ring
    assert config.headers is None
    assert [r.getMessage() for r in caplog.records] == [
        "bastion: BASTION_SECRETKEY is not a setting Bastion.from_env() reads"
    ]


def test_from_env_with_another_prefix() -> None:
    config = Bastion.from_env({"APP_STORE": "memory://", "BASTION_STORE": "x://"}, prefix="APP_")
    assert config.store == "memory://"
    with pytest.raises(ConfigurationError, match="prefix must be upper-case"):
        Bastion.from_env({}, prefix="app")


def test_the_documented_variables_are_the_ones_read() -> None:
    """docs/configuration.md lists exactly the variables from_env() reads."""
    import re  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from bastion.config import _ENV_NAMES  # noqa: PLC0415

    page = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    section = page.read_text(encoding="utf-8").split("## From the environment", 1)[1]
    rows = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    documented = set(re.findall(r"`BASTION_([A-Z_]+?)(?:_FILE)?`", "\n".join(rows)))
    assert documented - {"ENV"} == set(_ENV_NAMES)
