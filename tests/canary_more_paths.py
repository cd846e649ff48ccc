"""The WSGI paths of the secret canary (tests/test_audit_canary_more.py): a real Flask app behind
``bastion.flask.protect`` with sessions, CSRF, rate limits, the login throttle and monitor, TOTP,
API keys and tokens, its trail on a SQLite file, driven right and wrong with every secret kind
in headers, form and JSON bodies, query strings and paths (a :class:`FlaskRun`); and the helpers
of the OpenID Connect case (the demo's calls to the provider's token endpoint, recorded)."""

from __future__ import annotations

import contextlib
import secrets
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
from flask import Flask, render_template_string, request

import bastion.flask
from bastion.audit import AuditPolicy
from bastion.config import Bastion
from bastion.core.apikeys import generate_api_key
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.login_monitor import LoginMonitorPolicy
from bastion.core.ratelimit.rules import Rule
from bastion.core.sessions import DEVELOPMENT_COOKIE_NAME
from bastion.core.sessions.config import SessionConfig
from bastion.core.tokens.reasons import TokenRejected
from bastion.engine.throttle import LoginOutcome
from bastion.engine.totp import TOTPResult
from bastion.flask import session
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.testing.csrf import browser_headers, find_token
from bastion.tokens.policy import TokenPolicy
from canary_support import CLIENT_ADDRESS, Canaries, Sink
from oidc_pages import complete_login
from test_demo_oidc import ALICE

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from bastion.core.keys import KeyRing
    from bastion.runtime import Runtime

__all__ = [
    "BASE",
    "OIDC_BASE",
    "Exchanges",
    "FlaskRun",
    "begin_oidc",
    "flask_paths",
    "oidc_callback",
]

BASE = "http://localhost"
OIDC_BASE = "http://127.0.0.1:8000"
"""The demo's address in the OpenID Connect case (the provider knows its callback there)."""
FORM = "<form method=post>{{ csrf_input() }}</form>"


def _passphrase(word: str) -> str:
    return f"{word} {secrets.token_hex(6)} staple {secrets.token_hex(5)}"


class FlaskRun:
    """One Flask app on a stored trail, the secrets it met and the responses it gave."""

    def __init__(self, audit_url: str, ring: KeyRing, store: Path, *, fail_closed: bool = False):
        self.clock = FrozenClock(1_800_000_000.0)
        self.canaries = Canaries()
        self.responses: list[tuple[Sink, frozenset[str]]] = []
        self._allowed: frozenset[str] = frozenset()
        hasher = PasswordHasher(TEST_ONLY_PROFILE)
        users: dict[str, str] = {}
        totp_secrets: dict[str, str] = {}
        lock = threading.Lock()
        app = Flask(__name__)
        config = Bastion(
            store=f"sqlite:///{store}",
            keyring=ring,
            clock=self.clock,
            sessions=SessionConfig(development=True, secure=False),
            rate_limits=(
                Rule("pages", "300/minute"),
                Rule("login", "40/minute", path="/login", methods={"POST"}),
                Rule("lookup", "2/minute", path="/lookup"),
            ),
            audit=AuditPolicy(store=audit_url, fail_closed=fail_closed, max_wait=0.0),
            tokens=TokenPolicy(issuer="https://canary.example", protect=("/api/*",)),
            totp_issuer="Canary",
            login_monitor=LoginMonitorPolicy(),
            environment=Environment.DEVELOPMENT,
        )
        self.runtime: Runtime = bastion.flask.protect(app, config)
        runtime = self.runtime

        def fields() -> dict[str, str]:
            data = request.get_json(silent=True)
            source = data if isinstance(data, dict) else request.form
            return {k: str(v) for k, v in source.items()}

        @app.get("/form")
        def form() -> str:
            return render_template_string(FORM)

        @app.post("/register")
        def register() -> Any:
            data = fields()
            with lock:
                users[data["username"]] = hasher.hash(data["password"])
            session.login(data["username"])
            return {"ok": True}

        @app.post("/login")
        def sign_in() -> Any:
            data = fields()
            name, password = data.get("username", ""), data.get("password", "")

            def verify() -> bool:
                return hasher.verify_and_update(users.get(name), password).valid

            attempt = runtime.throttle.attempt_sync(name, request.remote_addr or "", verify)
            if attempt.outcome is LoginOutcome.THROTTLED:
                return {"error": "too_many_attempts"}, 429
            if not attempt.ok:
                return {"error": "invalid_credentials"}, 401
            if name in totp_secrets:
                result = runtime.totp.verify_sync(name, totp_secrets[name], data.get("totp", ""))
                if result is not TOTPResult.ACCEPTED:
                    return {"error": f"totp_{result.value}"}, 401
            session.login(name)
            if request.is_json:
                return runtime.tokens.issue_sync(name, scopes=("read",)).to_dict()
            return {"ok": True}

        @app.post("/totp")
        def enroll() -> Any:
            name = session.user_id
            if name is None:
                return {"error": "not_logged_in"}, 401
            enrolment = runtime.totp.enroll(name)
            totp_secrets[name] = enrolment.secret
            return {"secret": enrolment.secret}

        @app.post("/keys")
        def new_key() -> Any:
            name = session.user_id
            if name is None:
                return {"error": "not_logged_in"}, 401
            return {"key": runtime.api_keys.create_sync(name, scopes=("read",)).token}

        @app.get("/keys/me")
        def key_me() -> Any:
            key = request.headers.get("X-API-Key") or request.args.get("api_key")
            result = runtime.api_keys.verify_sync(key, required_scope="read")
            if not result.ok:
                return {"error": result.status.value}, result.http_status
            assert result.record is not None
            return {"owner": result.record.owner}

        @app.post("/token/refresh")
        def refresh() -> Any:
            try:
                return runtime.tokens.refresh_sync(fields().get("refresh_token", "")).to_dict()
            except TokenRejected as error:
                return {"error": error.reason.value}, 401

        @app.get("/api/me")
        def me() -> Any:
            found = bastion.flask.principal()
            return {"sub": None if found is None else found.subject}

        @app.get("/lookup")
        def lookup() -> Any:
            return {"found": False}

        @app.get("/account")
        def account() -> Any:
            name = session.user_id
            return ({"user": name}, 200) if name else ({"error": "not_logged_in"}, 401)

        @app.get("/files/<path:rest>")
        def files(rest: str) -> Any:
            return {"error": "not_found", "length": len(rest)}, 404

        self.app = app
        self.totp_secrets = totp_secrets

    def secret(self, kind: str, value: str, *, partial: bool = True) -> str:
        self.canaries.add(kind, value, partial=partial)
        return value

    @contextlib.contextmanager
    def showing(self, *kinds: str) -> Iterator[None]:
        """Responses inside may show these secret kinds (the answer exists to show them)."""
        self._allowed = frozenset(kinds)
        try:
            yield
        finally:
            self._allowed = frozenset()

    def call(self, client: FlaskClient, method: str, path: str, **kwargs: Any) -> TestResponse:
        """One request from the test's client address, its response recorded as a sink."""
        headers = {**browser_headers(BASE), "Accept": "application/json"}
        headers.update(kwargs.pop("headers", {}))
        environ = {"REMOTE_ADDR": CLIENT_ADDRESS}
        answer = client.open(
            path, method=method, base_url=BASE, headers=headers, environ_base=environ, **kwargs
        )
        for cookie in answer.headers.getlist("Set-Cookie"):
            name, _, value = cookie.split(";", 1)[0].partition("=")
            if name == DEVELOPMENT_COOKIE_NAME and len(value) >= 16:
                self.secret("session_id", value)
        shown = [f"{k}: {v}" for k, v in answer.headers.items() if k.lower() != "set-cookie"]
        body = "\n".join(shown).encode() + b"\n\n" + answer.get_data()
        name = f"response {len(self.responses)}: {method} {path[:40]} {answer.status_code}"
        self.responses.append((Sink(name, body), self._allowed))
        return answer

    def token(self, client: FlaskClient) -> str:
        page = self.call(client, "GET", "/form").get_data(as_text=True)
        return self.secret("csrf_token", find_token(page))


def _pair(run: FlaskRun, answer: TestResponse) -> tuple[str, str]:
    assert answer.status_code == 200, answer.get_data(as_text=True)
    pair = answer.get_json()
    access, refresh = pair["access_token"], pair["refresh_token"]
    _, payload, signature = access.split(".")
    run.secret("access_token", access, partial=False)
    run.secret("access_token.payload", payload, partial=False)
    run.secret("access_token.signature", signature)
    run.secret("refresh_token", refresh, partial=False)
    run.secret("refresh_token.secret", refresh.rsplit(".", 1)[1])
    return access, refresh


def flask_paths(run: FlaskRun, user: str) -> None:
    """Register, log in by form and JSON (wrong and right), TOTP (wrong, right, replayed), API
    keys (real, forged, in a header, the query string, the path), tokens (use, refresh, reuse,
    forged), CSRF refusals carrying secrets, and a burst of wrong passwords up to the throttle."""
    client = run.app.test_client()
    password = run.secret("password", _passphrase("flask"))
    token = run.token(client)
    made = run.call(
        client,
        "POST",
        "/register",
        data={"username": user, "password": password, "csrf_token": token},
    )
    assert made.status_code == 200
    # CSRF refusals with the password in the body: cross-site form, then no token at all.
    forged = browser_headers("https://evil.example", site="cross-site")
    forged["Accept"] = "application/json"
    for body, headers, reason in (
        ({"username": user, "password": password}, forged, "cross_site"),
        ({"username": user, "password": password}, {"Origin": "", "Sec-Fetch-Site": ""}, None),
    ):
        refused = run.call(client, "POST", "/login", data=body, headers=headers)
        assert refused.status_code == 403, refused.get_data(as_text=True)
        if reason is not None:
            assert refused.get_json()["reason"] == reason
    wrong = run.secret("password", _passphrase("wrong"))
    for body in ({"username": user, "password": wrong},):
        assert run.call(client, "POST", "/login", data=body).status_code == 401
        assert run.call(client, "POST", "/login", json=body).status_code == 401
    with run.showing("access_token", "refresh_token"):
        answer = run.call(client, "POST", "/login", json={"username": user, "password": password})
    access, refresh = _pair(run, answer)
    with run.showing("totp_secret"):
        enrolled = run.call(client, "POST", "/totp")
    totp = pyotp.TOTP(run.secret("totp_secret", enrolled.get_json()["secret"]))
    run.clock.advance(30)
    right = run.secret("totp_code", totp.at(run.clock.now()))
    bad = run.secret("totp_code", f"{(int(right) + 1) % 1_000_000:06d}")
    login = {"username": user, "password": password}
    without = run.call(client, "POST", "/login", data=login)
    assert (without.status_code, without.get_json()["error"]) == (401, "totp_malformed")
    wrong_code = run.call(client, "POST", "/login", data={**login, "totp": bad})
    assert (wrong_code.status_code, wrong_code.get_json()["error"]) == (401, "totp_invalid")
    assert run.call(client, "POST", "/login", data={**login, "totp": right}).status_code == 200
    replayed = run.call(client, "POST", "/login", json={**login, "totp": right})
    assert (replayed.status_code, replayed.get_json()["error"]) == (401, "totp_replayed")
    # API keys: the real one in the header and the query string, forged ones, one in a path.
    with run.showing("api_key"):
        key = run.secret("api_key", run.call(client, "POST", "/keys").get_json()["key"])
    api = run.app.test_client()
    assert run.call(api, "GET", "/keys/me", headers={"X-API-Key": key}).get_json() == {
        "owner": user
    }
    assert run.call(api, "GET", f"/keys/me?api_key={key}").status_code == 200
    forged_key = run.secret("api_key", generate_api_key())
    malformed = run.secret("api_key", "bst_" + secrets.token_hex(20))
    for bad_key in (forged_key, malformed):
        answer = run.call(api, "GET", "/keys/me", headers={"X-API-Key": bad_key})
        assert answer.status_code == 401, answer.get_data(as_text=True)
    assert run.call(api, "GET", f"/files/{key}/{password}").status_code == 404
    # Tokens: use, refresh by form and JSON, the old refresh token replayed (family revoked).
    bearer = {"Authorization": f"Bearer {access}"}
    assert run.call(api, "GET", "/api/me", headers=bearer).get_json() == {"sub": user}
    with run.showing("access_token", "refresh_token"):
        rotated = run.call(api, "POST", "/token/refresh", json={"refresh_token": refresh})
    new_access, new_refresh = _pair(run, rotated)
    run.clock.advance(11)  # past the refresher's grace for a retried request
    reused = run.call(api, "POST", "/token/refresh", data={"refresh_token": refresh})
    assert (reused.status_code, reused.get_json()) == (401, {"error": "reused"})
    gone = run.call(api, "POST", "/token/refresh", json={"refresh_token": new_refresh})
    assert gone.status_code == 401  # the whole family went with the reuse
    assert run.runtime.tokens.revoke_sync(new_access)
    dead = run.call(api, "GET", "/api/me", headers={"Authorization": f"Bearer {new_access}"})
    assert dead.status_code == 401
    assert 'error="invalid_token"' in dead.headers["WWW-Authenticate"]
    forged_jwt = run.secret("access_token", access[:-6] + "AAAAAA", partial=False)
    refused = run.call(api, "GET", "/api/me", headers={"Authorization": f"Bearer {forged_jwt}"})
    assert refused.status_code == 401
    crossed = run.call(api, "GET", "/api/me", headers={"Authorization": f"Bearer {key}"})
    assert crossed.status_code == 401
    # A token in the query string is not read (RFC 6750's URI form is refused: no token sent).
    in_query = run.call(api, "GET", f"/api/me?access_token={access}")
    assert (in_query.status_code, in_query.get_json()["error"]) == (401, "unauthorized")
    # The session ID where other credentials go, and a forged one as the cookie.
    sid = next(v for k, v in run.canaries.values.items() if k.startswith("session_id"))
    as_key = run.call(api, "GET", "/keys/me", headers={"X-API-Key": sid})
    assert (as_key.status_code, as_key.get_json()) == (401, {"error": "malformed"})
    as_token = run.call(api, "GET", "/api/me", headers={"Authorization": f"Bearer {sid}"})
    assert (as_token.status_code, as_token.get_json()["error"]) == (401, "invalid_token")
    stranger = run.app.test_client()
    forged_sid = run.secret("session_id", secrets.token_urlsafe(32))
    stranger.set_cookie(DEVELOPMENT_COOKIE_NAME, forged_sid)
    answer = run.call(stranger, "GET", f"/account?session={sid}")
    assert (answer.status_code, answer.get_json()) == (401, {"error": "not_logged_in"})
    # Broken bodies: over the size cap (refused before the handler), a multipart form without
    # a boundary (read as empty), JSON cut short (the refresh token never reaches the service).
    big = f"password={password}&pad={'x' * (2 * 1024 * 1024)}"
    huge = run.call(
        client, "POST", "/login", data=big, content_type="application/x-www-form-urlencoded"
    )
    assert (huge.status_code, huge.get_json()["error"]) == (413, "body_too_large")
    broken = run.call(
        client, "POST", "/login", data=f"password={password}", content_type="multipart/form-data"
    )
    assert (broken.status_code, broken.get_json()) == (401, {"error": "invalid_credentials"})
    bad_json = run.call(
        client,
        "POST",
        "/token/refresh",
        data='{"refresh_token": "' + refresh,
        content_type="application/json",
    )
    assert (bad_json.status_code, bad_json.get_json()) == (401, {"error": "malformed"})
    # A burst of wrong passwords from one address, up to the throttle's 429 and the monitor.
    statuses = []
    attacker = run.app.test_client()
    for number in range(11):
        guess = run.secret("password", _passphrase(f"burst{number}"))
        body = {"username": user, "password": guess}
        answer = run.call(attacker, "POST", "/login", data=body)
        statuses.append((answer.status_code, answer.get_json()["error"]))
    assert statuses == [(401, "invalid_credentials")] * 6 + [(429, "too_many_attempts")] * 5
    # The rate limiter's refusal, secrets in the query string and the headers.
    spent = [
        run.call(api, "GET", f"/lookup?api_key={key}&password={password}", headers=bearer)
        for _ in range(3)
    ]
    assert [a.status_code for a in spent] == [200, 200, 429]
    assert spent[-1].get_json()["error"] == "rate_limited"
    over = run.call(attacker, "POST", "/login", json={"username": user, "password": password})
    assert over.status_code == 429


# -- OpenID Connect (the demo's routes against the real provider) ------------------------------


class Exchanges:
    """The demo's own calls to the provider's token endpoint (the request's body and headers,
    the answer's JSON): where the PKCE verifier, the client secret and the tokens are met."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.calls: list[tuple[httpx.Request, httpx.Response]] = []

    def wrap(self, send: Any) -> Any:
        async def recording(
            client: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
        ) -> Any:
            response = await send(client, request, **kwargs)
            if str(request.url).startswith(self.issuer) and request.method == "POST":
                await response.aread()
                self.calls.append((request, response))
            return response

        return recording


async def begin_oidc(client: httpx.AsyncClient, canaries: Canaries) -> str:
    started = await client.get("/auth/local/login")
    assert started.status_code == 302, started.text
    location = str(started.headers["location"])
    query = parse_qs(urlsplit(location).query)
    canaries.add("oidc_state", query["state"][0])
    canaries.add("oidc_nonce", query["nonce"][0])
    return location


def oidc_callback(authorize: str, canaries: Canaries) -> str:
    with httpx.Client() as browser:  # the provider's own login and consent pages
        callback = complete_login(browser, authorize, ALICE.username, ALICE.password)
    assert callback.startswith(f"{OIDC_BASE}/auth/local/callback?"), callback
    canaries.add("oidc_code", parse_qs(urlsplit(callback).query)["code"][0])
    return callback.removeprefix(OIDC_BASE)
