"""The attack cases tests/test_oidc_http.py does not cover, through the Starlette routes, so
that every case of issue 16 runs through both adapters (Flask: tests/test_oidc_flask_attacks.py).

Each asserts the status, the refusal's ``error``, the audited reason and detail, and that
nobody was logged in.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from oidc_adapter_support import ProviderBrowser, RegisteredOnce
from oidc_support import ALICE, DELETE, MALLORY, oidc_provider_fixture  # noqa: F401 (fixture)
from test_oidc_http import HTTPS, JSON, Harness, starlette_app, start

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from oidc_support import OIDCProviderServer


PROVIDER_BROWSER = ProviderBrowser()


@pytest.fixture(scope="module", autouse=True)
def _close_the_provider_browser() -> Iterator[None]:
    yield
    PROVIDER_BROWSER.close()


@pytest.fixture(scope="module")
def registered(oidc_provider: OIDCProviderServer) -> RegisteredOnce:
    return RegisteredOnce(oidc_provider)


def harness(registered: RegisteredOnce, *, link: bool = False) -> Harness:
    return Harness(registered, link=link)  # type: ignore[arg-type]


def sign_in(authorize: str, account: Any = ALICE, *, deny: bool = False) -> str:
    return PROVIDER_BROWSER.sign_in(authorize, account, deny=deny).removeprefix(HTTPS)


@pytest.fixture
def h(registered: RegisteredOnce) -> Iterator[Harness]:
    made = harness(registered)
    yield made
    made.oidc.close()


@pytest.fixture
def client(h: Harness) -> Iterator[TestClient]:
    with TestClient(starlette_app(h), base_url=HTTPS) as made:
        yield made


def assert_refused(
    h: Harness,
    client: TestClient,
    response: httpx.Response,
    status: int,
    reason: str,
    detail: str | None = None,
) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    assert response.headers["cache-control"] == "no-store"
    assert client.get("/me").json() == {"user": None}
    event = h.fails()[-1]
    assert (event["reason"], event["method"], event["provider"]) == (reason, "oidc", "local")
    assert event.get("detail") == detail
    assert h.successes() == []


def _query(callback: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}


def test_token_request_without_the_verifier(
    h: Harness, client: TestClient, oidc_provider: OIDCProviderServer
) -> None:
    def drop_verifier(body: bytes) -> bytes:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        assert form.pop("code_verifier")
        return urlencode(form).encode()

    callback = sign_in(start(client))
    with oidc_provider.proxy.rewrite_request("/token", drop_verifier):
        response = client.get(callback, headers=JSON)
    assert_refused(h, client, response, 400, "code_rejected", "invalid_grant")


def test_hmac_signed_with_the_providers_public_key(
    h: Harness, client: TestClient, oidc_provider: OIDCProviderServer
) -> None:
    callback = sign_in(start(client))
    with oidc_provider.rewrite_id_token(header={"alg": "HS256"}, key=oidc_provider.public_key_pem):
        response = client.get(callback, headers=JSON)
    assert_refused(h, client, response, 400, "id_token_invalid", "alg")


@pytest.mark.parametrize(
    ("forgery", "reason", "detail"),
    [
        ({"claims": {"nonce": DELETE}}, "nonce_mismatch", None),
        ({"claims": lambda c: {**c, "iat": c["iat"] + 3600}}, "id_token_invalid", "iat"),
        ({"claims": {"aud": ["someone-else"], "azp": "someone-else"}}, "id_token_invalid", "aud"),
        ({"claims": {"sub": DELETE}}, "id_token_invalid", "sub"),
    ],
    ids=["nonce-missing", "iat-in-the-future", "aud-and-azp-another-client", "sub-missing"],
)
def test_more_forged_id_tokens(
    h: Harness,
    client: TestClient,
    oidc_provider: OIDCProviderServer,
    forgery: dict[str, Any],
    reason: str,
    detail: str | None,
) -> None:
    callback = sign_in(start(client))
    with oidc_provider.rewrite_id_token(**forgery) as sent:
        response = client.get(callback, headers=JSON)
    assert sent
    assert_refused(h, client, response, 400, reason, detail)


def test_expired_state(h: Harness, client: TestClient) -> None:
    callback = sign_in(start(client))
    h.clock.advance(h.policy.state_lifetime + 1)
    assert_refused(h, client, client.get(callback, headers=JSON), 400, "state_unknown")


def test_repeated_state_parameter(h: Harness, client: TestClient) -> None:
    callback = sign_in(start(client))
    response = client.get(callback + "&state=second", headers=JSON)
    assert_refused(h, client, response, 400, "state_unknown", "repeated")


@pytest.mark.parametrize("iss", ["http://127.0.0.1:1", None], ids=["another-issuer", "missing"])
def test_iss_parameter(h: Harness, client: TestClient, iss: str | None) -> None:
    params = _query(sign_in(start(client)))
    if iss is None:
        del params["iss"]
    else:
        params["iss"] = iss
    response = client.get(f"/auth/local/callback?{urlencode(params)}", headers=JSON)
    assert_refused(h, client, response, 400, "iss_mismatch")


def test_access_denied_at_the_provider(h: Harness, client: TestClient) -> None:
    response = client.get(sign_in(start(client), deny=True), headers=JSON)
    assert_refused(h, client, response, 400, "provider_error", "access_denied")


@pytest.mark.parametrize(
    "target",
    [
        "///evil.example",
        "http://testserver.evil.example/",
        "\\\\evil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
    ],
)
def test_more_next_open_redirects(h: Harness, client: TestClient, target: str) -> None:
    response = client.get("/auth/local/login", params={"next": target}, headers=JSON)
    assert_refused(h, client, response, 400, "next_refused")
    assert "location" not in response.headers


def test_next_given_twice(h: Harness, client: TestClient) -> None:
    response = client.get("/auth/local/login?next=/a&next=//evil.example", headers=JSON)
    assert_refused(h, client, response, 400, "next_refused", "repeated")


def test_linking_by_email_when_the_app_does_not_allow_it(h: Harness, client: TestClient) -> None:
    h.users.clear()  # alice's (iss, sub) is not mapped: only her verified e-mail matches
    response = client.get(sign_in(start(client)), headers=JSON)
    assert_refused(h, client, response, 403, "unverified_email", "linking_disabled")


def test_unverified_email_detail(registered: RegisteredOnce) -> None:
    h = harness(registered, link=True)
    try:
        with TestClient(starlette_app(h), base_url=HTTPS) as client:
            response = client.get(sign_in(start(client), MALLORY), headers=JSON)
            assert_refused(h, client, response, 403, "unverified_email", "not_verified")
    finally:
        h.oidc.close()


def test_no_account(registered: RegisteredOnce) -> None:
    h = harness(registered, link=True)
    h.users.clear()
    h.by_email.clear()
    try:
        with TestClient(starlette_app(h), base_url=HTTPS) as client:
            response = client.get(sign_in(start(client)), headers=JSON)
            assert_refused(h, client, response, 403, "no_account")
    finally:
        h.oidc.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["bad host", "evil.example:abc", "x@evil.example"])
async def test_an_invalid_host_header_is_a_400(h: Harness, host: str) -> None:
    """Starlette reads an invalid ``Host`` as absent and falls back on the server address,
    which httpx's ASGI transport gives without a port: no callback URL can be built, so the
    login is refused (it was the redirect URI check's ConfigurationError, a 500)."""
    import httpx  # noqa: PLC0415

    transport = httpx.ASGITransport(app=starlette_app(h))
    async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as client:
        response = await client.get("/auth/local/login", headers={**JSON, "host": host})
        assert (response.status_code, response.json()["error"]) == (400, "bad_host")
        assert "location" not in response.headers
    assert h.fails()[-1] == {"method": "oidc", "reason": "bad_host", "provider": "local"}
