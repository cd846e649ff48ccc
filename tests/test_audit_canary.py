"""The secret canary (issue 17, item 5): known secrets sent through every path of the demo app,
then searched for in every sink, in every form a leak could take (tests/canary_support.py).

Secrets: passwords (registration, a weak one refused, wrong ones, changed, reset, the seeded
admin's, one typed into the user name field), TOTP codes (right, wrong, replayed), the TOTP
secret and recovery codes, API keys (real, forged, malformed), access tokens (JWT: whole,
payload, signature), refresh tokens (whole and secret part, replayed after rotation),
password-reset tokens (whole and secret part, a forged one), session IDs and the login
throttle's device cookie (every value the app set), CSRF tokens, the profile's phone number
(encrypted at rest), the server key, the data key (text and bytes) and the audit store's
password. Paths: every demo route, the refusals (CSRF, rate limits, the login throttle, bodies
over the cap), each credential sent where another kind is expected, secrets in paths, query
strings, HTTP Basic and CSP reports.

Sinks, each on SQLite, PostgreSQL and Redis: (1) every log record on every logger (the root at
DEBUG with a handler of our own: message, arguments, extras, exception text), except the
test's own HTTP client (httpx, httpcore); (2) the stored trail read raw: SQLite's file with its
``-wal`` (while open) and after closing, PostgreSQL's rows as text and the tables' files on
disk, Redis's stream entries (``XRANGE``) and every key under the prefix; (3) the trail read
back through bastion: row bodies, query records (plain, ECS, OpenTelemetry) and ``bastion audit
query`` in each format, plus what the run printed; (4) every response body and header (but
``Set-Cookie``), except where the page exists to show that secret (the new API key, the token
pair, the TOTP enrolment page, the outbox, the reset form). Each reader is first shown to find
a secret put in its sink on purpose, so a clean result is not vacuous; the trail is also
checked to be pseudonymous (no raw user name or client address), and the app's own store to
hold digests only.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets
import socket
import traceback
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

import pyotp
import pytest

from bastion.audit import AuditPolicy, AuditTrail
from bastion.core.apikeys import generate_api_key
from bastion.core.audit import Outcome
from bastion.core.keys import KeyRing, SecretKey
from bastion.crypto import DataKeyRing
from bastion.demo.app import API_SCOPE
from bastion.errors import StoreUnavailable
from bastion.testing.csrf import BROWSER_ACCEPT, afetch_token, browser_headers, find_token
from canary_support import (
    CLIENT_ADDRESS,
    Canaries,
    Location,
    LogCapture,
    Run,
    Sink,
    cli_sinks,
    control_store,
    kind_of,
    open_logs,
    passphrase,
    sqlite_sinks,
    trail_sinks,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import httpx

USER = "canary" + secrets.token_hex(4)
"""The account the paths below create (a new name per run: the pseudonymity check looks for it)."""
STORES = ["sqlite", "postgres", "redis"]
SHOWN_ON_PURPOSE = {"csrf_token"}  # every form page carries its token


# -- the paths -------------------------------------------------------------------------------


async def accounts(run: Run, client: httpx.AsyncClient) -> str:
    """Register (a weak password refused), log out, wrong and right logins, a password change
    refused and done, revoke-others, the profile, the audit page. The password now."""
    weak = run.secret("password", secrets.token_hex(4))
    first = run.secret("password", passphrase("first"))
    refused = await run.form(client, "/register", "/register", {"username": USER, "password": weak})
    assert refused.status_code == 400
    made = await run.form(client, "/register", "/register", {"username": USER, "password": first})
    assert (made.status_code, made.headers["location"]) == (303, "/account")
    assert (await run.form(client, "/account", "/logout", {})).status_code == 303
    wrong = await run.log_in(client, run.secret("password", passphrase("wrong")))
    assert wrong.status_code == 401
    assert (await run.log_in(client, first)).status_code == 303
    second = run.secret("password", passphrase("second"))
    bad = {"current_password": run.secret("password", passphrase("guess")), "new_password": second}
    assert (await run.form(client, "/account", "/account/password", bad)).status_code == 400
    good = {"current_password": first, "new_password": second}
    assert (await run.form(client, "/account", "/account/password", good)).status_code == 303
    async with run.client() as other:
        assert (await run.log_in(other, second)).status_code == 303
        done = await run.form(client, "/account/sessions", "/account/sessions/revoke-others", {})
        assert done.status_code == 303
        assert (await other.get("/account")).status_code == 303  # logged out elsewhere
    phone = run.secret(
        "phone", f"+44 20 7946 {secrets.randbelow(10**4):04d} {secrets.randbelow(10**6):06d}"
    )
    with run.showing("phone"):  # the owner's own profile shows the number
        form = {"phone": phone, "bio": "<b>canary</b>"}
        saved = await run.form(client, "/account/profile", "/account/profile", form)
        assert saved.status_code == 200
        assert phone in (await client.get("/account/profile")).text
    assert (await client.get("/audit?event=authn_login_fail")).status_code == 200
    return second


async def second_factor(run: Run, client: httpx.AsyncClient, password: str) -> None:
    """TOTP enrolment (a wrong code, then the right one), then logins without a code, with a
    wrong one, the right one, the same one replayed, and a recovery code."""
    with run.showing("totp_secret"):
        page = await client.get("/account/totp")
        found = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
        assert found is not None
        run.totp = pyotp.TOTP(run.secret("totp_secret", found.group(1)))
        token = find_token(page.text)
        wrong = await client.post(
            "/account/totp", data={"code": run.code(wrong=True), "csrf_token": token}
        )
        assert wrong.status_code == 400
        found = re.search(r'id="totp-secret">([A-Z2-7]+)<', wrong.text)  # a fresh secret
        assert found is not None
        run.totp = pyotp.TOTP(run.secret("totp_secret", found.group(1)))
        run.secret("totp_secret", found.group(1).lower())
    with run.showing("totp_secret", "recovery_code"):
        data = {"code": run.code(), "csrf_token": find_token(wrong.text)}
        enabled = await client.post("/account/totp", data=data)
        assert enabled.status_code == 200
    codes = re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", enabled.text)
    assert len(codes) == 10
    for code in codes:
        run.secret("recovery_code", code)
        run.secret("recovery_code", code.replace("-", ""))  # as it may be normalised
    async with run.client() as fresh:
        assert (await run.log_in(fresh, password)).status_code == 401  # the code is missing
        assert (await run.log_in(fresh, password, totp=run.code(wrong=True))).status_code == 401
        code = run.code()
        assert (await run.log_in(fresh, password, totp=code)).status_code == 303
    async with run.client() as replay:
        assert (await run.log_in(replay, password, totp=code)).status_code == 401
        assert (await run.log_in(replay, password, totp=codes[0])).status_code == 303


async def api_keys(run: Run, client: httpx.AsyncClient) -> str:
    """Create keys, use them (``X-API-Key``, ``Authorization: Bearer``), a forged key, a
    malformed one, one without the scope. The good key."""
    with run.showing("api_key"):
        made = await run.form(client, "/account", "/account/api-keys", {"scopes": API_SCOPE})
        narrow = await run.form(client, "/account", "/account/api-keys", {"scopes": "posts:read"})
    keys = [re.search(r'id="api-key">(bst_[A-Za-z0-9]+)<', page.text) for page in (made, narrow)]
    found = [key.group(1) for key in keys if key is not None]
    assert len(found) == 2, keys
    key, other = (run.secret("api_key", value) for value in found)
    assert (await client.get("/account")).status_code == 200  # the list shows key ids only
    async with run.client() as api:
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            answer = await api.get("/api/me", headers=headers)
            assert (answer.status_code, answer.json()["username"]) == (200, USER)
        forged = run.secret("api_key", generate_api_key())
        malformed = run.secret("api_key", "bst_" + secrets.token_hex(20))
        for bad, status in ((forged, 401), (malformed, 401), (other, 403)):
            answer = await api.get("/api/me", headers={"X-API-Key": bad})
            assert answer.status_code == status, answer.text
    return key


def _token_pair(run: Run, answer: httpx.Response) -> tuple[str, str]:
    assert answer.status_code == 200, answer.text
    pair = answer.json()
    access, refresh = pair["access_token"], pair["refresh_token"]
    _, payload, signature = access.split(".")
    run.secret("access_token", access, partial=False)  # the header is the same for every token
    run.secret("access_token.payload", payload, partial=False)
    run.secret("access_token.signature", signature)
    run.secret("refresh_token", refresh, partial=False)  # brt_<family id>: public by design
    run.secret("refresh_token.secret", refresh.split(".", 1)[1])
    return access, refresh


async def tokens(run: Run, password: str) -> str:
    """The token endpoint (wrong password, missing code, right), ``/api/me`` with the access
    token and a forged one, refresh, the rotated token replayed (reuse: the family dies),
    revocation of an access token and a refresh family."""
    async with run.client() as api:
        login = {"username": USER, "password": password}
        wrong = {**login, "password": run.secret("password", passphrase("api wrong"))}
        assert (await api.post("/api/token", data=wrong)).status_code == 400
        assert (await api.post("/api/token", data=login)).status_code == 400  # no code
        with run.showing("access_token", "refresh_token"):
            access, refresh = _token_pair(
                run, await api.post("/api/token", data={**login, "totp": run.code()})
            )
        me = await api.get("/api/me", headers={"Authorization": f"Bearer {access}"})
        assert (me.status_code, me.json()["username"]) == (200, USER)
        head, payload, signature = access.split(".")
        forged = f"{head}.{payload}.{signature[::-1]}"
        refused = await api.get("/api/me", headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401
        with run.showing("access_token", "refresh_token"):
            newer = _token_pair(
                run, await api.post("/api/token/refresh", data={"refresh_token": refresh})
            )
        run.clock.advance(60)  # past the grace window: presenting the old token is a replay
        replay = await api.post("/api/token/refresh", data={"refresh_token": refresh})
        assert (replay.status_code, replay.json()["error"]) == (401, "invalid_grant")
        dead = await api.post("/api/token/refresh", data={"refresh_token": newer[1]})
        assert dead.status_code == 401  # the whole family was revoked
        with run.showing("access_token", "refresh_token"):
            access, refresh = _token_pair(
                run, await api.post("/api/token", data={**login, "totp": run.code()})
            )
        assert (await api.post("/api/token/revoke", data={"token": access})).status_code == 200
        gone = await api.get("/api/me", headers={"Authorization": f"Bearer {access}"})
        assert gone.status_code == 401
        assert (await api.post("/api/token/revoke", data={"token": refresh})).status_code == 200
        revoked = await api.post("/api/token/refresh", data={"refresh_token": refresh})
        assert revoked.status_code == 401
    return access


async def reset(run: Run, client: httpx.AsyncClient) -> tuple[str, str]:
    """A reset link asked for, read from the outbox, opened; a forged link; a weak new
    password refused; the reset done; the spent link refused. The new password, the link."""
    async with run.client() as anonymous:
        asked = await run.form(anonymous, "/reset-password", "/reset-password", {"username": USER})
        assert asked.status_code == 200
        with run.showing("reset_token"):
            outbox = await client.get("/outbox")
        found = re.search(
            r'href="[^"]*/reset-password/(bot_[A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)"', outbox.text
        )
        assert found is not None
        link_id, secret_part = found.groups()
        token = run.secret("reset_token", f"{link_id}.{secret_part}", partial=False)
        run.secret("reset_token.secret", secret_part)
        forged = run.secret("reset_token", f"{link_id}.{secrets.token_urlsafe(32)}", partial=False)
        assert (await anonymous.get(f"/reset-password/{forged}")).status_code == 400
        new = run.secret("password", passphrase("reset"))
        path = f"/reset-password/{token}"
        with run.showing("reset_token"):  # the link's own form
            weak = await run.form(anonymous, path, path, {"new_password": secrets.token_hex(3)})
            assert weak.status_code == 400
            done = await run.form(anonymous, path, path, {"new_password": new})
        assert (done.status_code, done.headers["location"]) == (303, "/login")
        spent = await anonymous.get(path)
        assert spent.status_code == 400
    return new, token


async def access(run: Run, password: str) -> None:
    """Documents (create, read, edit, a missing one), admin pages refused to a user, then the
    admin (the seeded password) sets roles."""
    async with run.client() as client:
        assert (await run.log_in(client, password, totp=run.code())).status_code == 303
        assert (await client.get("/documents")).status_code == 200
        made = await run.form(
            client, "/documents", "/documents", {"title": "notes", "body": "hello"}
        )
        assert made.status_code == 303
        where = made.headers["location"]
        assert (await client.get(where)).status_code == 200
        assert (await run.form(client, where, where, {"body": "edited"})).status_code == 303
        assert (await client.get("/documents/999999")).status_code == 403
        assert (await client.get("/admin")).status_code == 403
        assert (await client.get("/admin/roles")).status_code == 403
    async with run.client() as admin:
        assert (await run.log_in(admin, run.seed, user="admin")).status_code == 303
        assert (await admin.get("/admin")).status_code == 200
        for role in ("moderator", "user"):
            data = {"username": USER, "role": role}
            assert (await run.form(admin, "/admin/roles", "/admin/roles", data)).status_code == 200
        assert (await run.form(admin, "/account", "/logout", {})).status_code == 303


async def refusals(run: Run, password: str, key: str, access: str, link: str) -> None:
    """CSRF failures and oversized bodies carrying a password, secrets in paths and query
    strings (a reset link, an API key, an access token), HTTP Basic credentials, and a
    password typed into the user name field."""
    huge = {"username": USER, "password": password, "padding": "x" * (1 << 20)}
    as_json = {"Accept": "application/json"}
    reset_path = f"/reset-password/{link}"
    async with run.client() as client:
        assert (await run.log_in(client, password, totp=run.code())).status_code == 303
        new = run.secret("password", passphrase("csrf"))
        change = {"current_password": password, "new_password": new}
        query = f"?link={link}&password={quote_plus(password)}&api_key={key}"
        missing = await client.post("/account/password" + query, data=change, headers=as_json)
        assert (missing.status_code, missing.json()["reason"]) == (403, "token_missing")
        page = {"Accept": BROWSER_ACCEPT}
        friendly = await client.post("/account/password", data=change, headers=page)
        assert friendly.status_code == 403
        assert "CSRF protection" in friendly.text
        forged = {**change, "csrf_token": run.secret("csrf_token", secrets.token_urlsafe(32))}
        invalid = await client.post("/account/password", data=forged, headers=as_json)
        assert (invalid.status_code, invalid.json()["reason"]) == (403, "token_malformed")
        cross = browser_headers("https://evil.example", site="cross-site")
        login = {"username": USER, "password": password}
        hostile = await client.post("/api/token", data=login, headers={**cross, **as_json})
        assert (hostile.status_code, hostile.json()["reason"]) == (403, "cross_site")
        form = {"new_password": new}
        unforged = await client.post(reset_path, data=form, headers=as_json)
        assert (unforged.status_code, unforged.json()["reason"]) == (403, "token_missing")
        for path in ("/login", reset_path):
            too_big = await client.post(path, data=huge, headers=as_json)
            assert (too_big.status_code, too_big.json()["error"]) == (413, "body_too_large")
        with run.showing("password"):  # the login form fills in the user name it was sent
            typed = await run.log_in(client, "not it", user=password)
            assert typed.status_code == 401
        asked = await run.form(client, "/reset-password", "/reset-password", {"username": password})
        assert asked.status_code == 200
    async with run.client() as api:  # no cookies
        too_big = await api.post("/api/token", data=huge, headers=as_json)
        assert (too_big.status_code, too_big.json()["error"]) == (413, "body_too_large")
        typed = await api.post("/api/token", data={"username": password, "password": "x"})
        assert (typed.status_code, typed.json()["error"]) == (400, "invalid_grant")
        exposed = await api.get(f"/api/me?api_key={key}&access_token={access}")
        assert (exposed.status_code, exposed.json()) == (401, {"error": "missing"})
        basic = base64.b64encode(f"{USER}:{password}".encode()).decode()
        answer = await api.get("/api/me", headers={"Authorization": f"Basic {basic}"})
        assert (answer.status_code, answer.json()) == (400, {"error": "invalid_request"}), (
            answer.text
        )


async def crossed(run: Run, password: str, key: str, access: str, link: str) -> None:
    """Each credential sent where another kind is expected: a refresh token, a reset link or a
    password as a bearer token, an access token as an API key, an access token, an API key or
    a password as a refresh token, and revocations of things that are not tokens."""
    refresh = run.canaries.values["refresh_token"]
    session = run.canaries.values["session_id"]
    bearer = "Authorization"
    async with run.client() as api:
        for headers, status, error in (
            ({bearer: f"Bearer {refresh}"}, 401, "invalid_token"),
            ({bearer: f"Bearer {link}"}, 401, "invalid_token"),
            ({bearer: f"Bearer {password}"}, 400, "invalid_request"),  # spaces: not a token
            ({bearer: f"Bearer {session}"}, 401, "invalid_token"),
            ({"X-API-Key": access}, 401, "malformed"),
            ({"X-API-Key": password}, 401, "malformed"),
        ):
            answer = await api.get("/api/me", headers=headers)
            assert (answer.status_code, answer.json()) == (status, {"error": error}), headers
        for wrong in (access, key, password, link, session):
            answer = await api.post("/api/token/refresh", data={"refresh_token": wrong})
            assert (answer.status_code, answer.json()["error"]) == (401, "invalid_grant")
        for wrong in (key, password, link, session):
            answer = await api.post("/api/token/revoke", data={"token": wrong})
            assert answer.status_code == 200  # RFC 7009: the same answer for anything
    async with run.client() as browser:
        for wrong in (key, access, refresh):
            assert (await run.log_in(browser, wrong)).status_code == 401


async def csp_reports(run: Run, password: str, key: str, access: str, link: str) -> None:
    """CSP violation reports (both formats) from the reset form's page: the document URL with
    the link in its path, a TOTP code in its query and the access token in its fragment, a
    blocked URL with the API key, and the password as the script sample."""
    page = f"http://127.0.0.1:8000/reset-password/{link}?code={run.code(wrong=True)}#{access}"
    blocked = f"https://evil.example/{key}?api_key={key}"
    legacy = {
        "document-uri": page,
        "referrer": page,
        "blocked-uri": blocked,
        "violated-directive": "script-src-elem",
        "effective-directive": "script-src-elem",
        "script-sample": password,
        "disposition": "enforce",
        "status-code": 200,
    }
    modern = [
        {
            "type": "csp-violation",
            "url": page,
            "body": {
                "documentURL": page,
                "referrer": page,
                "blockedURL": blocked,
                "effectiveDirective": "script-src-elem",
                "sample": password,
                "disposition": "enforce",
                "statusCode": 200,
            },
        }
    ]
    async with run.client() as browser:
        for media, report in (
            ("application/csp-report", {"csp-report": legacy}),
            ("application/reports+json", modern),
        ):
            body = json.dumps(report)
            sent = await browser.post("/csp-report", content=body, headers={"Content-Type": media})
            assert sent.status_code == 204, sent.text


async def limits(run: Run, password: str, key: str) -> None:
    """Rate-limited requests carrying an API key (header and query) and passwords, and the
    login throttle (even the right password waits)."""
    run.clock.advance(61)
    async with run.client() as api:
        statuses = []
        for _ in range(61):
            answer = await api.get(f"/api/me?api_key={key}", headers={"X-API-Key": key})
            statuses.append(answer.status_code)
        assert statuses == [200] * 60 + [429]
        assert '"api";r=0' in answer.headers["ratelimit"]
    async with run.client() as browser:
        statuses = []
        for number in range(7):
            wrong = run.secret("password", passphrase(f"throttle {number}"))
            statuses.append((await run.log_in(browser, wrong, user="demo")).status_code)
        assert statuses == [401] * 6 + [429]
        throttled = await run.log_in(browser, run.seed, user="demo")
        assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "30")
        assert "Too many failed logins" in throttled.text
    run.clock.advance(120)
    async with run.client() as anonymous:
        token = run.secret("csrf_token", await afetch_token(anonymous, "/login"))
        statuses = []
        for number in range(20):  # many accounts from one client: the throttle's own limit
            data = {"username": f"nobody{number}", "password": password, "csrf_token": token}
            answer = await anonymous.post("/login", data=data, headers={"Accept": BROWSER_ACCEPT})
            statuses.append(answer.status_code)
        assert statuses[0] == 401
        assert statuses[-1] == 429
        assert statuses == sorted(statuses)  # refused from some point on, then every time
        assert "Too many failed logins" in answer.text
        statuses = []
        for _ in range(11):  # the sign-up rate limit, each request with a password
            data = {"username": USER, "password": run.secret("password", secrets.token_hex(5))}
            answer = await anonymous.post(
                "/register", data={**data, "csrf_token": token}, headers={"Accept": BROWSER_ACCEPT}
            )
            statuses.append(answer.status_code)
        assert statuses == [400] * 10 + [429]
        assert '"signup";r=0' in answer.headers["ratelimit"]
        assert "Too many requests" in answer.text
    run.clock.advance(120)


async def audit_pages(run: Run, password: str) -> None:
    """The pages that show stored events: ``/audit`` (with filters) for the user and the
    admin, the admin page, the user's sessions."""
    run.app.runtime.audit.flush()
    async with run.client() as client:
        assert (await run.log_in(client, password, totp=run.code())).status_code == 303
        for path in (
            "/audit",
            "/audit?event=authn_token_reuse",
            "/audit?since=1h",
            "/account/sessions",
        ):
            page = await client.get(path)
            assert page.status_code == 200, (path, page.text)
        assert 'data-event="authn_token_reuse"' in (await client.get("/audit")).text
        for path in ("/", "/healthz", "/.well-known/jwks.json", "/login", "/register"):
            assert (await client.get(path)).status_code == 200, path
    async with run.client() as admin:
        assert (await run.log_in(admin, run.seed, user="admin")).status_code == 303
        assert (await admin.get("/audit")).status_code == 200
        assert (await admin.get("/admin")).status_code == 200
        for data, status in (
            ({"username": run.user, "role": "root"}, 400),  # no such role
            ({"username": password, "role": "user"}, 404),  # a password as the account name
            ({"username": "admin", "role": "user"}, 403),  # nobody changes their own role
        ):
            answer = await run.form(admin, "/admin/roles", "/admin/roles", data)
            assert answer.status_code == status, answer.text


@pytest.fixture(params=STORES)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    with open_logs() as handler:
        yield handler


KINDS = {
    "password", "totp_code", "totp_secret", "recovery_code", "api_key", "access_token",
    "refresh_token", "reset_token", "session_id", "device_cookie", "csrf_token", "phone",
    "server_key", "data_key",
}  # fmt: skip


EVENTS = {
    "user_created", "authn_login_fail", "authn_login_success", "authn_login_lock",
    "authn_password_change", "authn_password_change_fail", "session_created", "session_renewed",
    "session_destroyed", "session_revoke_others", "totp_enabled", "authn_token_created",
    "authn_token_reuse", "authn_token_revoked", "onetime_token_consumed", "password_reset",
    "authz_fail", "authz_change", "authz_admin", "malicious_csrf", "excess_rate_limit_exceeded",
    "input_validation_fail", "csp_violation",
}  # fmt: skip
"""Events the paths above must have stored: proof that they reached the trail."""


@pytest.mark.asyncio
async def test_no_secret_reaches_any_sink(
    kind: str,
    logs: LogCapture,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_text = SecretKey.generate().to_text()
    monkeypatch.setenv("BASTION_SECRET_KEY", key_text)
    ring = KeyRing.from_secrets([key_text])
    store = Location(kind, request, tmp_path)
    data_text = SecretKey.generate().to_text()
    data_keys = DataKeyRing.from_text(f"1:{data_text}")
    run = Run(store.url, ring, USER, data_keys=data_keys, store=tmp_path / "app.db")
    canaries = run.canaries
    if store.password is not None:
        canaries.add("store_password", store.password)
    canaries.add("server_key", key_text)  # configured text: its UTF-8 bytes are the secret
    canaries.add("data_key", data_text)  # base64url of the 32 bytes of the data key
    canaries.add_bytes(
        "data_key", base64.urlsafe_b64decode(data_text + "=" * (-len(data_text) % 4))
    )
    # Controls: the log and store readers find a secret put in their sink on purpose.
    logging.getLogger("x").info("control: %s", run.seed)
    control = canaries.find_all(logs.sinks()[-1:])
    assert [f.form for f in control] == ["raw", "prefix12", "suffix12"], control
    del logs.rendered[-1]  # the control record is the test's own, not the app's
    planted = canaries.find_all(control_store(Location(kind, request, tmp_path), ring, run.seed))
    assert ("password", "raw") in {(f.secret, f.form) for f in planted}, planted
    await run.app.startup()
    try:
        async with run.client() as client:
            password = await accounts(run, client)
            await second_factor(run, client, password)
            key = await api_keys(run, client)
            access_token = await tokens(run, password)
            password, link = await reset(run, client)
            assert (await client.get("/account")).status_code == 303  # the reset ended it
        await access(run, password)
        await refusals(run, password, key, access_token, link)
        await crossed(run, password, key, access_token, link)
        await csp_reports(run, password, key, access_token, link)
        await limits(run, password, key)
        await audit_pages(run, password)
        run.app.runtime.audit.flush()
        while_open = store.read()  # SQLite: the -wal file before the checkpoint at close
    finally:
        await run.app.shutdown()
    stored, names = trail_sinks(store.url, ring)
    assert names >= EVENTS, sorted(EVENTS - names)
    assert canaries.kinds() >= KINDS, sorted(KINDS - canaries.kinds())
    # Control: the pages that exist to show a secret do show it, found by the same scanner.
    shown = {
        kind_of(f.secret)
        for sink, allowed in run.responses
        for f in canaries.find(sink)
        if kind_of(f.secret) in allowed
    }
    assert shown == set().union(*(allowed for _, allowed in run.responses)), shown
    findings = canaries.find_all(logs.sinks())
    sinks = [*while_open, *store.read(), *stored, *cli_sinks(store.url, capsys)]
    findings += canaries.find_all(sinks)
    for sink, allowed in run.responses:
        findings += canaries.find(sink, allowed=allowed | SHOWN_ON_PURPOSE)
    assert not findings, "\n".join(str(f) for f in findings[:30])
    # The app's own store (sessions, throttle, keys, tokens, accounts) keeps digests only; the
    # one secret it holds is the TOTP secret in the demo's account record, which the code
    # check needs (kept in clear by the demo's UserStore).
    kept = canaries.find_all(sqlite_sinks(run.store_path))
    assert {kind_of(f.secret) for f in kept} <= {"totp_secret"}, "\n".join(map(str, kept[:10]))
    # The stored trail is pseudonymous: the user's name and address appear only as hashes.
    identities = Canaries()
    identities.add("user_name", USER)
    identities.add("client_address", CLIENT_ADDRESS)
    named = identities.find_all(sinks)
    assert not named, "\n".join(str(f) for f in named[:10])


def test_the_scanner_finds_every_form_and_no_near_miss() -> None:
    """The forms of tests/canary_support.py, each found where a leak would put it, and a
    short secret not "found" inside a longer number or word."""
    canaries = Canaries()
    canaries.add("password", "a pass phrase / with + signs")
    canaries.add("totp_code", "492039")
    canaries.add("refresh_token", "brt_publicfamilyid.secretpart0123456789", partial=False)
    secret = b"a pass phrase / with + signs"
    cases = {
        b"form body password=a+pass+phrase+%2F+with+%2B+signs&x=1": "quote_plus",
        b"url /x?p=a%20pass%20phrase%20%2F%20with%20%2B%20signs": "quote",
        b"hex " + secret.hex().encode(): "hex",
        b"Basic " + base64.b64encode(b"user:" + secret): "base64@1",
        b"token " + base64.urlsafe_b64encode(b"x" + secret): "base64@2",
        b"truncated 'a pass phras...'": "prefix12",
        b"kept the end: ...with + signs": "suffix12",
    }
    for data, form in cases.items():
        found = {f.form for f in canaries.find(Sink("case", data))}
        assert form in found, (data, found)
    assert [f.secret for f in canaries.find(Sink("code", b'{"code": "492039"}'))] == ["totp_code"]
    for near in (b"t=1749203912", b"id x492039y", b"0.4920391"):
        assert canaries.find(Sink("near", near)) == [], near
    # A refresh token's family id is public by design: only the whole token and its secret
    # part count.
    assert canaries.find(Sink("id", b"family brt_publicfamilyid revoked")) == []
    assert canaries.find(Sink("whole", b"brt_publicfamilyid.secretpart0123456789"))
    assert canaries.find(Sink("allowed", b"password=a+pass+phrase"), allowed={"password"}) == []
    key = bytes(range(200, 232))
    canaries.add_bytes("data_key", key)
    assert {f.form for f in canaries.find(Sink("file", b"\x00page" + key + b"\x00"))} == {
        "bytes",
        "bytes prefix12",
        "bytes suffix12",
    }
    assert {f.form for f in canaries.find(Sink("hex", key.hex().encode()))} == {"raw"}


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bastion:{pw}@127.0.0.1:{port}/audit?connect_timeout=1",
        "redis://default:{pw}@127.0.0.1:{port}/0?timeout=1",
    ],
)
def test_an_unreachable_store_names_no_password(url: str, logs: LogCapture) -> None:
    """A trail whose store refuses connections: the error raised (with its causes and
    traceback), the trail's repr and every log line name the store without its password."""
    with socket.socket() as unused:  # bound, never listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        canaries = Canaries()
        password = canaries.add("store_password", f"pw-{secrets.token_urlsafe(18)}")
        store = url.format(pw=canaries.values[password], port=unused.getsockname()[1])
        texts = []
        try:
            trail = AuditTrail(
                AuditPolicy(store=store), keyring=KeyRing.generate(), background=False
            )
            texts.append(repr(trail))
            trail.auditor(aggregation=None).emit("canary_control", outcome=Outcome.SUCCESS)
            trail.flush()  # the batch is refused: logged, counted, dropped
            trail.close()
        except StoreUnavailable as error:
            texts.append("".join(traceback.format_exception(error)))
    assert texts
    assert any("***@127.0.0.1" in text for text in texts), texts
    sinks = [Sink("error and repr", "\n".join(texts).encode()), *logs.sinks()]
    raised = any("StoreUnavailable" in text for text in texts)
    assert raised or logs.rendered  # raised at once (PostgreSQL) or logged at the flush (Redis)
    assert not canaries.find_all(sinks), canaries.find_all(sinks)
