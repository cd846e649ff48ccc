"""The OIDC engine against the real local OpenID Provider (tests/oidc_support.py): the flow end
to end with both client authentications, and every refusal the engine owns, each asserted by
its exact reason. Tampering goes through the provider's proxy, never a mock of httpx."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.parse
from typing import Any

import httpx
import pytest
from joserfc.jwk import RSAKey

from bastion.core.clock import FrozenClock
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.engine.oidc import ClientConfig, OIDCClient, VerifiedLogin
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from oidc_support import (  # noqa: F401 - the fixtures register by import
    ALICE,
    DELETE,
    OIDCProviderServer,
    ProviderPageError,
    complete_login,
    complete_logout,
    new_private_jwk,
    oidc_provider_b_fixture,
    oidc_provider_fixture,
)

REDIRECT = "http://localhost/auth/local/callback"
BROWSER = "pre-login-session-handle"


class Harness:
    """A provider client's config, a frozen clock at the real time (the provider stamps real
    times), a memory store, and the paths of the requests a :class:`Session` sent."""

    def __init__(self, provider: OIDCProviderServer, *, jwt: bool = False, **config: Any) -> None:
        registered = provider.jwt_client if jwt else provider.basic_client
        secret = (
            {"private_key": registered.private_jwk}
            if jwt
            else {"client_secret": registered.client_secret}
        )
        self.config = ClientConfig(
            name="local",
            issuer=provider.issuer,
            client_id=registered.client_id,
            redirect_uri=REDIRECT,
            **secret,
            **config,
        )
        self.provider = provider
        self.clock = FrozenClock(time.time())
        self.store = MemoryStore()
        self.paths: list[str] = []


class Session:
    """An OIDCClient kept across several steps (one event loop, one httpx client)."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.loop = asyncio.new_event_loop()

        async def count(request: httpx.Request) -> None:
            harness.paths.append(request.url.path)

        self.http = httpx.AsyncClient(event_hooks={"request": [count]})
        self.client = OIDCClient(
            harness.config, store=harness.store, clock=harness.clock, http=self.http
        )

    def begin(self, next_url: str | None = None, binding: str = BROWSER) -> str:
        url: str = self.loop.run_until_complete(self.client.begin(binding, next_url))
        return url

    def complete(self, callback: str, binding: str = BROWSER) -> VerifiedLogin:
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
        login: VerifiedLogin = self.loop.run_until_complete(self.client.complete(binding, params))
        return login

    def refused(self, callback: str, binding: str = BROWSER) -> OIDCRejected:
        with pytest.raises(OIDCRejected) as excinfo:
            self.complete(callback, binding)
        return excinfo.value

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture
def session(oidc_provider: OIDCProviderServer) -> Any:
    opened = Session(Harness(oidc_provider))
    yield opened
    opened.close()


def _alice(authorize_url: str, **options: Any) -> str:
    with httpx.Client() as browser:
        return complete_login(browser, authorize_url, ALICE.username, ALICE.password, **options)


def _with(callback: str, **changes: str | None) -> str:
    parts = urllib.parse.urlsplit(callback)
    params = dict(urllib.parse.parse_qsl(parts.query))
    for name, value in changes.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return parts._replace(query=urllib.parse.urlencode(params)).geturl()


# -- the flow ------------------------------------------------------------------------------------


def test_authorization_url_asks_for_code_pkce_state_and_nonce(session: Session) -> None:
    url = session.begin("/account")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert url.startswith(session.harness.provider.issuer)
    assert params["response_type"] == "code"
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 43
    assert len(params["nonce"]) >= 43
    assert params["scope"] == "openid email profile"
    assert params["redirect_uri"] == REDIRECT


def test_alice_signs_in_with_client_secret_basic(session: Session) -> None:
    callback = _alice(session.begin("/account?tab=1"))
    assert "iss=" in callback
    login = session.complete(callback)
    assert (login.issuer, login.subject) == (session.harness.provider.issuer, "alice")
    assert login.claims["email"] == ALICE.email
    assert login.claims["email_verified"] is True
    assert login.next == "/account?tab=1"
    assert login.provider == "local"


def test_alice_signs_in_with_private_key_jwt(oidc_provider: OIDCProviderServer) -> None:
    opened = Session(Harness(oidc_provider, jwt=True))
    try:
        login = opened.complete(_alice(opened.begin()))
    finally:
        opened.close()
    assert login.subject == "alice"
    assert login.next == "/"


def test_open_redirect_next_is_refused_before_anything_is_stored(session: Session) -> None:
    with pytest.raises(OIDCRejected) as excinfo:
        session.begin("//evil.example/")
    assert excinfo.value.reason is OIDCReason.NEXT_REFUSED


# -- state ---------------------------------------------------------------------------------------


def test_state_missing_foreign_replayed_and_of_another_browser(session: Session) -> None:
    callback = _alice(session.begin())
    assert session.refused(_with(callback, state=None)).reason is OIDCReason.STATE_MISSING
    assert session.refused(_with(callback, state="x" * 43)).reason is OIDCReason.STATE_UNKNOWN
    # another browser (login CSRF): refused, and the victim's pending login survives it
    assert session.refused(callback, binding="victim").reason is OIDCReason.STATE_MISMATCH
    assert session.complete(callback).subject == "alice"
    assert session.refused(callback).reason is OIDCReason.STATE_UNKNOWN  # replayed


def test_state_expires(session: Session) -> None:
    callback = _alice(session.begin())
    session.harness.clock.advance(601)
    assert session.refused(callback).reason is OIDCReason.STATE_UNKNOWN


def test_parallel_completions_of_one_state_succeed_once(session: Session) -> None:
    callback = _alice(session.begin())
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))

    async def race() -> list[object]:
        tries = [session.client.complete(BROWSER, params) for _ in range(5)]
        return list(await asyncio.gather(*tries, return_exceptions=True))

    results = session.loop.run_until_complete(race())
    wins = [r for r in results if isinstance(r, VerifiedLogin)]
    losses = [r.reason for r in results if isinstance(r, OIDCRejected)]
    assert len(wins) == 1
    assert losses == [OIDCReason.STATE_UNKNOWN] * 4


# -- the code ------------------------------------------------------------------------------------


def test_a_replayed_code_is_code_rejected(session: Session) -> None:
    first = _alice(session.begin())
    session.complete(first)
    fresh = urllib.parse.parse_qs(urllib.parse.urlsplit(session.begin()).query)["state"][0]
    error = session.refused(_with(first, state=fresh))
    assert (error.reason, error.detail) == (OIDCReason.CODE_REJECTED, "invalid_grant")


def test_a_wrong_code_verifier_is_code_rejected(session: Session) -> None:
    first = _alice(session.begin())
    other = urllib.parse.parse_qs(urllib.parse.urlsplit(session.begin()).query)["state"][0]
    # the code of the first login with the second login's state (and so its PKCE verifier)
    error = session.refused(_with(first, state=other))
    assert (error.reason, error.detail) == (OIDCReason.CODE_REJECTED, "invalid_grant")


def test_provider_error_access_denied(session: Session) -> None:
    callback = _alice(session.begin(), deny=True)
    error = session.refused(callback)
    assert (error.reason, error.detail) == (OIDCReason.PROVIDER_ERROR, "access_denied")


def test_mix_up_iss_of_another_provider(
    session: Session, oidc_provider_b: OIDCProviderServer
) -> None:
    callback = _alice(session.begin())
    error = session.refused(_with(callback, iss=oidc_provider_b.issuer))
    assert error.reason is OIDCReason.ISS_MISMATCH
    # the provider says it always sends iss (RFC 9207): a response without it is refused too
    callback = _alice(session.begin())
    assert session.refused(_with(callback, iss=None)).reason is OIDCReason.ISS_MISMATCH


# -- the ID token --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claims", "detail"),
    [
        ({"iss": "http://127.0.0.1:1"}, "iss"),
        ({"aud": "someone-else"}, "aud"),
        ({"azp": "someone-else"}, "azp"),
        ({"exp": 1_000_000_000}, "exp"),
        ({"iat": 4_000_000_000}, "iat"),
        ({"sub": DELETE}, "sub"),
    ],
)
def test_forged_claims_are_id_token_invalid(
    session: Session, claims: dict[str, Any], detail: str
) -> None:
    callback = _alice(session.begin())
    with session.harness.provider.rewrite_id_token(claims=claims) as sent:
        error = session.refused(callback)
    assert len(sent) == 1
    assert (error.reason, error.detail) == (OIDCReason.ID_TOKEN_INVALID, detail)


def test_several_audiences_without_azp(session: Session) -> None:
    callback = _alice(session.begin())
    client_id = session.harness.config.client_id
    with session.harness.provider.rewrite_id_token(
        claims={"aud": [client_id, "other"], "azp": DELETE}
    ):
        error = session.refused(callback)
    assert (error.reason, error.detail) == (OIDCReason.ID_TOKEN_INVALID, "azp")


def test_a_foreign_nonce_is_nonce_mismatch(session: Session) -> None:
    callback = _alice(session.begin())
    with session.harness.provider.rewrite_id_token(claims={"nonce": "another-login"}):
        assert session.refused(callback).reason is OIDCReason.NONCE_MISMATCH


def test_alg_none_and_hmac_with_the_public_key_are_refused(session: Session) -> None:
    provider = session.harness.provider
    public_pem = provider.signing_key.as_pem(private=False)
    for header, key in (({"alg": "none"}, None), ({"alg": "HS256"}, public_pem)):
        callback = _alice(session.begin())
        with provider.rewrite_id_token(header=header, key=key or b"unused"):
            error = session.refused(callback)
        assert (error.reason, error.detail) == (OIDCReason.ID_TOKEN_INVALID, "alg")


def test_a_bad_signature_is_refused(session: Session) -> None:
    provider = session.harness.provider
    stranger = RSAKey.generate_key(2048, parameters={"kid": provider.signing_key.kid})
    callback = _alice(session.begin())
    with provider.rewrite_id_token(header={"kid": provider.signing_key.kid}, key=stranger):
        error = session.refused(callback)
    assert (error.reason, error.detail) == (OIDCReason.ID_TOKEN_INVALID, "signature")


def test_an_unknown_key_refetches_the_jwks_at_most_once_per_interval(session: Session) -> None:
    provider = session.harness.provider
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
    session.complete(_alice(session.begin()))  # warms discovery and the JWKS
    paths = session.harness.paths
    assert paths.count("/jwks") == 1
    for _ in range(3):
        callback = _alice(session.begin())
        with provider.rewrite_id_token(header={"kid": "stranger"}, key=stranger):
            error = session.refused(callback)
        assert (error.reason, error.detail) == (OIDCReason.ID_TOKEN_INVALID, "kid")
    assert paths.count("/jwks") == 1  # still within the 60 s interval
    session.harness.clock.advance(61)
    callback = _alice(session.begin())
    with provider.rewrite_id_token(header={"kid": "stranger"}, key=stranger):
        assert session.refused(callback).detail == "kid"
    assert paths.count("/jwks") == 2
    assert paths.count("/.well-known/openid-configuration") == 1


# -- a provider that is down or answers garbage --------------------------------------------------


def test_token_endpoint_outage_and_garbage(session: Session) -> None:
    provider = session.harness.provider
    cases = (
        (provider.respond("/token", status=503, body=b"down"), OIDCReason.PROVIDER_UNAVAILABLE),
        (provider.unreachable("/token"), OIDCReason.PROVIDER_UNAVAILABLE),
        (provider.respond("/token", body=b"<html>garbage"), OIDCReason.BAD_RESPONSE),
        (provider.respond("/token", body=b'{"access_token": "x"}'), OIDCReason.BAD_RESPONSE),
    )
    for rewrite, reason in cases:
        callback = _alice(session.begin())
        with rewrite:
            assert session.refused(callback).reason is reason


def test_discovery_outage_and_garbage(oidc_provider: OIDCProviderServer) -> None:
    path = "/.well-known/openid-configuration"
    cases = (
        (oidc_provider.respond(path, status=502, body=b""), OIDCReason.PROVIDER_UNAVAILABLE),
        (oidc_provider.unreachable(path), OIDCReason.PROVIDER_UNAVAILABLE),
        (oidc_provider.respond(path, body=b"not json"), OIDCReason.BAD_RESPONSE),
        (oidc_provider.respond(path, body=b'{"issuer": "x"}'), OIDCReason.BAD_RESPONSE),
        (oidc_provider.respond(path, status=404, body=b"{}"), OIDCReason.BAD_RESPONSE),
    )
    for rewrite, reason in cases:
        opened = Session(Harness(oidc_provider))
        try:
            with rewrite, pytest.raises(OIDCRejected) as excinfo:
                opened.begin()
        finally:
            opened.close()
        assert excinfo.value.reason is reason


def test_jwks_outage_and_garbage(oidc_provider: OIDCProviderServer) -> None:
    cases = (
        (oidc_provider.respond("/jwks", status=503, body=b""), OIDCReason.PROVIDER_UNAVAILABLE),
        (oidc_provider.respond("/jwks", body=b"[]"), OIDCReason.BAD_RESPONSE),
        (
            oidc_provider.respond("/jwks", body=b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'),
            OIDCReason.BAD_RESPONSE,
        ),
        (oidc_provider.respond("/jwks", body=b"x" * 600_000), OIDCReason.BAD_RESPONSE),
    )
    for rewrite, reason in cases:
        opened = Session(Harness(oidc_provider))
        try:
            callback = _alice(opened.begin())
            with rewrite:
                error = opened.refused(callback)
        finally:
            opened.close()
        assert error.reason is reason


def test_private_key_as_pem_and_bad_configurations(oidc_provider: OIDCProviderServer) -> None:
    registered = oidc_provider.jwt_client
    config = ClientConfig(
        name="local",
        issuer=oidc_provider.issuer,
        client_id=registered.client_id,
        redirect_uri="http://testserver/auth/local/callback",
        private_key=registered.private_key_pem.decode(),
        private_key_alg=str(registered.private_jwk["alg"]) if registered.private_jwk else None,
    )
    assert config.client_auth().method == "private_key_jwt"
    bad: dict[str, dict[str, Any]] = {
        "issuer": {"issuer": "http://op.example"},
        "redirect_uri": {"redirect_uri": "/callback"},
        "client_secret": {"client_secret": "s", "private_key": registered.private_jwk},
        "scopes": {"scopes": ("email",)},
        "leeway": {"leeway": 3600},
        "allowed_next": {"allowed_next": ("evil.example",)},
    }
    for setting, changes in bad.items():
        values: dict[str, Any] = {
            "name": "local",
            "issuer": oidc_provider.issuer,
            "client_id": "app",
            "redirect_uri": REDIRECT,
            "client_secret": "s",
            **changes,
        }
        if "private_key" in changes:
            values["client_secret"] = "s"
        with pytest.raises(ConfigurationError) as excinfo:
            ClientConfig(**values)
        assert excinfo.value.setting == setting


def test_alice_signs_in_with_a_pem_private_key(oidc_provider: OIDCProviderServer) -> None:
    harness = Harness(oidc_provider, jwt=True)
    registered = oidc_provider.jwt_client
    alg = registered.private_jwk["alg"] if registered.private_jwk else None
    harness.config = dataclasses.replace(
        harness.config, private_key=registered.private_key_pem, private_key_alg=alg
    )
    opened = Session(harness)
    try:
        login = opened.complete(_alice(opened.begin()))
    finally:
        opened.close()
    assert login.subject == "alice"


def test_rp_initiated_logout_ends_the_provider_session(session: Session) -> None:
    registered = session.harness.provider.basic_client
    back_to = registered.post_logout_redirect_uris[0]
    with httpx.Client() as browser:
        callback = complete_login(browser, session.begin(), ALICE.username, ALICE.password)
        login = session.complete(callback)
        url = session.loop.run_until_complete(
            session.client.logout_url(login.id_token, post_logout_redirect_uri=back_to, state="bye")
        )
        assert url is not None
        assert complete_logout(browser, url) == f"{back_to}?state=bye"
        # the provider asks for the password again: a wrong one is refused at its page
        with pytest.raises(ProviderPageError):
            complete_login(browser, session.begin(), ALICE.username, "wrong")


def test_a_rotated_key_is_picked_up_by_the_next_refetch(session: Session) -> None:
    provider = session.harness.provider
    session.complete(_alice(session.begin()))  # warms the JWKS cache with the old keys
    rotated = new_private_jwk("rotated-key", "ES256")
    header = {"alg": "ES256", "kid": "rotated-key"}
    with provider.serve_extra_keys(rotated):
        callback = _alice(session.begin())
        with provider.rewrite_id_token(header=header, key=rotated):
            assert session.refused(callback).detail == "kid"  # refetched too recently
        session.harness.clock.advance(61)
        callback = _alice(session.begin())
        with provider.rewrite_id_token(header=header, key=rotated):
            assert session.complete(callback).subject == "alice"
    assert session.harness.paths.count("/jwks") == 2
