"""The secret canary, continued (issue 17, item 5): the paths tests/test_audit_canary.py does not
drive, searched with its scanner (tests/canary_support.py).

1. WSGI: a real Flask app behind ``bastion.flask.protect`` (tests/canary_more_paths.py) with
   server-side sessions, CSRF, rate limits, the login throttle and monitor, TOTP, API keys and
   tokens, its trail on a SQLite file: every secret kind sent right and wrong in headers, form
   and JSON bodies, query strings and paths. Sinks: every log record, the trail's file and
   ``-wal`` while open and after closing, the trail read back through bastion, every response.
2. Fail-closed: the same app with ``AuditPolicy(fail_closed=True)`` and the trail's write lock
   held by another connection: the 503 ``audit_unavailable`` answers and the warnings logged
   carry none of the secrets sent.
3. The demo's account routes (revoke a key, export, delete: wrong password then right) and the
   login monitor's suspicion events after a burst of wrong passwords (tests/canary_paths.py's
   ``Run``).
4. OpenID Connect against the real node oidc-provider (tests/test_demo_oidc.py's
   ``LocalProvider``): a sign-in, a replayed callback (``state_unknown``), a callback carried
   to another browser (``state_mismatch``), a spent code under a fresh state (``code_rejected``),
   a live code under another issuer (``iss_mismatch``), a provider's error (``provider_error``).
   The state, nonce, code, PKCE verifier, client secret, the provider's password and its ID and
   access tokens (read from the demo's own token-endpoint calls) are in no log, trail or
   response (but the login redirect, which carries the state and nonce by design).

Each new sink is first shown to hold a secret planted in it on purpose.
"""

from __future__ import annotations

import logging
import re
import secrets
import sqlite3
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import bastion.asgi
from bastion.audit import AuditPolicy, AuditTrail
from bastion.config import Bastion
from bastion.core.audit import EventName, Outcome
from bastion.core.clock import FrozenClock
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing, SecretKey
from bastion.crypto import DataKeyRing
from bastion.demo.app import DemoApp
from bastion.errors import AuditUnavailable
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import browser_headers
from canary_more_paths import (
    OIDC_BASE,
    Exchanges,
    FlaskRun,
    begin_oidc,
    flask_paths,
    oidc_callback,
)
from canary_paths import Run, passphrase
from canary_support import (
    CLIENT_ADDRESS,
    Canaries,
    Finding,
    Location,
    LogCapture,
    Sink,
    control_store,
    kind_of,
    open_logs,
    sqlite_sinks,
    trail_sinks,
)
from test_demo_oidc import ALICE, start_provider

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from starlette.requests import Request

    from bastion.demo.local_provider import LocalProvider

SHOWN_ON_PURPOSE = {"csrf_token"}


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    with open_logs() as handler:
        yield handler


def _leaks(
    canaries: Canaries, sinks: list[Sink], responses: list[tuple[Sink, frozenset[str]]]
) -> list[Finding]:
    findings = canaries.find_all(sinks)
    for sink, allowed in responses:
        findings += canaries.find(sink, allowed=allowed | SHOWN_ON_PURPOSE)
    return findings


def _reasons(url: str, ring: KeyRing, event: str, key: str = "reason") -> set[str]:
    """The ``reason`` (or another detail) of each stored ``event``: they reached the trail."""
    with AuditTrail.for_tools(url, keyring=ring) as trail:
        records = trail.query(limit=100_000)
    return {str(r.to_dict()["details"].get(key)) for r in records if r.event == event}


def _control_logs(canaries: Canaries, logs: LogCapture, secret: str) -> None:
    logging.getLogger("x").info("control: %s", secret)
    assert canaries.find_all(logs.sinks()[-1:]), "the log reader misses a planted secret"
    del logs.rendered[-1]


FLASK_EVENTS = {
    "authn_login_fail", "authn_login_success", "authn_login_lock", "authn_login_suspicious",
    "session_created", "session_renewed", "authn_token_created", "authn_token_reuse",
    "authn_token_revoked", "malicious_csrf", "excess_rate_limit_exceeded",
}  # fmt: skip
FLASK_KINDS = {
    "password", "totp_code", "totp_secret", "api_key", "access_token", "refresh_token",
    "session_id", "csrf_token",
}  # fmt: skip


def test_flask_paths_leak_no_secret(
    logs: LogCapture, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    ring = KeyRing(SecretKey.generate())
    audit = tmp_path / "audit.db"
    run = FlaskRun(f"sqlite:///{audit}", ring, tmp_path / "app.db")
    user = "flask" + secrets.token_hex(4)
    seed = run.secret("password", passphrase("control"))
    _control_logs(run.canaries, logs, seed)
    try:
        flask_paths(run, user)
        run.runtime.audit.flush()
        while_open = sqlite_sinks(audit)
    finally:
        run.runtime.close()
    # Control: a trail file of the same kind, read the same way, shows a secret written in it.
    planted = run.canaries.find_all(
        control_store(Location("sqlite", request, tmp_path), ring, seed)
    )
    assert ("password", "raw") in {(f.secret, f.form) for f in planted}, planted
    stored, names = trail_sinks(f"sqlite:///{audit}", ring)
    assert names >= FLASK_EVENTS, sorted(FLASK_EVENTS - names)
    assert run.canaries.kinds() >= FLASK_KINDS, sorted(FLASK_KINDS - run.canaries.kinds())
    shown = {
        kind_of(f.secret)
        for sink, allowed in run.responses
        for f in run.canaries.find(sink)
        if kind_of(f.secret) in allowed
    }
    assert shown == set().union(*(allowed for _, allowed in run.responses)), shown
    sinks = [*logs.sinks(), *while_open, *sqlite_sinks(audit), *stored]
    findings = _leaks(run.canaries, sinks, run.responses)
    assert not findings, "\n".join(str(f) for f in findings[:30])
    named = Canaries()
    named.add("user_name", user)
    assert not named.find_all([*while_open, *stored]), named.find_all(stored)[:5]


def test_fail_closed_refusals_leak_no_secret(logs: LogCapture, tmp_path: Path) -> None:
    ring = KeyRing(SecretKey.generate())
    audit = tmp_path / "audit.db"
    run = FlaskRun(f"sqlite:///{audit}?timeout=0.05", ring, tmp_path / "app.db", fail_closed=True)
    client = run.app.test_client()
    user = "closed" + secrets.token_hex(4)
    password = run.secret("password", passphrase("closed"))
    token = run.token(client)
    body = {"username": user, "password": password, "csrf_token": token}
    assert run.call(client, "POST", "/register", data=body).status_code == 200
    run.runtime.audit.flush()
    holder = sqlite3.connect(audit, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        run.runtime.auditor.emit(EventName.SYS_STARTUP, outcome=Outcome.SUCCESS)
        with pytest.raises(AuditUnavailable):
            run.runtime.audit.flush()
        wrong = run.secret("password", passphrase("closed-wrong"))
        key = run.secret("api_key", "bst_" + secrets.token_hex(20))
        forged = {**browser_headers("https://evil.example", site="cross-site")}
        forged["Accept"] = "application/json"
        answers = [
            run.call(client, "POST", "/login", data={"username": user, "password": wrong}),
            run.call(client, "POST", "/login", json={"username": user, "password": password}),
            run.call(
                client, "POST", f"/login?password={wrong}", headers=forged, data={"p": password}
            ),
            run.call(client, "GET", "/keys/me", headers={"X-API-Key": key}),
        ]
        # A refused bearer token is answered without the trail (bastion records no event for
        # a token its verifier refused), so it stays a 401 while the trail refuses writes.
        bearer = run.call(client, "GET", "/api/me", headers={"Authorization": f"Bearer {key}"})
        # Another path: a repeat of the same refusal would only be counted (aggregated).
        page = run.call(
            client, "POST", "/register", headers={**forged, "Accept": "text/html"}, data=body
        )
    finally:
        holder.rollback()
        holder.close()
    for answer in answers:
        assert answer.status_code == 503, (answer.status_code, answer.get_data(as_text=True))
        assert answer.get_json()["error"] == "audit_unavailable"
        assert answer.headers["Retry-After"] == "1"
    assert (bearer.status_code, bearer.get_json()["error"]) == (401, "invalid_token")
    assert page.status_code == 503
    assert page.get_data(as_text=True).startswith("Service unavailable")
    warned = [r for r in logs.rendered if b"WARNING" in r[1] or b"ERROR" in r[1]]
    assert warned, "the refusals were not logged"
    answered = [data for _, data in warned if b"answered 503 audit_unavailable" in data]
    assert len(answered) >= len(answers) + 1, warned
    _control_logs(run.canaries, logs, password)
    run.runtime.audit.flush()
    run.runtime.close()
    stored, names = trail_sinks(f"sqlite:///{audit}", ring)
    assert "sys_startup" in names  # the event queued while the store refused was kept
    sinks = [*logs.sinks(), *sqlite_sinks(audit), *stored]
    findings = _leaks(run.canaries, sinks, run.responses)
    assert not findings, "\n".join(str(f) for f in findings[:30])


DEMO_EVENTS = {"authn_token_revoked", "sensitive_read", "user_deleted", "authn_login_suspicious"}


@pytest.mark.asyncio
async def test_demo_account_routes_and_the_monitor_leak_no_secret(
    logs: LogCapture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_text = SecretKey.generate().to_text()
    monkeypatch.setenv("BASTION_SECRET_KEY", key_text)
    ring = KeyRing.from_secrets([key_text])
    audit = tmp_path / "audit.db"
    data_keys = DataKeyRing.from_text(f"1:{SecretKey.generate().to_text()}")
    user = "demo" + secrets.token_hex(4)
    run = Run(f"sqlite:///{audit}", ring, user, data_keys=data_keys, store=tmp_path / "app.db")
    canaries = run.canaries
    canaries.add("server_key", key_text)
    _control_logs(canaries, logs, run.seed)
    await run.app.startup()
    try:
        async with run.client() as client:
            password = run.secret("password", passphrase("demo"))
            made = await run.form(
                client, "/register", "/register", {"username": user, "password": password}
            )
            assert made.status_code == 303
            with run.showing("api_key"):
                page = await run.form(client, "/account", "/account/api-keys", {"scopes": "x"})
            found = re.search(r'id="api-key">(bst_[A-Za-z0-9]+)<', page.text)
            assert found is not None
            run.secret("api_key", found.group(1))
            listed = (await client.get("/account")).text
            key_id = re.findall(r'action="/account/api-keys/([0-9a-f]{16})/revoke"', listed)[-1]
            path = f"/account/api-keys/{key_id}/revoke"
            assert (await run.form(client, "/account", path, {})).status_code == 303
            unknown = await run.form(
                client, "/account", f"/account/api-keys/{found.group(1)}/revoke", {}
            )
            assert unknown.status_code == 404
            exported = await client.get("/account/export")
            assert (exported.status_code, exported.headers["cache-control"]) == (200, "no-store")
            wrong = run.secret("password", passphrase("delete-wrong"))
            refused = await run.form(
                client, "/account", "/account/delete", {"current_password": wrong}
            )
            assert refused.status_code == 403
            done = await run.form(
                client, "/account", "/account/delete", {"current_password": password}
            )
            assert (done.status_code, done.headers["location"]) == (303, "/?deleted=1")
        async with run.client() as attacker:  # a burst on the seeded admin: the monitor fires
            statuses = []
            for number in range(10):
                guess = run.secret("password", passphrase(f"burst{number}"))
                answer = await run.log_in(attacker, guess, user="admin")
                statuses.append(answer.status_code)
            assert statuses == [401] * 6 + [429] * 4, statuses
            blocked = await run.log_in(attacker, run.seed, user="admin")  # the right one, late
            assert blocked.status_code == 429
            for number in range(5):  # one network, many accounts: credential stuffing
                guess = run.secret("password", passphrase(f"stuffing{number}"))
                answer = await run.log_in(attacker, guess, user=f"{user}x{number}")
                assert answer.status_code == 401
        run.app.runtime.audit.flush()
        while_open = sqlite_sinks(audit)
    finally:
        await run.app.shutdown()
    stored, names = trail_sinks(f"sqlite:///{audit}", ring)
    assert names >= DEMO_EVENTS, sorted(DEMO_EVENTS - names)
    url = f"sqlite:///{audit}"
    patterns = _reasons(url, ring, "authn_login_suspicious", "pattern")
    assert patterns >= {"account_burst", "credential_stuffing"}, patterns
    assert _reasons(url, ring, "user_deleted") >= {"current_password_wrong"}
    shown = {
        kind_of(f.secret)
        for s, allowed in run.responses
        for f in canaries.find(s)
        if kind_of(f.secret) in allowed
    }
    assert "api_key" in shown  # control: the key's page shows it, found by the scanner
    sinks = [*logs.sinks(), *while_open, *sqlite_sinks(audit), *stored]
    findings = _leaks(canaries, sinks, run.responses)
    assert not findings, "\n".join(str(f) for f in findings[:30])


# -- OpenID Connect against the real provider -------------------------------------------------

OIDC_EVENTS = {"authn_login_success", "authn_login_fail"}


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalProvider]:
    local = start_provider([f"{OIDC_BASE}/auth/local/callback"])
    try:
        yield local
    finally:
        local.stop()


@pytest.mark.asyncio
async def test_oidc_routes_leak_no_secret(
    provider: LocalProvider, logs: LogCapture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchanges = Exchanges(provider.issuer)
    monkeypatch.setattr(httpx.AsyncClient, "send", exchanges.wrap(httpx.AsyncClient.send))
    ring = KeyRing(SecretKey.generate())
    audit = tmp_path / "audit.db"
    clock = FrozenClock(time.time())
    demo = DemoApp(
        MemoryStore(clock=clock),
        keyring=ring,
        clock=clock,
        seed_password=passphrase("seed"),
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
        oidc_provider=provider.provider(),
        audit_url=f"sqlite:///{audit}",
    )
    canaries = Canaries()
    canaries.add("client_secret", provider.client_secret)
    canaries.add("password", ALICE.password)
    responses: list[Sink] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        headers = [f"{k}: {v}" for k, v in response.headers.multi_items() if k != "set-cookie"]
        body = "\n".join(headers).encode() + b"\n\n" + response.content
        name = f"response {response.request.method} {response.request.url.path}"
        responses.append(Sink(f"{name} {response.status_code}", body))

    def browser() -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=demo, client=(CLIENT_ADDRESS, 50124))
        return httpx.AsyncClient(
            transport=transport, base_url=OIDC_BASE, event_hooks={"response": [record]}
        )

    json_accept = {"accept": "application/json"}
    _control_logs(canaries, logs, provider.client_secret)
    await demo.startup()
    try:
        async with browser() as client:
            first = oidc_callback(await begin_oidc(client, canaries), canaries)
            signed_in = await client.get(first)
            assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/account")
        async with browser() as replayer:  # the same callback again: its state is spent
            replayed = await replayer.get(first, headers=json_accept)
            assert (replayed.status_code, replayed.json()["error"]) == (400, "state_unknown")
        async with browser() as attacker, browser() as victim:  # login CSRF
            carried = oidc_callback(await begin_oidc(attacker, canaries), canaries)
            await victim.get("/")
            await begin_oidc(victim, canaries)
            crossed = await victim.get(carried, headers=json_accept)
            assert (crossed.status_code, crossed.json()["error"]) == (400, "state_mismatch")
        async with browser() as client:  # the first, spent code under a fresh, right state
            fresh = oidc_callback(await begin_oidc(client, canaries), canaries)
            query = parse_qs(urlsplit(fresh).query)
            spent = parse_qs(urlsplit(first).query)["code"][0]
            again = f"/auth/local/callback?code={spent}&state={query['state'][0]}"
            if "iss" in query:
                again += f"&iss={query['iss'][0]}"
            reused = await client.get(again, headers=json_accept)
            assert (reused.status_code, reused.json()["error"]) == (400, "code_rejected")
        async with browser() as client:  # a live code under another issuer, then an error
            live = oidc_callback(await begin_oidc(client, canaries), canaries)
            query = parse_qs(urlsplit(live).query)
            code, state = query["code"][0], query["state"][0]
            other = f"/auth/local/callback?code={code}&state={state}&iss=https%3A%2F%2Fevil.example"
            wrong_iss = await client.get(other, headers=json_accept)
            assert (wrong_iss.status_code, wrong_iss.json()["error"]) == (400, "iss_mismatch")
            state = parse_qs(urlsplit(await begin_oidc(client, canaries)).query)["state"][0]
            denied = await client.get(
                f"/auth/local/callback?error=access_denied&state={state}&code={code}"
                f"&iss={quote(provider.issuer, safe='')}",
                headers=json_accept,
            )
            assert (denied.status_code, denied.json()["error"]) == (400, "provider_error")
        demo.runtime.audit.flush()
        while_open = sqlite_sinks(audit)
    finally:
        await demo.shutdown()
    tokens = [(r, a) for r, a in exchanges.calls if b"grant_type=authorization_code" in r.content]
    assert len(tokens) >= 2, [str(r.url) for r, _ in exchanges.calls]
    for request, answer in tokens:
        form = parse_qs(request.content.decode())
        canaries.add("pkce_verifier", form["code_verifier"][0])
        if answer.status_code == 200:
            issued = answer.json()
            canaries.add("id_token", issued["id_token"], partial=False)
            canaries.add("id_token.signature", issued["id_token"].rsplit(".", 1)[1])
            canaries.add("provider_access_token", issued["access_token"])
    assert {"pkce_verifier", "id_token", "provider_access_token"} <= canaries.kinds()
    stored, names = trail_sinks(f"sqlite:///{audit}", ring)
    assert names >= OIDC_EVENTS, sorted(names)
    refusals = {
        "state_unknown",
        "state_mismatch",
        "code_rejected",
        "iss_mismatch",
        "provider_error",
    }
    assert _reasons(f"sqlite:///{audit}", ring, "authn_login_fail") >= refusals
    # Control: the login redirect shows the state and nonce (it exists to carry them).
    assert {f.secret for f in canaries.find(responses[0])} >= {"oidc_state", "oidc_nonce"}
    allowed = {"oidc_state", "oidc_nonce"}
    findings = canaries.find_all([*logs.sinks(), *while_open, *sqlite_sinks(audit), *stored])
    for sink in responses:
        redirect = sink.name.endswith("/auth/local/login 302")
        findings += canaries.find(sink, allowed=allowed if redirect else ())
    assert not findings, "\n".join(str(f) for f in findings[:30])


@pytest.mark.asyncio
async def test_fail_closed_asgi_refusals_leak_no_secret(logs: LogCapture, tmp_path: Path) -> None:
    """The ASGI twin of the fail-closed case: a Starlette app behind ``bastion.asgi.protect``,
    the login throttle's own event and a CSRF refusal unrecordable, each a 503."""
    ring = KeyRing(SecretKey.generate())
    audit = tmp_path / "audit.db"
    clock = FrozenClock(1_800_000_000.0)
    policy = AuditPolicy(store=f"sqlite:///{audit}?timeout=0.05", fail_closed=True, max_wait=0.0)
    runtime = Bastion(
        store=MemoryStore(clock=clock), keyring=ring, clock=clock,
        environment=Environment.TEST, audit=policy,
    ).build()  # fmt: skip
    canaries = Canaries()
    password = passphrase("asgi")
    canaries.add("password", password)

    async def login(request: Request) -> JSONResponse:
        form = await request.form()
        guess = str(form.get("password", ""))

        async def verify() -> bool:
            return guess == password

        attempt = await runtime.throttle.attempt(str(form.get("username", "")), "", verify)
        return JSONResponse({"ok": attempt.ok}, status_code=200 if attempt.ok else 401)

    app = bastion.asgi.protect(
        Starlette(routes=[Route("/login", login, methods=["POST"])]), runtime
    )
    runtime.auditor.emit(EventName.SYS_STARTUP, outcome=Outcome.SUCCESS)
    holder = sqlite3.connect(audit, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    wrong = passphrase("asgi-wrong")
    canaries.add("password", wrong)
    json_accept = {"Accept": "application/json"}
    try:
        with pytest.raises(AuditUnavailable):
            runtime.audit.flush()
        transport = httpx.ASGITransport(app=app, client=(CLIENT_ADDRESS, 50125))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            same = {**browser_headers("https://testserver"), **json_accept}
            cross = {**browser_headers("https://evil.example", site="cross-site"), **json_accept}
            answers = [
                await http.post(
                    "/login", data={"username": "ada", "password": wrong}, headers=same
                ),
                await http.post(f"/login?password={wrong}", data={"p": password}, headers=cross),
            ]
    finally:
        holder.rollback()
        holder.close()
    responses = []
    for answer in answers:
        assert (answer.status_code, answer.json()["error"]) == (503, "audit_unavailable")
        assert answer.headers["retry-after"] == "1"
        responses.append((Sink(f"response {answer.request.url}", answer.content), frozenset[str]()))
    answered = [d for _, d in logs.rendered if b"answered 503 audit_unavailable" in d]
    assert len(answered) >= len(answers), logs.names()
    _control_logs(canaries, logs, password)
    runtime.audit.flush()
    runtime.close()
    findings = _leaks(canaries, [*logs.sinks(), *sqlite_sinks(audit)], responses)
    assert not findings, "\n".join(str(f) for f in findings[:30])
