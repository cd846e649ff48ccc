"""The OpenID Connect routes (Starlette, FastAPI, Flask) against the real local provider.

Each attack test asserts the exact status, the refusal's ``error`` (the reason), the audit
event, and that no session was logged in (``/me`` answers no user).
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

with warnings.catch_warnings():
    # Starlette announces its test client's move to httpx2 at import time; only that notice.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion import Bastion
from bastion.asgi import load_session, protect
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.errors import ConfigurationError
from bastion.flask import protect as flask_protect
from bastion.flask import session as flask_session
from bastion.flask.oidc import oidc_blueprint
from bastion.oidc import OIDC, Identity, OIDCPolicy, Provider
from bastion.oidc.starlette import oidc_router
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from oidc_support import (  # noqa: F401 (fixtures)
    ALICE,
    MALLORY,
    complete_login,
    new_private_jwk,
    oidc_provider_b_fixture,
    oidc_provider_fixture,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from starlette.requests import Request

    from oidc_support import OIDCProviderServer

JSON = {"accept": "application/json"}
HTTPS = "https://testserver"


class Harness:
    def __init__(self, provider: OIDCProviderServer, *, link: bool = False) -> None:
        self.sink = RecordingAuditSink()
        self.clock = FrozenClock(time.time())
        self.store = MemoryStore()
        keyring = KeyRing.generate()
        self.auditor = Auditor(IdentifierHasher(keyring), self.clock, self.sink, aggregation=None)
        client = provider.register_client(
            redirect_uris=[
                "https://testserver/auth/local/callback",  # Starlette's client, https
                "https://localhost/auth/local/callback",  # Flask's
            ]
        )
        self.policy = OIDCPolicy(
            providers=(
                Provider(
                    name="local",
                    issuer=provider.issuer,
                    client_id=client.client_id,
                    client_secret=client.client_secret,
                ),
            ),
            link_verified_email=link,
        )
        self.oidc = OIDC(self.policy, store=self.store, auditor=self.auditor, clock=self.clock)
        self.config = Bastion(
            store=self.store,
            keyring=keyring,
            headers=None,
            auditor=self.auditor,
            clock=self.clock,
            environment=Environment.TEST,
        )
        self.users = {("sub", ALICE.username): "user-1"}
        self.by_email = {ALICE.email: "user-1"}

    def hook(self, identity: Identity) -> str | None:
        found = self.users.get(("sub", identity.subject))
        if found is None and identity.email is not None:
            return self.by_email.get(self.oidc.linkable_email(identity))
        return found

    def fails(self) -> list[dict[str, Any]]:
        return [
            dict(event.details) for event in self.sink.events if event.name == "authn_login_fail"
        ]

    def successes(self) -> list[dict[str, Any]]:
        return [
            dict(event.details) for event in self.sink.events if event.name == "authn_login_success"
        ]


async def me(request: Request) -> JSONResponse:
    session = await load_session(request)
    return JSONResponse({"user": session.user_id})


def starlette_app(h: Harness) -> Any:
    app = Starlette(
        routes=[Route("/me", me), Mount("/auth", oidc_router(h.oidc, on_identity=h.hook))]
    )
    return protect(app, h.config)


@pytest.fixture
def h(oidc_provider: OIDCProviderServer) -> Iterator[Harness]:
    harness = Harness(oidc_provider)
    yield harness
    harness.oidc.close()


def start(client: TestClient, path: str = "/auth/local/login") -> str:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 302, response.text
    return str(response.headers["location"])


def sign_in(authorize: str, account: Any = ALICE) -> str:
    with httpx.Client() as browser:
        callback = complete_login(browser, authorize, account.username, account.password)
    return callback.removeprefix(HTTPS)


def assert_refused(client: TestClient, response: Any, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason
    assert client.get("/me").json() == {"user": None}


def test_sign_in_logs_in_with_a_new_session_and_goes_to_next(h: Harness) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        authorize = start(client, "/auth/local/login?next=/account")
        assert "code_challenge_method=S256" in authorize
        assert "nonce=" in authorize
        before = client.cookies.get("__Host-session") or dict(client.cookies)
        response = client.get(sign_in(authorize), follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/account"
        assert client.get("/me").json() == {"user": "user-1"}
        assert dict(client.cookies) != before
    assert h.successes() == [{"method": "oidc", "provider": "local"}]


def test_callback_without_state(h: Harness) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        response = client.get("/auth/local/callback?code=abc", headers=JSON)
        assert_refused(client, response, 400, "state_missing")
    assert h.fails()[-1]["reason"] == "state_missing"


def test_replayed_callback_is_refused(h: Harness) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        callback = sign_in(start(client))
        assert client.get(callback, follow_redirects=False).status_code == 303
        client.get("/me")
        client.cookies.clear()
        response = client.get(callback, headers=JSON)
        assert_refused(client, response, 400, "state_unknown")
    assert h.fails()[-1]["reason"] == "state_unknown"


def test_foreign_state_from_another_browser_is_refused(h: Harness) -> None:
    app = starlette_app(h)
    with TestClient(app, base_url=HTTPS) as attacker, TestClient(app, base_url=HTTPS) as victim:
        callback = sign_in(start(attacker), MALLORY)
        victim.get("/me")
        response = victim.get(callback, headers=JSON)
        assert_refused(victim, response, 400, "state_mismatch")
        # the attacker's own pending login was not burnt by the forged use
    assert h.fails()[-1]["reason"] == "state_mismatch"


def test_unknown_state(h: Harness) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        start(client)
        response = client.get("/auth/local/callback?state=forged&code=x", headers=JSON)
        assert_refused(client, response, 400, "state_unknown")
    assert h.fails()[-1]["reason"] == "state_unknown"


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "https:evil.example",
        "/\\evil.example",
        "/%2F%2Fevil.example",
        "https://evil.example/",
    ],
)
def test_next_open_redirects_are_refused(h: Harness, target: str) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        response = client.get("/auth/local/login", params={"next": target}, headers=JSON)
        assert_refused(client, response, 400, "next_refused")
    assert h.fails()[-1]["reason"] == "next_refused"


def test_wrong_audience_is_refused(h: Harness, oidc_provider: OIDCProviderServer) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        callback = sign_in(start(client))
        with oidc_provider.rewrite_id_token(claims={"aud": "someone-else"}):
            response = client.get(callback, headers=JSON)
        assert_refused(client, response, 400, "id_token_invalid")
    assert h.fails()[-1]["reason"] == "id_token_invalid"


def test_alg_none_is_refused(h: Harness, oidc_provider: OIDCProviderServer) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        callback = sign_in(start(client))
        with oidc_provider.rewrite_id_token(header={"alg": "none"}):
            response = client.get(callback, headers=JSON)
        assert_refused(client, response, 400, "id_token_invalid")


def test_provider_down_is_a_503(h: Harness, oidc_provider: OIDCProviderServer) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        callback = sign_in(start(client))
        with oidc_provider.respond("/token", status=503, body=b"down"):
            response = client.get(callback, headers=JSON)
        assert_refused(client, response, 503, "provider_unavailable")
        assert response.headers["retry-after"] == "5"
    assert h.fails()[-1]["reason"] == "provider_unavailable"


def test_provider_garbage_is_a_502(h: Harness, oidc_provider: OIDCProviderServer) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        callback = sign_in(start(client))
        with oidc_provider.respond("/token", status=200, body=b"<html>garbage"):
            response = client.get(callback, headers=JSON)
        assert_refused(client, response, 502, "bad_response")


def test_linking_by_an_unverified_email_is_refused(oidc_provider: OIDCProviderServer) -> None:
    h = Harness(oidc_provider, link=True)
    try:
        with TestClient(starlette_app(h), base_url=HTTPS) as client:
            response = client.get(sign_in(start(client), MALLORY), headers=JSON)
            assert_refused(client, response, 403, "unverified_email")
        assert h.fails()[-1]["reason"] == "unverified_email"
    finally:
        h.oidc.close()


def test_flask_blueprint_signs_in(oidc_provider: OIDCProviderServer) -> None:
    h = Harness(oidc_provider)
    app = Flask(__name__)
    flask_protect(app, h.config)
    app.register_blueprint(oidc_blueprint(h.oidc, on_identity=h.hook))

    @app.get("/me")
    def flask_me() -> dict[str, Any]:
        return {"user": flask_session.user_id}

    try:
        with app.test_client() as client:
            login = client.get("/auth/local/login?next=/account", base_url="https://localhost")
            assert login.status_code == 302
            callback = sign_in(login.headers["Location"]).removeprefix("https://localhost")
            response = client.get(callback, base_url="https://localhost")
            assert response.status_code == 303
            assert response.headers["Location"] == "/account"
            assert client.get("/me", base_url="https://localhost").json == {"user": "user-1"}
            bad = client.get(
                "/auth/local/callback?code=x", headers=JSON, base_url="https://localhost"
            )
            assert bad.status_code == 400
            assert bad.json["error"] == "state_missing"
    finally:
        h.oidc.close()


def test_provider_repr_redacts_the_secret(oidc_provider: OIDCProviderServer) -> None:
    provider = Provider(
        name="local", issuer=oidc_provider.issuer, client_id="app", client_secret="s3cret-value"
    )
    assert "s3cret-value" not in repr(provider)
    with pytest.raises(ConfigurationError):
        Provider(name="Bad Name", issuer=oidc_provider.issuer, client_id="a", client_secret="x")


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"claims": {"iss": "http://127.0.0.1:1/evil"}}, "id_token_invalid"),
        ({"claims": {"azp": "another-client"}}, "id_token_invalid"),
        ({"claims": lambda c: {**c, "exp": c["iat"] - 300}}, "id_token_invalid"),  # past leeway
        ({"claims": {"nonce": "not-this-login"}}, "nonce_mismatch"),
        (
            {"header": {"kid": "unknown"}, "key": new_private_jwk("unknown", "RS256")},
            "id_token_invalid",
        ),
    ],
    ids=["wrong-iss", "wrong-azp", "expired", "nonce", "unknown-key"],
)
def test_forged_id_tokens_are_refused(
    h: Harness, oidc_provider: OIDCProviderServer, forgery: dict[str, Any], reason: str
) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        callback = sign_in(start(client))
        with oidc_provider.rewrite_id_token(**forgery) as sent:
            response = client.get(callback, headers=JSON)
        assert sent, "the proxy forged no token"
        assert_refused(client, response, 400, reason)
    assert h.fails()[-1]["reason"] == reason


def test_provider_unreachable_is_a_503(h: Harness, oidc_provider: OIDCProviderServer) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        callback = sign_in(start(client))
        with oidc_provider.unreachable("/token"):
            response = client.get(callback, headers=JSON)
        assert_refused(client, response, 503, "provider_unavailable")


def test_mix_up_a_response_at_another_providers_callback(
    oidc_provider: OIDCProviderServer, oidc_provider_b: OIDCProviderServer
) -> None:
    h = Harness(oidc_provider)
    other = oidc_provider_b.register_client(
        redirect_uris=["https://testserver/auth/other/callback"]
    )
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
        with TestClient(starlette_app(h), base_url=HTTPS) as client:
            callback = sign_in(start(client))
            at_b = callback.replace("/auth/local/callback", "/auth/other/callback")
            response = client.get(at_b, headers=JSON)
            assert_refused(client, response, 400, "iss_mismatch")
        assert h.fails()[-1]["reason"] == "iss_mismatch"
    finally:
        h.oidc.close()


def test_fastapi_mounts_the_router(h: Harness) -> None:
    from fastapi import FastAPI  # noqa: PLC0415

    api = FastAPI()
    api.add_route("/me", me)
    api.mount("/auth", oidc_router(h.oidc, on_identity=h.hook))
    with TestClient(protect(api, h.config), base_url=HTTPS) as client:
        response = client.get(sign_in(start(client)), follow_redirects=False)
        assert response.status_code == 303
        assert client.get("/me").json() == {"user": "user-1"}
        bad = client.get("/auth/nowhere/login", headers=JSON)
        assert bad.status_code == 404
        assert bad.json()["error"] == "unknown_provider"


def _with_state(callback: str, other: str) -> str:
    """``callback``'s code and iss under the ``state`` of ``other``."""
    from urllib.parse import parse_qs, urlencode, urlsplit  # noqa: PLC0415

    params = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
    params["state"] = parse_qs(urlsplit(other).query)["state"][0]
    return f"{urlsplit(callback).path}?{urlencode(params)}"


def test_a_used_code_replayed_under_a_fresh_state_is_refused(h: Harness) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        first = sign_in(start(client))
        assert client.get(first, follow_redirects=False).status_code == 303
        client.cookies.clear()
        fresh = start(client)  # a new login: its own state and verifier
        response = client.get(_with_state(first, fresh), headers=JSON)
        assert_refused(client, response, 400, "code_rejected")
    assert h.fails()[-1]["reason"] == "code_rejected"


def test_a_code_with_another_logins_verifier_is_refused(h: Harness) -> None:
    with TestClient(starlette_app(h), base_url=HTTPS) as client:
        first = sign_in(start(client))  # never used: its verifier stays with its own state
        fresh = start(client)
        response = client.get(_with_state(first, fresh), headers=JSON)
        assert_refused(client, response, 400, "code_rejected")
    assert h.fails()[-1]["reason"] == "code_rejected"
