"""``OIDCPolicy(login="tokens")``: the callback answers bastion's own access and refresh tokens
(``runtime.tokens``) instead of logging a session in, against the real local provider, through
the Starlette routes and the Flask blueprint."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from bastion import Bastion, TokenPolicy
from bastion.errors import ConfigurationError
from bastion.oidc import OIDC, OIDCLogin, OIDCPolicy, Provider
from oidc_routes_support import FLASK, JSON, Site, register, sign_in
from oidc_support import MALLORY, oidc_provider_fixture  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from oidc_support import OIDCProviderServer


def provider(op: OIDCProviderServer) -> Provider:
    client = register(op)
    return Provider(
        name="local",
        issuer=op.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
    )


@pytest.fixture
def site(oidc_provider: OIDCProviderServer) -> Iterator[Site]:
    opened = Site([provider(oidc_provider)], login="tokens")
    yield opened
    opened.close()


def start(client: Any) -> str:
    response = client.get("/auth/local/login", follow_redirects=False)
    assert response.status_code == 302, response.text
    return str(response.headers["location"])


def test_the_callback_answers_bastion_tokens_and_logs_no_session_in(site: Site) -> None:
    with site.starlette() as client:
        response = client.get(sign_in(start(client)), follow_redirects=False)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["pragma"] == "no-cache"
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 300
        assert body["refresh_token"]
        assert client.get("/me").json() == {"user": None}  # no session was logged in
        bearer = {"authorization": f"Bearer {body['access_token']}"}
        assert client.get("/api/me", headers=bearer).json() == {"sub": "user-1"}
    assert site.events("authn_login_success") == [
        {"method": "oidc", "provider": "local", "login": "tokens"}
    ]
    (created,) = site.events("authn_token_created")
    assert created["kind"] == "login"
    refreshed = site.runtime.tokens.refresh_sync(body["refresh_token"])
    claims, _epoch, _jkt = site.runtime.tokens.decode_access(refreshed.access_token)
    assert claims.subject == "user-1"


def test_token_scopes_are_those_of_the_policy(oidc_provider: OIDCProviderServer) -> None:
    site = Site([provider(oidc_provider)], login="tokens")
    site.policy = OIDCPolicy(
        providers=site.policy.providers, login="tokens", token_scopes=("read", "write")
    )
    site.oidc.close()
    site.oidc = OIDC(
        site.policy,
        store=site.store,
        auditor=site.auditor,
        clock=site.clock,
        tokens=site.runtime.tokens,
    )
    try:
        with site.starlette() as client:
            body = client.get(sign_in(start(client))).json()
        assert body["scope"] == "read write"
        claims, _epoch, _jkt = site.runtime.tokens.decode_access(body["access_token"])
        assert claims.get("scope") == "read write"
    finally:
        site.close()


def test_a_replayed_callback_gets_no_tokens(site: Site) -> None:
    with site.starlette() as client:
        callback = sign_in(start(client))
        assert client.get(callback).status_code == 200
        replay = client.get(callback, headers=JSON)
        assert replay.status_code == 400
        assert replay.json()["error"] == "state_unknown"
        assert "access_token" not in replay.text
    assert site.fails()[-1]["reason"] == "state_unknown"
    assert len(site.events("authn_token_created")) == 1


def test_a_forged_state_gets_no_tokens(site: Site) -> None:
    with site.starlette() as client:
        start(client)
        response = client.get("/auth/local/callback?state=forged&code=x", headers=JSON)
        assert response.status_code == 400
        assert response.json()["error"] == "state_unknown"
    assert site.fails()[-1]["reason"] == "state_unknown"
    assert site.events("authn_token_created") == []


def test_no_account_gets_no_tokens(site: Site) -> None:
    site.users[(site.policy.providers[0].issuer, MALLORY.username)] = None  # type: ignore[assignment]
    with site.starlette() as client:
        response = client.get(sign_in(start(client), MALLORY), headers=JSON)
        assert response.status_code == 403
        assert response.json()["error"] == "no_account"
    assert site.fails()[-1]["reason"] == "no_account"
    assert site.events("authn_token_created") == []


def test_flask_blueprint_answers_tokens(site: Site) -> None:
    app = site.flask()
    with app.test_client() as client:
        login = client.get("/auth/local/login", base_url=FLASK)
        response = client.get(sign_in(login.headers["Location"]), base_url=FLASK)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Pragma"] == "no-cache"
        assert client.get("/me", base_url=FLASK).json == {"user": None}
        claims, _epoch, _jkt = site.runtime.tokens.decode_access(response.json["access_token"])
        assert claims.subject == "user-1"
    assert site.events("authn_login_success") == [
        {"method": "oidc", "provider": "local", "login": "tokens"}
    ]


def test_tokens_mode_configuration() -> None:
    local = Provider(
        name="local", issuer="http://127.0.0.1:9", client_id="app", client_secret="s" * 32
    )
    assert OIDCPolicy(providers=(local,), login="tokens").login is OIDCLogin.TOKENS
    with pytest.raises(ConfigurationError) as raised:
        OIDCPolicy(providers=(local,), login="cookie")
    assert raised.value.setting == "oidc.login"
    with pytest.raises(ConfigurationError) as raised:
        OIDCPolicy(providers=(local,), token_scopes=("read",))  # a session login has no scopes
    assert raised.value.setting == "oidc.token_scopes"
    with pytest.raises(ConfigurationError) as raised:
        OIDCPolicy(providers=(local,), login="tokens", token_scopes=("a b",))
    assert raised.value.setting == "oidc.token_scopes"

    tokens_policy = OIDCPolicy(providers=(local,), login="tokens")
    plain = Bastion(store="memory://").build()
    dpop = Bastion(
        store="memory://", tokens=TokenPolicy(issuer="https://app.example", dpop="required")
    ).build()
    try:
        for tokens in (None, dpop.tokens):  # no token service; one no browser can use
            with pytest.raises(ConfigurationError) as raised:
                OIDC(
                    tokens_policy,
                    store=plain.store,
                    auditor=plain.auditor,
                    clock=plain.config.clock,
                    tokens=tokens,
                )
            assert raised.value.setting == "oidc.login"
    finally:
        plain.close()
        dpop.close()
