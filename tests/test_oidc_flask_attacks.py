"""Every attack case of issue 16 through the Flask blueprint, against the real local provider.

The same cases as tests/test_oidc_http.py (which runs them through the Starlette routes), here
through ``oidc_blueprint`` on a real Flask app with bastion's sessions: each asserts the exact
status, the refusal's ``error``, the audited ``authn_login_fail`` reason (and detail where it
names the check), and that nobody was logged in (``/me`` answers no user). Forgeries a certified
provider never makes come from the tampering proxy in front of it (tests/oidc_proxy.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask import Flask

from bastion.flask import protect as flask_protect
from bastion.flask import session as flask_session
from bastion.flask.oidc import oidc_blueprint
from bastion.oidc import OIDC, OIDCPolicy, Provider
from oidc_adapter_support import ProviderBrowser, RegisteredOnce
from oidc_support import (  # noqa: F401 (fixtures)
    ALICE,
    DELETE,
    MALLORY,
    new_private_jwk,
    oidc_provider_b_fixture,
    oidc_provider_fixture,
)
from test_oidc_http import Harness

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from oidc_support import OIDCProviderServer

BASE = "https://localhost"
JSON = {"Accept": "application/json"}


class Browser:
    """A Flask test client on ``https://localhost`` (the ``__Host-`` cookies need https)."""

    def __init__(self, app: Flask) -> None:
        self.client: FlaskClient = app.test_client()

    def get(self, path: str, **kwargs: Any) -> TestResponse:
        kwargs.setdefault("headers", JSON)
        return self.client.get(path, base_url=BASE, **kwargs)

    def start(self, query: str = "") -> str:
        response = self.get(f"/auth/local/login{query}")
        assert response.status_code == 302, response.text
        return str(response.headers["Location"])

    def user(self) -> object:
        return self.get("/me").json["user"]  # type: ignore[index]


def flask_app(h: Harness) -> Flask:
    app = Flask(__name__)
    flask_protect(app, h.config)
    app.register_blueprint(oidc_blueprint(h.oidc, on_identity=h.hook))

    @app.get("/me")
    def me() -> dict[str, Any]:
        return {"user": flask_session.user_id}

    return app


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


@pytest.fixture
def h(registered: RegisteredOnce) -> Iterator[Harness]:
    made = harness(registered)
    yield made
    made.oidc.close()


@pytest.fixture
def app(h: Harness) -> Flask:
    return flask_app(h)


def sign_in(authorize: str, account: Any = ALICE, *, deny: bool = False) -> str:
    callback = PROVIDER_BROWSER.sign_in(authorize, account, deny=deny)
    assert callback.startswith(BASE + "/auth/local/callback?"), callback
    return callback.removeprefix(BASE)


def assert_refused(
    h: Harness,
    browser: Browser,
    response: TestResponse,
    status: int,
    reason: str,
    detail: str | None = None,
    *,
    earlier_logins: int = 0,
) -> None:
    assert response.status_code == status, response.text
    assert response.json == {"error": reason, "detail": response.json["detail"]}  # type: ignore[index]
    assert response.headers["Cache-Control"] == "no-store"
    assert browser.user() is None
    event = h.fails()[-1]
    assert event["reason"] == reason
    assert event["method"] == "oidc"
    if detail is not None:
        assert event["detail"] == detail
    assert len(h.successes()) == earlier_logins


def _with_state(callback: str, other_authorize: str) -> str:
    """``callback``'s code and iss under the ``state`` of another login's authorization URL."""
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    params["state"] = parse_qs(urlsplit(other_authorize).query)["state"][0]
    return f"{urlsplit(callback).path}?{urlencode(params)}"


# -- the flow that works ------------------------------------------------------------------------


def test_sign_in_rotates_the_session_and_follows_next(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    authorize = browser.start("?next=/account")
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"]
    assert {"state", "nonce", "code_challenge"} <= query.keys()
    before = browser.client.get_cookie("__Host-session", domain="localhost")
    response = browser.get(sign_in(authorize))
    assert response.status_code == 303
    assert response.headers["Location"] == "/account"
    after = browser.client.get_cookie("__Host-session", domain="localhost")
    assert after is not None
    assert before is None or after.value != before.value
    assert browser.user() == "user-1"
    assert h.successes() == [{"method": "oidc", "provider": "local"}]


# -- state ------------------------------------------------------------------------------------


def test_callback_without_state(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    browser.start()
    response = browser.get("/auth/local/callback?code=abc&iss=x")
    assert_refused(h, browser, response, 400, "state_missing")


def test_unknown_state(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    browser.start()
    response = browser.get("/auth/local/callback?state=forged&code=x")
    assert_refused(h, browser, response, 400, "state_unknown")


def test_foreign_state_from_another_browser(h: Harness, app: Flask) -> None:
    attacker, victim = Browser(app), Browser(app)
    callback = sign_in(attacker.start(), MALLORY)  # login CSRF: the attacker's own sign-in
    victim.start()  # the victim has a pre-login session of its own
    response = victim.get(callback)
    assert_refused(h, victim, response, 400, "state_mismatch")
    # The forged use did not burn the attacker's pending login: it still completes there.
    assert attacker.get(callback).status_code == 403  # mallory's e-mail links to nobody


def test_replayed_state_in_another_browser(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    callback = sign_in(browser.start())
    assert browser.get(callback).status_code == 303
    replay = Browser(app)
    response = replay.get(callback)
    assert response.status_code == 400
    assert response.json["error"] == "state_unknown"  # type: ignore[index]
    assert replay.user() is None
    assert h.fails()[-1]["reason"] == "state_unknown"


def test_replayed_state_in_the_same_browser(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    callback = sign_in(browser.start())
    assert browser.get(callback).status_code == 303
    response = browser.get(callback)
    assert response.status_code == 400
    assert response.json["error"] == "state_unknown"  # type: ignore[index]
    assert h.fails()[-1]["reason"] == "state_unknown"
    assert len(h.successes()) == 1


def test_expired_state(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    callback = sign_in(browser.start())
    h.clock.advance(h.policy.state_lifetime + 1)
    response = browser.get(callback)
    assert_refused(h, browser, response, 400, "state_unknown")


def test_repeated_state_parameter(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    callback = sign_in(browser.start())
    response = browser.get(callback + "&state=second")
    assert_refused(h, browser, response, 400, "state_unknown", "repeated")


# -- code and PKCE ----------------------------------------------------------------------------


def test_code_replayed_under_a_fresh_state(h: Harness, app: Flask) -> None:
    first = Browser(app)
    used = sign_in(first.start())
    assert first.get(used).status_code == 303
    browser = Browser(app)
    response = browser.get(_with_state(used, browser.start()))
    assert_refused(h, browser, response, 400, "code_rejected", "invalid_grant", earlier_logins=1)


def test_code_with_another_logins_verifier(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    code_of_first = sign_in(browser.start())  # its verifier stays with its own state
    response = browser.get(_with_state(code_of_first, browser.start()))
    assert_refused(h, browser, response, 400, "code_rejected", "invalid_grant")


def test_token_request_without_the_verifier(
    h: Harness, app: Flask, oidc_provider: OIDCProviderServer
) -> None:
    def drop_verifier(body: bytes) -> bytes:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        assert form.pop("code_verifier")  # bastion sent one
        return urlencode(form).encode()

    browser = Browser(app)
    callback = sign_in(browser.start())
    with oidc_provider.proxy.rewrite_request("/token", drop_verifier):
        response = browser.get(callback)
    assert_refused(h, browser, response, 400, "code_rejected", "invalid_grant")


# -- the ID token -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forgery", "reason", "detail"),
    [
        ({"claims": {"iss": "http://127.0.0.1:1/evil"}}, "id_token_invalid", "iss"),
        ({"claims": {"aud": "someone-else"}}, "id_token_invalid", "aud"),
        ({"claims": {"aud": ["someone-else"], "azp": "someone-else"}}, "id_token_invalid", "aud"),
        ({"claims": {"azp": "another-client"}}, "id_token_invalid", "azp"),
        ({"claims": lambda c: {**c, "exp": c["iat"] - 300}}, "id_token_invalid", "exp"),
        ({"claims": lambda c: {**c, "iat": c["iat"] + 3600}}, "id_token_invalid", "iat"),
        ({"claims": {"nonce": "not-this-login"}}, "nonce_mismatch", None),
        ({"claims": {"nonce": DELETE}}, "nonce_mismatch", None),
        ({"header": {"alg": "none"}}, "id_token_invalid", "alg"),
        (
            {"header": {"kid": "unknown"}, "key": new_private_jwk("unknown", "RS256")},
            "id_token_invalid",
            "kid",
        ),
    ],
    ids=[
        "wrong-iss",
        "wrong-aud",
        "aud-and-azp-another-client",
        "wrong-azp",
        "expired",
        "iat-in-the-future",
        "nonce-mismatch",
        "nonce-missing",
        "alg-none",
        "unknown-key",
    ],
)
def test_forged_id_tokens(
    h: Harness,
    app: Flask,
    oidc_provider: OIDCProviderServer,
    forgery: dict[str, Any],
    reason: str,
    detail: str | None,
) -> None:
    browser = Browser(app)
    callback = sign_in(browser.start())
    with oidc_provider.rewrite_id_token(**forgery) as sent:
        response = browser.get(callback)
    assert sent, "the proxy forged no token"
    assert_refused(h, browser, response, 400, reason, detail)


def test_hmac_signed_with_the_providers_public_key(
    h: Harness, app: Flask, oidc_provider: OIDCProviderServer
) -> None:
    browser = Browser(app)
    callback = sign_in(browser.start())
    with oidc_provider.rewrite_id_token(header={"alg": "HS256"}, key=oidc_provider.public_key_pem):
        response = browser.get(callback)
    assert_refused(h, browser, response, 400, "id_token_invalid", "alg")


# -- mix-up -------------------------------------------------------------------------------------


def test_mix_up_a_response_at_another_providers_callback(
    registered: RegisteredOnce, oidc_provider_b: OIDCProviderServer
) -> None:
    h = harness(registered)
    other = oidc_provider_b.register_client(redirect_uris=[f"{BASE}/auth/other/callback"])
    h.policy = OIDCPolicy(
        providers=(
            *h.policy.providers,
            Provider(
                name="other",
                issuer=oidc_provider_b.issuer,
                client_id=other.client_id,
                client_secret=other.client_secret,
            ),
        )
    )
    h.oidc.close()
    h.oidc = OIDC(h.policy, store=h.store, auditor=h.auditor, clock=h.clock)
    try:
        browser = Browser(flask_app(h))
        callback = sign_in(browser.start())
        at_b = callback.replace("/auth/local/callback", "/auth/other/callback")
        response = browser.get(at_b)
        assert_refused(h, browser, response, 400, "iss_mismatch")
        assert h.fails()[-1]["provider"] == "other"
    finally:
        h.oidc.close()


def test_iss_parameter_of_another_issuer(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    callback = sign_in(browser.start())
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    params["iss"] = "http://127.0.0.1:1"
    response = browser.get(f"/auth/local/callback?{urlencode(params)}")
    assert_refused(h, browser, response, 400, "iss_mismatch")


def test_iss_parameter_missing(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    callback = sign_in(browser.start())
    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items() if k != "iss"}
    response = browser.get(f"/auth/local/callback?{urlencode(params)}")
    assert_refused(h, browser, response, 400, "iss_mismatch")


# -- next -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "///evil.example",
        "https:evil.example",
        "https://evil.example/",
        "http://localhost.evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "%2F%2Fevil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "evil.example",
    ],
)
def test_next_open_redirects(h: Harness, app: Flask, target: str) -> None:
    browser = Browser(app)
    response = browser.get("/auth/local/login", query_string={"next": target})
    assert_refused(h, browser, response, 400, "next_refused")
    assert "Location" not in response.headers


def test_next_given_twice(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    response = browser.get("/auth/local/login?next=/a&next=//evil.example")
    assert_refused(h, browser, response, 400, "next_refused", "repeated")


def test_a_same_origin_next_is_followed_with_its_query(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    authorize = browser.start("?" + urlencode({"next": "/docs/1?tab=a%20b"}))
    response = browser.get(sign_in(authorize))
    assert response.status_code == 303
    assert response.headers["Location"] == "/docs/1?tab=a%20b"


# -- accounts ---------------------------------------------------------------------------------


def test_linking_by_an_unverified_email(registered: RegisteredOnce) -> None:
    h = harness(registered, link=True)
    try:
        browser = Browser(flask_app(h))
        response = browser.get(sign_in(browser.start(), MALLORY))
        assert_refused(h, browser, response, 403, "unverified_email", "not_verified")
    finally:
        h.oidc.close()


def test_linking_by_email_when_the_app_does_not_allow_it(h: Harness, app: Flask) -> None:
    h.users.clear()  # alice's (iss, sub) is not mapped yet: only her verified e-mail matches
    browser = Browser(app)
    response = browser.get(sign_in(browser.start()))
    assert_refused(h, browser, response, 403, "unverified_email", "linking_disabled")


def test_linking_by_a_verified_email_when_allowed(registered: RegisteredOnce) -> None:
    h = harness(registered, link=True)
    h.users.clear()
    try:
        browser = Browser(flask_app(h))
        assert browser.get(sign_in(browser.start())).status_code == 303
        assert browser.user() == "user-1"
    finally:
        h.oidc.close()


def test_no_account_for_the_identity(registered: RegisteredOnce) -> None:
    h = harness(registered, link=True)
    h.users.clear()
    h.by_email.clear()  # a verified e-mail nobody has: the hook answers None
    try:
        browser = Browser(flask_app(h))
        response = browser.get(sign_in(browser.start()))
        assert_refused(h, browser, response, 403, "no_account")
    finally:
        h.oidc.close()


# -- the provider's answers ---------------------------------------------------------------------


def test_access_denied_at_the_provider(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    response = browser.get(sign_in(browser.start(), deny=True))
    assert_refused(h, browser, response, 400, "provider_error", "access_denied")


def test_provider_error_without_state(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    response = browser.get("/auth/local/callback?error=access_denied")
    assert_refused(h, browser, response, 400, "provider_error", "access_denied")


@pytest.mark.parametrize("host", ["bad host", "evil.example:abc", "[::1", "x@evil.example"])
def test_an_invalid_host_header_is_a_400(h: Harness, app: Flask, host: str) -> None:
    browser = Browser(app)
    response = browser.get("/auth/local/login", headers={**JSON, "Host": host})
    assert_refused(h, browser, response, 400, "bad_host")
    assert "Location" not in response.headers


def test_unknown_provider_is_a_404_and_audited(h: Harness, app: Flask) -> None:
    browser = Browser(app)
    for path in ("/auth/nowhere/login", "/auth/nowhere/callback?state=x&code=y"):
        response = browser.get(path)
        assert response.status_code == 404
        assert response.json["error"] == "unknown_provider"  # type: ignore[index]
        assert h.fails()[-1] == {
            "method": "oidc",
            "reason": "unknown_provider",
            "provider": "nowhere",
        }
    assert len(h.fails()) == 2
