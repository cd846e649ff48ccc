"""Access tokens under WSGI: ``bastion.wsgi.bearer.BearerMiddleware`` around a plain WSGI app and
a Flask app, and Flask's ``@bearer_required`` / ``principal()``, through werkzeug's client.

The verifier is tests/bearer_support.py's HMAC verifier over a real store (it stands in for
bastion's token service until that is merged).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from tests.bearer_support import (
    CHALLENGE_MISSING,
    MALFORMED_HEADERS,
    NOW,
    REALM,
    BrokenVerifier,
    HMACVerifier,
    auth,
    challenge,
    make_token,
)
from werkzeug.test import Client

import bastion.flask
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.tokens.bearer import BearerChallenge
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi.bearer import BearerMiddleware, principal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from werkzeug.test import TestResponse

    from bastion.testing.redis_server import RedisServer

JSON = {"Accept": "application/json"}
CHALLENGE = BearerChallenge(realm=REALM)


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    found = principal(environ)
    body = json.dumps({"sub": None if found is None else found.subject}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def flask_app(verifier: HMACVerifier | None) -> Flask:
    app = Flask(__name__)
    bastion.flask.init_bearer(app, verifier, challenge=CHALLENGE)

    @app.get("/api/me")
    @bastion.flask.bearer_required()
    def me() -> dict[str, Any]:
        found = bastion.flask.principal()
        return {"sub": None if found is None else found.subject}

    @app.get("/api/admin")
    @bastion.flask.bearer_required("admin", "read")
    def admin() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/open")
    def open_view() -> dict[str, Any]:
        return {"sub": bastion.flask.principal()}

    return app


@pytest.fixture
def verifier() -> HMACVerifier:
    return HMACVerifier(MemoryStore())


@pytest.fixture(params=["wsgi", "flask-decorator", "flask-middleware"])
def client(request: pytest.FixtureRequest, verifier: HMACVerifier) -> Client:
    """The three WSGI shapes, each answering /api/me (any token) and /api/admin (admin read)."""
    if request.param == "wsgi":
        return Client(
            BearerMiddleware(
                wsgi_app,
                verifier,
                protected=["/api/*"],
                scopes={"/api/admin": ["admin", "read"]},
                challenge=CHALLENGE,
            )
        )
    app = flask_app(verifier if request.param == "flask-decorator" else None)
    if request.param == "flask-middleware":
        app.wsgi_app = BearerMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, verifier, protected=["/api/*"], challenge=CHALLENGE
        )
    return Client(app)


def body_has_no_token(response: TestResponse, token: str) -> None:
    for part in token.split("."):
        if len(part) > 3:
            assert part not in response.get_data(as_text=True)
            assert part not in response.headers.get("WWW-Authenticate", "")


def test_a_valid_token_passes(client: Client, verifier: HMACVerifier) -> None:
    response = client.get("/api/me", headers=auth(make_token()), base_url="https://api.test")
    assert response.status_code == 200
    assert response.get_json() == {"sub": "alice"}
    assert verifier.seen[-1].url == "https://api.test/api/me"


def test_no_header_is_401_with_a_bare_challenge(client: Client) -> None:
    response = client.get("/api/me", headers=JSON)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE_MISSING
    assert response.get_json() == {
        "error": "unauthorized",
        "detail": "Authentication required: send an access token",
    }


@pytest.mark.parametrize(
    ("name", "headers"), MALFORMED_HEADERS, ids=[c[0] for c in MALFORMED_HEADERS]
)
def test_a_malformed_header_is_400(
    client: Client, verifier: HMACVerifier, name: str, headers: list[tuple[str, str]]
) -> None:
    response = client.get("/api/me", headers=headers)
    assert response.status_code == 400
    description = "The Authorization header is " + (
        "too large" if name == "oversized" else "malformed"
    )
    assert response.headers["WWW-Authenticate"] == challenge("invalid_request", description)
    assert verifier.seen == []


def test_an_invalid_token_is_401_invalid_token(client: Client) -> None:
    forged = make_token(key=b"z" * 32)
    response = client.get("/api/me", headers={**auth(forged), "Accept": "text/html"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == challenge(
        "invalid_token", "The access token is invalid"
    )
    assert response.mimetype == "text/plain"
    body_has_no_token(response, forged)


def test_a_missing_scope_is_403(client: Client) -> None:
    response = client.get("/api/admin", headers={**auth(make_token(scopes=["read"])), **JSON})
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == challenge(
        "insufficient_scope", "The access token lacks a required scope", "admin read"
    )
    assert response.get_json()["error"] == "insufficient_scope"
    allowed = client.get("/api/admin", headers=auth(make_token(scopes=["admin", "read"])))
    assert allowed.status_code == 200


def test_a_dpop_bound_token_as_bearer_is_401(client: Client) -> None:
    token = make_token(cnf_jkt="k1")
    response = client.get("/api/me", headers=auth(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert "bound to a key" in response.headers["WWW-Authenticate"]
    good = client.get("/api/me", headers={**auth(token, "DPoP"), "DPoP": "proof:k1"})
    assert good.status_code == 200


def test_the_flask_decorator_without_a_verifier_is_a_setup_error() -> None:
    app = flask_app(None)
    app.testing = True
    with pytest.raises(ConfigurationError, match="needs a verifier"):
        Client(app).get("/api/me", headers=auth(make_token()))
    with pytest.raises(ConfigurationError, match="no bearer_required"):
        Client(app).get("/open")


def test_a_verifier_bug_propagates() -> None:
    app = BearerMiddleware(wsgi_app, BrokenVerifier(MemoryStore()), protected=["/api/*"])
    with pytest.raises(RuntimeError, match="verifier bug"):
        Client(app).get("/api/me", headers=auth(make_token()))


def test_optional_paths_under_wsgi(verifier: HMACVerifier) -> None:
    client = Client(BearerMiddleware(wsgi_app, verifier, protected=["/api/*"]))
    assert client.get("/public").get_json() == {"sub": None}
    assert client.get("/public", headers=auth(make_token())).get_json() == {"sub": "alice"}
    assert client.get("/public", headers=auth(make_token(expires_at=NOW))).status_code == 401
    assert client.get("/public", headers={"Authorization": "Basic YTpi"}).get_json() == {
        "sub": None
    }


@pytest.mark.redis
@pytest.mark.parametrize("shape", ["wsgi", "flask"])
def test_a_store_outage_is_503(start_redis_server: Callable[..., RedisServer], shape: str) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    verifier = HMACVerifier(store)
    app: Any = (
        BearerMiddleware(wsgi_app, verifier, protected=["/api/*"])
        if shape == "wsgi"
        else flask_app(verifier)
    )
    client = Client(app)
    token = make_token()
    try:
        assert client.get("/api/me", headers=auth(token)).status_code == 200
        server.stop()
        response = client.get("/api/me", headers={**auth(token), **JSON})
    finally:
        store.sync.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "WWW-Authenticate" not in response.headers
    assert response.get_json()["error"] == "token_store_unavailable"
    body_has_no_token(response, token)


def test_wsgi_refusals_are_audited(verifier: HMACVerifier) -> None:
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(NOW), sink)
    app = BearerMiddleware(
        wsgi_app, verifier, protected=["/api/*"], scopes={"/api/admin": ["admin"]}, auditor=auditor
    )
    client = Client(app)
    client.get("/api/me", headers={"Authorization": "Bearer " + "a" * 9000})
    client.get("/api/admin", headers=auth(make_token(jti="t-5")))
    assert sink.names() == ["input_validation_fail", "authz_fail"]
    assert sink.events[0].to_dict()["details"] == {"reason": "header_too_large", "path": "/api/me"}
    assert sink.events[1].to_dict()["details"]["token_id"] == "t-5"


def test_the_flask_decorator_audits_a_missing_scope(verifier: HMACVerifier) -> None:
    sink = RecordingAuditSink()
    app = Flask(__name__)
    bastion.flask.init_bearer(
        app, verifier, auditor=Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(NOW), sink)
    )

    @app.get("/admin")
    @bastion.flask.bearer_required("admin")
    def admin() -> dict[str, Any]:
        return {}

    response = Client(app).get("/admin", headers=auth(make_token(jti="t-8")))
    assert response.status_code == 403
    assert sink.names() == ["authz_fail"]
    assert sink.events[0].to_dict()["details"]["path"] == "/admin"
