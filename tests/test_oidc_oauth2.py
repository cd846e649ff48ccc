"""Plain OAuth 2.0 providers (``Provider(id_token=False)``, explicit endpoints, the identity from
the userinfo endpoint) against the real local provider, through the Starlette routes and the
Flask blueprint.

The local provider is an OpenID Provider; as a plain OAuth 2.0 provider bastion never asks it
for an ID token's checks: no ``nonce`` is sent, an ``id_token`` in its token response is
ignored (even a forged one), and the user is its userinfo endpoint's answer. A GitHub-shaped
provider (no ID token at all, a numeric ``id``, no ``email_verified``) is the same provider with
the proxy stripping the ID token and rewriting ``/me``. Every refusal asserts the status, the
reason and the audit event.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bastion.errors import ConfigurationError
from bastion.oidc import Provider
from oidc_routes_support import FLASK, JSON, Site, register, sign_in
from oidc_support import (  # noqa: F401 (fixtures)
    ALICE,
    new_private_jwk,
    oidc_provider_b_fixture,
    oidc_provider_fixture,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from oidc_support import Exchange, OIDCProviderServer

GITHUB_USER = {"id": 4242, "login": "alice", "email": "alice@example.com", "name": "Alice"}


def oauth2(op: OIDCProviderServer, **changes: Any) -> Provider:
    """The local provider as a plain OAuth 2.0 provider (its userinfo needs ``openid``)."""
    client = register(op)
    settings: dict[str, Any] = {
        "name": "local",
        "issuer": op.issuer,
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "authorization_endpoint": f"{op.issuer}/auth",
        "token_endpoint": f"{op.issuer}/token",
        "userinfo_endpoint": f"{op.issuer}/me",
        "id_token": False,
        **changes,
    }
    return Provider(**settings)


@pytest.fixture
def site(oidc_provider: OIDCProviderServer) -> Iterator[Site]:
    opened = Site([oauth2(oidc_provider)])
    yield opened
    opened.close()


def start(client: Any, path: str = "/auth/local/login") -> str:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 302, response.text
    return str(response.headers["location"])


def assert_refused(site: Site, client: Any, response: Any, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    assert client.get("/me").json() == {"user": None}
    assert site.fails()[-1]["reason"] == reason


def without_id_token(exchange: Exchange) -> Exchange:
    body = json.loads(exchange.body)
    body.pop("id_token", None)
    return replace(exchange, body=json.dumps(body).encode())


def test_signs_in_from_userinfo_without_nonce(
    site: Site, oidc_provider: OIDCProviderServer
) -> None:
    with site.starlette() as client:
        authorize = start(client, "/auth/local/login?next=/account")
        query = parse_qs(urlsplit(authorize).query)
        assert "nonce" not in query
        assert query["code_challenge_method"] == ["S256"]
        before = len(oidc_provider.proxy.requests)
        response = client.get(sign_in(authorize), follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/account"
        assert client.get("/me").json() == {"user": "user-1"}
    (identity,) = site.seen
    assert (identity.issuer, identity.subject) == (oidc_provider.issuer, "alice")
    assert identity.email == ALICE.email
    assert identity.email_verified is True  # the provider's userinfo asserts it
    assert identity.claims["preferred_username"] == "alice"
    paths = [path for _method, path in oidc_provider.proxy.requests[before:]]
    assert "/me" in paths
    assert "/jwks" not in paths  # no ID token is verified, so no keys are fetched
    assert site.events("authn_login_success") == [{"method": "oidc", "provider": "local"}]


def test_an_id_token_in_the_answer_is_ignored_even_forged(
    site: Site, oidc_provider: OIDCProviderServer
) -> None:
    with site.starlette() as client:
        callback = sign_in(start(client))
        with oidc_provider.rewrite_id_token(header={"alg": "none"}) as sent:
            response = client.get(callback, follow_redirects=False)
        assert sent
        assert response.status_code == 303
        assert client.get("/me").json() == {"user": "user-1"}


def test_github_shaped_provider(oidc_provider: OIDCProviderServer) -> None:
    site = Site([oauth2(oidc_provider, subject_claim="id")], link=True)
    site.by_email = True  # linking by e-mail: refused, the provider verified nothing
    answer = json.dumps(GITHUB_USER).encode()
    try:
        with site.starlette() as client:
            callback = sign_in(start(client))
            with (
                oidc_provider.proxy.rewrite("/token", without_id_token),
                oidc_provider.respond("/me", body=answer),
            ):
                response = client.get(callback, headers=JSON)
            assert_refused(site, client, response, 403, "unverified_email")
        (identity,) = site.seen
        assert identity.subject == "4242"
        assert identity.email == "alice@example.com"
        assert identity.email_verified is False
        assert site.fails()[-1]["detail"] == "not_verified"
    finally:
        site.close()


@pytest.mark.parametrize(
    ("status", "body", "code", "reason"),
    [
        (503, b"down", 503, "provider_unavailable"),
        (200, b"<html>not json", 502, "bad_response"),
        (401, b'{"error":"invalid_token"}', 502, "bad_response"),
        (200, b'{"login":"alice"}', 502, "bad_response"),  # no subject member
        (200, b'{"sub":true}', 502, "bad_response"),  # a subject of no sane type
        (200, b'["alice"]', 502, "bad_response"),
    ],
    ids=["down", "garbage", "token-refused", "no-subject", "bool-subject", "not-an-object"],
)
def test_userinfo_failures(
    site: Site,
    oidc_provider: OIDCProviderServer,
    status: int,
    body: bytes,
    code: int,
    reason: str,
) -> None:
    with site.starlette() as client:
        callback = sign_in(start(client))
        with oidc_provider.respond("/me", status=status, body=body):
            response = client.get(callback, headers=JSON)
        assert_refused(site, client, response, code, reason)


def test_userinfo_unreachable_is_a_503(site: Site, oidc_provider: OIDCProviderServer) -> None:
    with site.starlette() as client:
        callback = sign_in(start(client))
        with oidc_provider.unreachable("/me"):
            response = client.get(callback, headers=JSON)
        assert_refused(site, client, response, 503, "provider_unavailable")


@pytest.mark.parametrize(
    "change",
    [
        lambda body: {k: v for k, v in body.items() if k != "access_token"},
        lambda body: {**body, "token_type": "DPoP"},
        lambda body: {**body, "access_token": "two words"},
    ],
    ids=["no-access-token", "not-bearer", "not-a-token"],
)
def test_unusable_token_responses_are_a_502(
    site: Site, oidc_provider: OIDCProviderServer, change: Any
) -> None:
    def edit(exchange: Exchange) -> Exchange:
        return replace(exchange, body=json.dumps(change(json.loads(exchange.body))).encode())

    with site.starlette() as client:
        callback = sign_in(start(client))
        with oidc_provider.proxy.rewrite("/token", edit):
            response = client.get(callback, headers=JSON)
        assert_refused(site, client, response, 502, "bad_response")


def test_replayed_callback_and_missing_state(site: Site) -> None:
    with site.starlette() as client:
        callback = sign_in(start(client))
        assert client.get(callback, follow_redirects=False).status_code == 303
        client.cookies.clear()
        assert_refused(site, client, client.get(callback, headers=JSON), 400, "state_unknown")
        missing = client.get("/auth/local/callback?code=x", headers=JSON)
        assert_refused(site, client, missing, 400, "state_missing")


def test_iss_of_another_provider_is_a_mix_up(oidc_provider: OIDCProviderServer) -> None:
    # The configured identity is not the provider's: its RFC 9207 iss gives the response away.
    site = Site([oauth2(oidc_provider, issuer="https://oauth2.example")])
    try:
        with site.starlette() as client:
            response = client.get(sign_in(start(client)), headers=JSON)
            assert_refused(site, client, response, 400, "iss_mismatch")
    finally:
        site.close()


def test_a_response_for_another_provider_at_this_callback(
    oidc_provider: OIDCProviderServer, oidc_provider_b: OIDCProviderServer
) -> None:
    other = register(oidc_provider_b, "other")
    site = Site(
        [
            oauth2(oidc_provider),
            Provider(
                name="other",
                issuer=oidc_provider_b.issuer,
                client_id=other.client_id,
                client_secret=other.client_secret,
            ),
        ]
    )
    try:
        with site.starlette() as client:
            callback = sign_in(start(client))
            at_other = callback.replace("/auth/local/", "/auth/other/")
            response = client.get(at_other, headers=JSON)
            assert_refused(site, client, response, 400, "iss_mismatch")
    finally:
        site.close()


def test_flask_blueprint_signs_in_with_a_plain_oauth2_provider(site: Site) -> None:
    app = site.flask()
    with app.test_client() as client:
        login = client.get("/auth/local/login", base_url=FLASK)
        assert login.status_code == 302
        assert "nonce" not in parse_qs(urlsplit(login.headers["Location"]).query)
        response = client.get(sign_in(login.headers["Location"]), base_url=FLASK)
        assert response.status_code == 303
        assert client.get("/me", base_url=FLASK).json == {"user": "user-1"}


def test_flask_userinfo_garbage_is_a_502(site: Site, oidc_provider: OIDCProviderServer) -> None:
    app = site.flask()
    with app.test_client() as client:
        login = client.get("/auth/local/login", base_url=FLASK)
        callback = sign_in(login.headers["Location"])
        with oidc_provider.respond("/me", body=b"garbage"):
            response = client.get(callback, base_url=FLASK, headers=JSON)
        assert response.status_code == 502
        assert response.json["error"] == "bad_response"
        assert client.get("/me", base_url=FLASK).json == {"user": None}
    assert site.fails()[-1]["reason"] == "bad_response"


def _provider(**changes: Any) -> Provider:
    settings: dict[str, Any] = {
        "name": "gh",
        "issuer": "https://github.com",
        "client_id": "app",
        "client_secret": "s" * 32,
        "authorization_endpoint": "https://github.com/login/oauth/authorize",
        "token_endpoint": "https://github.com/login/oauth/access_token",
        "userinfo_endpoint": "https://api.github.com/user",
        "subject_claim": "id",
        "scopes": ("read:user",),
        "id_token": False,
        **changes,
    }
    return Provider(**settings)


def test_configuration_of_a_plain_oauth2_provider() -> None:
    github = _provider()
    assert github.scopes == ("read:user",)  # no openid needed
    assert not github.discovery
    cases: list[tuple[dict[str, Any], str]] = [
        ({"userinfo_endpoint": None}, "oidc.providers[gh].userinfo_endpoint"),
        ({"token_endpoint": None}, "oidc.providers[gh].token_endpoint"),
        ({"jwks_uri": "https://github.com/jwks"}, "oidc.providers[gh].jwks_uri"),
        ({"subject_claim": "a b"}, "oidc.providers[gh].subject_claim"),
        ({"subject_claim": ""}, "oidc.providers[gh].subject_claim"),
        ({"id_token": "no"}, "oidc.providers[gh].id_token"),
        (
            {"userinfo_endpoint": "http://api.github.com/user"},
            "oidc.providers[gh].userinfo_endpoint",
        ),
        # an OpenID provider's subject is the ID token's sub, not a member to pick
        (
            {"id_token": True, "scopes": ("openid",), "jwks_uri": "https://github.com/jwks"},
            "oidc.providers[gh].subject_claim",
        ),
    ]
    for changes, setting in cases:
        with pytest.raises(ConfigurationError) as raised:
            _provider(**changes)
        assert raised.value.setting == setting, changes


# -- private_key_jwt through the facade ----------------------------------------------------------


def jwt_provider(op: OIDCProviderServer, *, other_key: bool = False, **changes: Any) -> Provider:
    """A ``private_key_jwt`` client (RFC 7523) at ``op``, its key as bastion's ``JWTKey``;
    ``other_key``: bastion signs with a key the provider never saw."""
    from bastion.core.tokens.jwk import JWTKey  # noqa: PLC0415

    client = register(op, auth_method="private_key_jwt")
    assert client.private_jwk is not None
    jwk = new_private_jwk("stranger") if other_key else client.private_jwk
    settings: dict[str, Any] = {
        "name": "local",
        "issuer": op.issuer,
        "client_id": client.client_id,
        "private_key": JWTKey.from_jwk(jwk),
        **changes,
    }
    return Provider(**settings)


@pytest.mark.parametrize("plain", [False, True], ids=["openid", "oauth2"])
def test_private_key_jwt_signs_in(oidc_provider: OIDCProviderServer, plain: bool) -> None:
    extra: dict[str, Any] = {}
    if plain:
        extra = {
            "authorization_endpoint": f"{oidc_provider.issuer}/auth",
            "token_endpoint": f"{oidc_provider.issuer}/token",
            "userinfo_endpoint": f"{oidc_provider.issuer}/me",
            "id_token": False,
        }
    provider = jwt_provider(oidc_provider, **extra)
    assert provider.auth_method == "private_key_jwt"
    site = Site([provider])
    try:
        with site.starlette() as client:
            response = client.get(sign_in(start(client)), follow_redirects=False)
            assert response.status_code == 303, response.text
            assert client.get("/me").json() == {"user": "user-1"}
        assert site.seen[0].subject == "alice"
    finally:
        site.close()


def test_private_key_jwt_with_an_unknown_key_is_refused(oidc_provider: OIDCProviderServer) -> None:
    site = Site([jwt_provider(oidc_provider, other_key=True)])
    try:
        with site.starlette() as client:
            response = client.get(sign_in(start(client)), headers=JSON)
            assert_refused(site, client, response, 400, "code_rejected")
        assert site.fails()[-1]["detail"] == "invalid_client"
    finally:
        site.close()


# -- the sans-I/O checks ---------------------------------------------------------------------


def test_subject_of_reads_strings_and_integers_only() -> None:
    from bastion.core.oidc.reasons import OIDCRejected  # noqa: PLC0415
    from bastion.core.oidc.userinfo import subject_of  # noqa: PLC0415

    assert subject_of({"id": 4242}, "id") == "4242"
    assert subject_of({"sub": "alice"}, "sub") == "alice"
    for document in (
        {"id": True},
        {"id": 1.5},
        {"id": None},
        {"id": ""},
        {"id": "x" * 256},
        {"id": "tab\there"},
        {"id": {"nested": 1}},
        {},
        "alice",
    ):
        with pytest.raises(OIDCRejected) as raised:
            subject_of(document, "id")
        assert raised.value.reason == "bad_response", document


def test_access_token_of_wants_one_bearer_token() -> None:
    from bastion.core.oidc.reasons import OIDCRejected  # noqa: PLC0415
    from bastion.core.oidc.userinfo import access_token_of  # noqa: PLC0415

    assert access_token_of({"access_token": "abc", "token_type": "bearer"}) == "abc"
    for answer in (
        {"token_type": "Bearer"},
        {"access_token": "abc"},  # RFC 6749 5.1: token_type is required
        {"access_token": "abc", "token_type": "mac"},
        {"access_token": 7, "token_type": "Bearer"},
        {"access_token": "a" * 8193, "token_type": "Bearer"},
        {"access_token": "tokén", "token_type": "Bearer"},
    ):
        with pytest.raises(OIDCRejected) as raised:
            access_token_of(answer)
        assert raised.value.reason == "bad_response", answer
