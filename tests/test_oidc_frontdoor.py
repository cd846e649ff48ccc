"""``Bastion(oidc=...)``: the slice is checked at start-up and built once into ``runtime.oidc``."""

from __future__ import annotations

import pytest

from bastion import Bastion
from bastion.errors import ConfigurationError
from bastion.oidc import OIDC, OIDCPolicy, Provider

PROVIDER = Provider(
    name="local", issuer="http://127.0.0.1:9", client_id="app", client_secret="s" * 32
)


def test_runtime_oidc_is_built_once_on_the_runtimes_store() -> None:
    runtime = Bastion(store="memory://", oidc=OIDCPolicy(providers=(PROVIDER,))).build()
    try:
        assert isinstance(runtime.oidc, OIDC)
        assert runtime.oidc is runtime.oidc
    finally:
        runtime.close()


def test_the_slice_needs_a_store_and_its_type() -> None:
    with pytest.raises(ConfigurationError, match="login states live in the store") as raised:
        Bastion(oidc=OIDCPolicy(providers=(PROVIDER,)))
    assert raised.value.setting == "store"
    with pytest.raises(ConfigurationError, match="must be an OIDCPolicy"):
        Bastion(store="memory://", oidc=PROVIDER)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"runtime\.oidc needs"):
        _ = Bastion(store="memory://").build().oidc


def test_tokens_mode_needs_the_tokens_slice_and_gets_runtime_tokens() -> None:
    from bastion.tokens import TokenPolicy  # noqa: PLC0415

    policy = OIDCPolicy(providers=(PROVIDER,), login="tokens")
    with pytest.raises(ConfigurationError, match="pass tokens=TokenPolicy") as raised:
        Bastion(store="memory://", oidc=policy)
    assert raised.value.setting == "oidc.login"
    runtime = Bastion(
        store="memory://", oidc=policy, tokens=TokenPolicy(issuer="https://app.example")
    ).build()
    try:
        assert runtime.oidc._tokens is runtime.tokens
    finally:
        runtime.close()
