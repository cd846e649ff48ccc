"""The test OpenID Provider (tests/oidc_support.py) works: a plain httpx client, no bastion code.

Discovery from 127.0.0.1, the authorization-code flow with PKCE S256 through the provider's own
login and consent pages, the RFC 9207 ``iss`` in the callback, a code exchanged once, a wrong
verifier refused, both client authentications, RP-initiated logout, and the tampering proxy
(forged ID tokens, garbage, a dropped connection). The oidc tests of bastion build on these.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError
from joserfc.jwk import KeySet, OctKey

from oidc_support import (
    ALICE,
    DELETE,
    MALLORY,
    OIDCClient,
    OIDCProviderServer,
    ProviderPageError,
    complete_login,
    complete_logout,
    jwt_parts,
    new_private_jwk,
    oidc_provider_b_fixture,  # noqa: F401 (registers the oidc_provider_b fixture)
    oidc_provider_fixture,  # noqa: F401 (registers the oidc_provider fixture)
    pkce_pair,
    sign_jwt,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def discovery(oidc_provider: OIDCProviderServer) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(oidc_provider.discovery_url).json()
    return document


@pytest.fixture
def browser() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def _authorize_url(
    discovery: dict[str, Any], client: OIDCClient, **params: str
) -> tuple[str, dict[str, str]]:
    verifier, challenge = pkce_pair()
    query = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uris[0],
        "scope": "openid email profile",
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **params,
    }
    query = {name: value for name, value in query.items() if value}
    return f"{discovery['authorization_endpoint']}?{urlencode(query)}", {
        **query,
        "code_verifier": verifier,
    }


def _callback(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def _client_auth(discovery: dict[str, Any], client: OIDCClient) -> dict[str, Any]:
    """httpx arguments authenticating ``client`` at the token endpoint."""
    if client.client_secret is not None:
        return {"auth": (client.client_id, client.client_secret)}
    assert client.private_jwk is not None
    now = int(time.time())
    assertion = sign_jwt(
        {"alg": client.private_jwk["alg"], "kid": client.private_jwk["kid"], "typ": "JWT"},
        {
            "iss": client.client_id,
            "sub": client.client_id,
            "aud": discovery["token_endpoint"],
            "jti": secrets.token_urlsafe(16),
            "iat": now,
            "exp": now + 60,
        },
        client.private_jwk,
    )
    return {
        "data": {
            "client_id": client.client_id,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
    }


def _exchange(
    discovery: dict[str, Any], client: OIDCClient, code: str, verifier: str
) -> httpx.Response:
    auth = _client_auth(discovery, client)
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uris[0],
        "code_verifier": verifier,
        **auth.pop("data", {}),
    }
    return httpx.post(discovery["token_endpoint"], data=data, timeout=10, **auth)


def _verified_claims(discovery: dict[str, Any], id_token: str) -> dict[str, Any]:
    keys = KeySet.import_key_set(httpx.get(discovery["jwks_uri"]).json())
    claims: dict[str, Any] = jwt.decode(id_token, keys, algorithms=["RS256", "ES256"]).claims
    return claims


def _sign_in(
    discovery: dict[str, Any],
    browser: httpx.Client,
    client: OIDCClient,
    account: Any = ALICE,
) -> tuple[dict[str, str], dict[str, str]]:
    url, sent = _authorize_url(discovery, client)
    callback = complete_login(browser, url, account.username, account.password)
    assert callback.startswith(client.redirect_uris[0] + "?")
    return sent, _callback(callback)


def test_discovery_is_served_from_loopback(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any]
) -> None:
    assert oidc_provider.issuer.startswith("http://127.0.0.1:")
    assert discovery["issuer"] == oidc_provider.issuer
    for endpoint in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        assert discovery[endpoint].startswith(oidc_provider.issuer + "/")
    assert discovery["end_session_endpoint"] == f"{oidc_provider.issuer}/session/end"
    assert discovery["authorization_response_iss_parameter_supported"] is True
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert discovery["response_types_supported"] == ["code"]
    assert ("GET", "/.well-known/openid-configuration") in oidc_provider.proxy.requests


def test_code_flow_with_pkce_and_iss(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.basic_client
    sent, callback = _sign_in(discovery, browser, client)
    assert set(callback) == {"code", "state", "iss"}
    assert callback["state"] == sent["state"]
    assert callback["iss"] == oidc_provider.issuer  # RFC 9207

    response = _exchange(discovery, client, callback["code"], sent["code_verifier"])
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    claims = _verified_claims(discovery, tokens["id_token"])
    assert claims["iss"] == oidc_provider.issuer
    assert claims["aud"] == client.client_id
    assert claims["sub"] == "alice"
    assert claims["nonce"] == sent["nonce"]
    assert claims["email"] == ALICE.email
    assert claims["email_verified"] is True
    assert jwt_parts(tokens["id_token"])[0]["kid"] == oidc_provider.signing_key.kid

    replay = _exchange(discovery, client, callback["code"], sent["code_verifier"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"


def test_wrong_code_verifier_is_refused(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.basic_client
    _sent, callback = _sign_in(discovery, browser, client)
    wrong, _challenge = pkce_pair()
    response = _exchange(discovery, client, callback["code"], wrong)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "grant request is invalid",
    }


def test_pkce_is_required(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.basic_client
    url, sent = _authorize_url(discovery, client, code_challenge="", code_challenge_method="")
    callback = _callback(complete_login(browser, url, ALICE.username, ALICE.password))
    assert callback["error"] == "invalid_request"
    assert callback["error_description"] == (
        "Authorization Server policy requires PKCE to be used for this request"
    )
    assert callback["state"] == sent["state"]
    assert callback["iss"] == oidc_provider.issuer


def test_private_key_jwt_client(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.jwt_client
    assert client.client_secret is None
    assert client.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    sent, callback = _sign_in(discovery, browser, client)
    response = _exchange(discovery, client, callback["code"], sent["code_verifier"])
    assert response.status_code == 200, response.text
    assert _verified_claims(discovery, response.json()["id_token"])["aud"] == client.client_id


def test_private_key_jwt_with_another_key_is_refused(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.jwt_client
    sent, callback = _sign_in(discovery, browser, client)
    impostor = OIDCClient(
        client_id=client.client_id,
        auth_method=client.auth_method,
        redirect_uris=client.redirect_uris,
        private_jwk={**new_private_jwk("other"), "kid": client.private_jwk["kid"]},  # type: ignore[index]
    )
    response = _exchange(discovery, impostor, callback["code"], sent["code_verifier"])
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_wrong_password_is_refused(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    url, _sent = _authorize_url(discovery, oidc_provider.basic_client)
    with pytest.raises(ProviderPageError) as refused:
        complete_login(browser, url, ALICE.username, "not-the-password")
    assert refused.value.status == 401
    assert "invalid login or password" in refused.value.text


def test_denied_consent_returns_access_denied(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    url, sent = _authorize_url(discovery, oidc_provider.basic_client)
    callback = _callback(complete_login(browser, url, ALICE.username, ALICE.password, deny=True))
    assert callback["error"] == "access_denied"
    assert callback["state"] == sent["state"]
    assert callback["iss"] == oidc_provider.issuer


def test_mallory_has_an_unverified_copy_of_alices_email(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.basic_client
    sent, callback = _sign_in(discovery, browser, client, MALLORY)
    response = _exchange(discovery, client, callback["code"], sent["code_verifier"])
    claims = _verified_claims(discovery, response.json()["id_token"])
    assert (claims["sub"], claims["email"], claims["email_verified"]) == (
        "mallory",
        ALICE.email,
        False,
    )


def test_registered_client_with_its_own_redirect_uri(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    redirect = "http://127.0.0.1:8123/auth/local/callback"
    client = oidc_provider.register_client(redirect_uris=[redirect])
    sent, callback = _sign_in(discovery, browser, client)
    assert _exchange(discovery, client, callback["code"], sent["code_verifier"]).status_code == 200
    # The default client does not accept that redirect URI: the provider's error page.
    url, _sent = _authorize_url(discovery, oidc_provider.basic_client, redirect_uri=redirect)
    with pytest.raises(ProviderPageError) as refused:
        complete_login(browser, url, ALICE.username, ALICE.password)
    assert refused.value.status == 400
    assert "redirect_uri did not match any of the client&#39;s registered redirect_uris" in (
        refused.value.text
    )


def test_tampering_proxy_forges_the_id_token(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.basic_client
    sent, callback = _sign_in(discovery, browser, client)
    with oidc_provider.rewrite_id_token(claims={"aud": "someone-else", "nonce": DELETE}) as forged:
        response = _exchange(discovery, client, callback["code"], sent["code_verifier"])
    assert response.status_code == 200
    id_token = response.json()["id_token"]
    assert forged == [id_token]
    # Signed with the provider's own key: the signature verifies, the claims are wrong.
    claims = _verified_claims(discovery, id_token)
    assert claims["aud"] == "someone-else"
    assert "nonce" not in claims
    assert claims["iss"] == oidc_provider.issuer
    # Outside the block the proxy forwards unchanged again.
    sent, callback = _sign_in(discovery, browser, client)
    response = _exchange(discovery, client, callback["code"], sent["code_verifier"])
    assert _verified_claims(discovery, response.json()["id_token"])["aud"] == client.client_id


def test_tampering_proxy_unsigned_and_foreign_keys(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.basic_client
    sent, callback = _sign_in(discovery, browser, client)
    with oidc_provider.rewrite_id_token(header={"alg": "none"}):
        response = _exchange(discovery, client, callback["code"], sent["code_verifier"])
    unsigned = response.json()["id_token"]
    assert unsigned.endswith(".")
    assert jwt_parts(unsigned)[0]["alg"] == "none"

    unknown = new_private_jwk("not-in-the-jwks")
    original = oidc_provider.forge_id_token(unsigned, header={"alg": "RS256"})
    foreign = oidc_provider.forge_id_token(
        original, header={"alg": "ES256", "kid": "not-in-the-jwks"}, key=unknown
    )
    assert jwt_parts(foreign)[0]["kid"] == "not-in-the-jwks"
    keys = KeySet.import_key_set(httpx.get(discovery["jwks_uri"]).json())
    with pytest.raises(InvalidKeyIdError, match="not-in-the-jwks"):
        jwt.decode(foreign, keys, algorithms=["ES256"])


def test_tampering_proxy_garbage_and_outage(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any]
) -> None:
    with oidc_provider.respond("/token", status=200, body=b"<html>not json"):
        garbage = httpx.post(discovery["token_endpoint"], data={"grant_type": "x"})
    assert (garbage.status_code, garbage.text) == (200, "<html>not json")
    with oidc_provider.respond("/.well-known/openid-configuration", status=503, body=b"down"):
        assert httpx.get(oidc_provider.discovery_url).status_code == 503
    with oidc_provider.unreachable("/jwks"), pytest.raises(httpx.RemoteProtocolError):
        httpx.get(discovery["jwks_uri"])
    assert httpx.get(discovery["jwks_uri"]).status_code == 200


def test_rp_initiated_logout(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.basic_client
    sent, callback = _sign_in(discovery, browser, client)
    id_token = _exchange(discovery, client, callback["code"], sent["code_verifier"]).json()[
        "id_token"
    ]
    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": client.post_logout_redirect_uris[0],
            "state": "bye",
        }
    )
    back = complete_logout(browser, f"{discovery['end_session_endpoint']}?{query}")
    assert back == f"{client.post_logout_redirect_uris[0]}?state=bye"
    # The provider session is gone: the next authorization asks for the password again.
    url, _sent = _authorize_url(discovery, client)
    with pytest.raises(ProviderPageError) as refused:
        complete_login(browser, url, ALICE.username, "wrong")
    assert refused.value.status == 401


def test_a_second_provider_has_its_own_issuer(
    oidc_provider: OIDCProviderServer, oidc_provider_b: OIDCProviderServer, browser: httpx.Client
) -> None:
    assert oidc_provider_b.issuer != oidc_provider.issuer
    discovery_b = httpx.get(oidc_provider_b.discovery_url).json()
    assert discovery_b["issuer"] == oidc_provider_b.issuer
    _sent, callback = _sign_in(discovery_b, browser, oidc_provider_b.basic_client)
    assert callback["iss"] == oidc_provider_b.issuer


def test_tampering_proxy_hmac_confusion_expiry_and_rotation(
    oidc_provider: OIDCProviderServer, discovery: dict[str, Any], browser: httpx.Client
) -> None:
    client = oidc_provider.basic_client
    sent, callback = _sign_in(discovery, browser, client)
    pem = oidc_provider.public_key_pem
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    with oidc_provider.rewrite_id_token(header={"alg": "HS256"}, key=pem):
        response = _exchange(discovery, client, callback["code"], sent["code_verifier"])
    confused = response.json()["id_token"]
    assert jwt_parts(confused)[0] == {"alg": "HS256", "kid": oidc_provider.signing_key.kid}
    signing_input, _dot, signature = confused.rpartition(".")
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    assert signature == base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    # joserfc itself refuses a public key as an HMAC secret: the forgery is made by hand.
    with pytest.raises(ValueError, match="Asymmetric public keys must not be used as oct keys"):
        OctKey.import_key(pem)

    expired = oidc_provider.forge_id_token(
        confused, header={"alg": "RS256"}, claims=lambda c: {**c, "exp": c["iat"] - 60}
    )
    header, claims = jwt_parts(expired)
    assert header["kid"] == oidc_provider.signing_key.kid
    assert claims["exp"] < claims["iat"]

    rotated = new_private_jwk("rotated", "RS256")
    with oidc_provider.serve_extra_keys(rotated):
        served = httpx.get(discovery["jwks_uri"]).json()["keys"]
    assert [key["kid"] for key in served][-1] == "rotated"
    assert "d" not in served[-1]
    signed = oidc_provider.forge_id_token(expired, header={"kid": "rotated"}, key=rotated)
    assert jwt.decode(signed, KeySet.import_key_set({"keys": served}), algorithms=["RS256"])
    assert "rotated" not in {key["kid"] for key in httpx.get(discovery["jwks_uri"]).json()["keys"]}
