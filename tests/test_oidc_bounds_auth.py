"""``Provider(auth_method="client_secret_post")``: the secret in the token request's form body
(RFC 6749 2.3.1), against the real local provider: a sign-in through the Starlette routes and
the Flask blueprint succeeds, the token request carries ``client_id`` and ``client_secret`` in
its body (and the default, Basic, carries none there), and a wrong secret in the body is
refused by the provider (400 ``code_rejected``, detail ``invalid_client``) with nobody signed
in.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import pytest

from bastion.engine.oidc.exchange import ClientAuth
from bastion.errors import ConfigurationError
from bastion.oidc import Provider
from oidc_routes_support import FLASK, JSON, Site, register, sign_in
from oidc_support import oidc_provider_fixture  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from oidc_support import Exchange, OIDCClient, OIDCProviderServer


@pytest.fixture
def post_client(oidc_provider: OIDCProviderServer) -> OIDCClient:
    return register(oidc_provider, auth_method="client_secret_post")


def _provider(op: OIDCProviderServer, client: OIDCClient, method: str | None) -> Provider:
    return Provider(
        name="local",
        issuer=op.issuer,
        client_id=client.client_id,
        client_secret=client.client_secret,
        auth_method=method,
    )


@pytest.fixture
def bodies(oidc_provider: OIDCProviderServer) -> Iterator[list[dict[str, list[str]]]]:
    """The form bodies of the token requests the provider receives."""
    seen: list[dict[str, list[str]]] = []

    def record(exchange: Exchange) -> Exchange:
        seen.append(parse_qs(exchange.request_body.decode()))
        return exchange

    with oidc_provider.proxy.rewrite(oidc_provider.token_path, record):
        yield seen


def test_starlette_sign_in_with_client_secret_post(
    oidc_provider: OIDCProviderServer,
    post_client: OIDCClient,
    bodies: list[dict[str, list[str]]],
) -> None:
    site = Site([_provider(oidc_provider, post_client, "client_secret_post")])
    try:
        with site.starlette() as app:
            login = app.get("/auth/local/login", follow_redirects=False)
            done = app.get(sign_in(login.headers["location"]), follow_redirects=False)
            assert done.status_code == 303
            assert app.get("/me").json() == {"user": "user-1"}
        (body,) = bodies
        assert body["client_id"] == [post_client.client_id]
        assert body["client_secret"] == [post_client.client_secret]
        assert body["grant_type"] == ["authorization_code"]
        assert site.fails() == []
    finally:
        site.close()


def test_flask_sign_in_with_client_secret_post(
    oidc_provider: OIDCProviderServer,
    post_client: OIDCClient,
    bodies: list[dict[str, list[str]]],
) -> None:
    site = Site([_provider(oidc_provider, post_client, "client_secret_post")])
    try:
        with site.flask().test_client() as client:
            login = client.get("/auth/local/login", base_url=FLASK)
            done = client.get(sign_in(login.headers["Location"]), base_url=FLASK)
            assert done.status_code == 303
            assert client.get("/me", base_url=FLASK).json == {"user": "user-1"}
        assert bodies[0]["client_secret"] == [post_client.client_secret]
    finally:
        site.close()


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_the_secret_travels_where_the_method_says(
    oidc_provider: OIDCProviderServer, bodies: list[dict[str, list[str]]], method: str
) -> None:
    """oidc-provider accepts either secret method from a secret client, so the request shows
    which one was sent: the secret in the body for post; for Basic, none in the body (the
    client was authenticated, so it came in the Authorization header)."""
    client = register(oidc_provider, auth_method=method)
    site = Site([_provider(oidc_provider, client, method)])
    try:
        with site.starlette() as app:
            login = app.get("/auth/local/login", follow_redirects=False)
            done = app.get(sign_in(login.headers["location"]), follow_redirects=False)
            assert done.status_code == 303
        (body,) = bodies
        if method == "client_secret_post":
            assert body["client_secret"] == [client.client_secret]
        else:
            assert "client_secret" not in body
    finally:
        site.close()


def test_a_wrong_secret_in_the_body_is_refused(
    oidc_provider: OIDCProviderServer, post_client: OIDCClient
) -> None:
    wrong = replace(post_client, client_secret="not-the-secret-of-this-client-at-all")
    site = Site([_provider(oidc_provider, wrong, "client_secret_post")])
    try:
        with site.starlette() as app:
            login = app.get("/auth/local/login", follow_redirects=False)
            refused = app.get(
                sign_in(login.headers["location"]), headers=JSON, follow_redirects=False
            )
            assert refused.status_code == 400
            assert refused.json()["error"] == "code_rejected"
            assert app.get("/me").json() == {"user": None}
        assert site.fails()[-1] == {
            "method": "oidc",
            "reason": "code_rejected",
            "provider": "local",
            "detail": "invalid_client",
        }
    finally:
        site.close()


def test_the_method_is_checked_against_the_credential(oidc_provider: OIDCProviderServer) -> None:
    client = register(oidc_provider)
    basic = _provider(oidc_provider, client, None)
    assert basic.auth_method == "client_secret_basic"
    assert _provider(oidc_provider, client, "client_secret_post").auth_method == (
        "client_secret_post"
    )
    assert "auth_method='client_secret_basic'" in repr(basic)
    for wrong in ("private_key_jwt", "client_secret_jwt", "none", ""):
        with pytest.raises(ConfigurationError) as caught:
            replace(basic, auth_method=wrong)
        assert caught.value.setting == "oidc.providers[local].auth_method"
    with pytest.raises(ConfigurationError) as engine:
        ClientAuth(client_id="app", secret="s", auth_method="private_key_jwt")
    assert engine.value.setting == "auth_method"
    assert ClientAuth(client_id="app", secret="s").method == "client_secret_basic"
