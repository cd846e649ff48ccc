"""The demo's route contract, in process over ASGI (httpx), and ``bastion demo`` as a process."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pyotp
import pytest
import pytest_asyncio

from bastion.core.clock import FrozenClock
from bastion.core.environment import read_setting
from bastion.core.sessions import DEVELOPMENT_COOKIE_NAME
from bastion.demo import PASSWORD_SETTING, banner, build_demo
from bastion.demo.app import API_SCOPE, DemoApp
from bastion.demo.support import FriendlyErrors, mark_rendered
from bastion.errors import ConfigurationError
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import BROWSER_ACCEPT, afetch_token, browser_headers, find_token
from servers import free_port, http_ready, server_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from bastion.testing.redis_server import RedisServer

SEED = "correct horse battery staple for the demo"
GOOD = "a long passphrase nobody has used before 7"
BASE = "http://127.0.0.1:8000"
COOKIE = DEVELOPMENT_COOKIE_NAME  # plain-HTTP development mode: no __Host- prefix


def make_app(clock: FrozenClock | None = None) -> DemoApp:
    clock = clock or FrozenClock(time.time())
    return DemoApp(
        MemoryStore(clock=clock),
        clock=clock,
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
    )


@pytest_asyncio.fixture
async def app() -> AsyncIterator[DemoApp]:
    demo = make_app()
    await demo.startup()
    yield demo
    await demo.shutdown()


def client_for(app: DemoApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def post_form(
    client: httpx.AsyncClient, form_page: str, path: str, data: dict[str, str]
) -> httpx.Response:
    token = await afetch_token(client, form_page)
    return await client.post(path, data={**data, "csrf_token": token})


async def log_in(
    client: httpx.AsyncClient, username: str = "demo", password: str = SEED, totp: str = ""
) -> httpx.Response:
    data = {"username": username, "password": password}
    if totp:
        data["totp"] = totp
    return await post_form(client, "/login", "/login", data)


@pytest.mark.asyncio
async def test_home_healthz_and_headers(app: DemoApp) -> None:
    async with client_for(app) as client:
        health = await client.get("/healthz")
        assert (health.status_code, health.text) == (200, "ok")
        home = await client.get("/")
        assert home.status_code == 200
        assert 'id="who-anonymous"' in home.text
        csp = home.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce is not None
        assert home.text.count(f'nonce="{nonce.group(1)}"') == 2  # the style and the script
        assert "report-uri /csp-report" in csp
        assert home.headers["x-content-type-options"] == "nosniff"
        assert "server" not in home.headers
        await log_in(client)
        home = await client.get("/")
        assert '<strong id="who">demo</strong>' in home.text


@pytest.mark.asyncio
async def test_register_policy_reasons_then_account(app: DemoApp) -> None:
    async with client_for(app) as client:
        assert (await client.get("/register")).status_code == 200
        weak = await post_form(
            client, "/register", "/register", {"username": "alice", "password": "password"}
        )
        assert weak.status_code == 400
        assert 'id="errors"' in weak.text
        assert "15" in weak.text  # the length reason names the minimum
        bad_name = await post_form(
            client, "/register", "/register", {"username": "a", "password": GOOD}
        )
        assert bad_name.status_code == 400
        assert "User name" in bad_name.text
        ok = await post_form(
            client, "/register", "/register", {"username": "Alice", "password": GOOD}
        )
        assert (ok.status_code, ok.headers["location"]) == (303, "/account")
        account = await client.get("/account")
        assert account.status_code == 200
        assert "Account: alice" in account.text
    async with client_for(app) as other:
        taken = await post_form(
            other, "/register", "/register", {"username": "alice", "password": GOOD + "x"}
        )
        assert taken.status_code == 400
        assert "taken" in taken.text


@pytest.mark.asyncio
async def test_login_rotates_the_session_id_and_wrong_password_is_401(app: DemoApp) -> None:
    async with client_for(app) as client:
        await client.get("/login")
        before = client.cookies[COOKIE]
        wrong = await log_in(client, password="not the password at all!")
        assert wrong.status_code == 401
        assert "Wrong user name, password or code" in wrong.text
        unknown = await log_in(client, username="nobody")
        assert unknown.status_code == 401
        ok = await log_in(client)
        assert (ok.status_code, ok.headers["location"]) == (303, "/account")
        after = client.cookies[COOKIE]
        assert after != before
    async with client_for(app) as stale:
        stale.cookies.set(COOKIE, before)
        assert (await stale.get("/account")).status_code == 303


@pytest.mark.asyncio
async def test_logout_kills_the_old_cookie(app: DemoApp) -> None:
    async with client_for(app) as client:
        await log_in(client)
        cookie = client.cookies[COOKIE]
        out = await post_form(client, "/account", "/logout", {})
        assert (out.status_code, out.headers["location"]) == (303, "/")
        assert (await client.get("/account")).status_code == 303
    async with client_for(app) as replay:
        replay.cookies.set(COOKIE, cookie)
        response = await replay.get("/account")
        assert (response.status_code, response.headers["location"]) == (303, "/login")


@pytest.mark.asyncio
async def test_pages_that_need_a_login_redirect(app: DemoApp) -> None:
    async with client_for(app) as client:
        for path in ("/account", "/account/sessions", "/account/totp", "/audit"):
            response = await client.get(path)
            assert (response.status_code, response.headers["location"]) == (303, "/login"), path


@pytest.mark.asyncio
async def test_login_throttle_answers_the_friendly_429(app: DemoApp) -> None:
    async with client_for(app) as client:
        statuses = [
            (await log_in(client, password=f"wrong password number {i}")).status_code
            for i in range(10)
        ]
        assert statuses == [401] * 6 + [429] * 4
        last = await log_in(client)  # even the right password waits
        assert last.status_code == 429
        assert last.headers["retry-after"] == "30"
        assert "Try again in 30 seconds" in last.text
        assert 'id="retry-after"' in last.text


@pytest.mark.asyncio
async def test_revoke_other_sessions(app: DemoApp) -> None:
    async with client_for(app) as first, client_for(app) as second:
        await log_in(first)
        await log_in(second, username="DEMO")  # user names compare case-insensitively
        page = await first.get("/account/sessions")
        assert page.text.count('class="session') == 2
        assert "this device" in page.text
        done = await post_form(first, "/account/sessions", "/account/sessions/revoke-others", {})
        assert (done.status_code, done.headers["location"]) == (303, "/account/sessions")
        assert "Logged out 1 other device" in (await first.get("/account/sessions")).text
        assert (await second.get("/account")).status_code == 303
        assert (await first.get("/account")).status_code == 200


@pytest.mark.asyncio
async def test_password_change_revokes_other_sessions(app: DemoApp) -> None:
    async with client_for(app) as first, client_for(app) as second:
        await log_in(first)
        await log_in(second)
        wrong = await post_form(
            first,
            "/account",
            "/account/password",
            {"current_password": "nope nope nope nope", "new_password": GOOD},
        )
        assert wrong.status_code == 400
        assert (await second.get("/account")).status_code == 200
        changed = await post_form(
            first, "/account", "/account/password", {"current_password": SEED, "new_password": GOOD}
        )
        assert (changed.status_code, changed.headers["location"]) == (303, "/account")
        assert "Password changed. 1 other session" in (await first.get("/account")).text
        assert (await second.get("/account")).status_code == 303
    async with client_for(app) as third:
        assert (await log_in(third, password=SEED)).status_code == 401
        assert (await log_in(third, password=GOOD)).status_code == 303


@pytest.mark.asyncio
async def test_totp_enrolment_login_and_replay() -> None:
    clock = FrozenClock(1_800_000_000.0)
    app = make_app(clock)
    await app.startup()
    async with client_for(app) as client:
        await log_in(client)
        page = await client.get("/account/totp")
        assert page.status_code == 200
        assert "<svg" in page.text
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
        assert secret is not None
        totp = pyotp.TOTP(secret.group(1))
        wrong = await post_form(client, "/account/totp", "/account/totp", {"code": "000000"})
        assert wrong.status_code == 400
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', wrong.text)  # a fresh secret
        assert secret is not None
        totp = pyotp.TOTP(secret.group(1))
        token = find_token(wrong.text)
        enabled = await client.post(
            "/account/totp", data={"code": totp.at(clock.now()), "csrf_token": token}
        )
        assert enabled.status_code == 200
        codes = re.findall(r"<li><code>([a-z0-9]{5}-[a-z0-9]{5})</code></li>", enabled.text)
        assert len(codes) == 10
        assert "recovery codes" in (await client.get("/account/totp")).text
    clock.advance(60)
    async with client_for(app) as client:
        missing = await log_in(client)
        assert missing.status_code == 401
        assert "authenticator app" in missing.text
        code = totp.at(clock.now())
        assert (await log_in(client, totp=code)).status_code == 303
    async with client_for(app) as client:
        assert (await log_in(client, totp=code)).status_code == 401  # the same code, replayed
        assert (await log_in(client, totp=codes[0])).status_code == 303  # a recovery code
    async with client_for(app) as client:
        assert (await log_in(client, totp=codes[0])).status_code == 401  # used up
    await app.shutdown()


@pytest.mark.asyncio
async def test_api_keys_and_api_me(app: DemoApp) -> None:
    async with client_for(app) as client:
        await log_in(client)
        created = await post_form(client, "/account", "/account/api-keys", {"scopes": API_SCOPE})
        assert created.status_code == 200
        key = re.search(r'id="api-key">(bst_[A-Za-z0-9_]+)<', created.text)
        assert key is not None
        other = await post_form(client, "/account", "/account/api-keys", {"scopes": "posts:read"})
        other_key = re.search(r'id="api-key">(bst_[A-Za-z0-9_]+)<', other.text)
        assert other_key is not None
        bad = await post_form(client, "/account", "/account/api-keys", {"scopes": "NOT A SCOPE"})
        assert bad.status_code == 400
        listed = await client.get("/account")
        assert listed.text.count("<code>") >= 2
    async with client_for(app) as api:
        by_header = await api.get("/api/me", headers={"X-API-Key": key.group(1)})
        assert (by_header.status_code, by_header.json()["username"]) == (200, "demo")
        bearer = await api.get("/api/me", headers={"Authorization": f"Bearer {key.group(1)}"})
        assert (bearer.status_code, bearer.json()["username"]) == (200, "demo")
        missing = await api.get("/api/me")
        assert (missing.status_code, missing.json()) == (401, {"error": "missing"})
        fake = await api.get("/api/me", headers={"X-API-Key": "bst_" + "A" * 40})
        assert fake.status_code == 401
        assert fake.headers["content-type"] == "application/json"
        scoped = await api.get("/api/me", headers={"X-API-Key": other_key.group(1)})
        assert (scoped.status_code, scoped.json()) == (403, {"error": "insufficient_scope"})


@pytest.mark.asyncio
async def test_admin_is_for_the_admin_only(app: DemoApp) -> None:
    async with client_for(app) as anonymous:
        assert (await anonymous.get("/admin")).status_code == 403
    async with client_for(app) as user:
        await log_in(user)
        refused = await user.get("/admin")
        assert refused.status_code == 403
        assert "admin account only" in refused.text
        assert 'id="error-reason">no_match<' in refused.text  # the policy's reason
        assert any(
            e.name == "authz_fail" and e.details.get("action") == "admin:view" for e in app.events
        )
    async with client_for(app) as admin:
        await log_in(admin, username="admin")
        assert (await admin.get("/admin")).status_code == 200


@pytest.mark.asyncio
async def test_audit_shows_the_users_own_events(app: DemoApp) -> None:
    async with client_for(app) as client:
        await log_in(client, password="a wrong password for the log")
        await log_in(client)
        page = await client.get("/audit")
        assert page.status_code == 200
        events = re.findall(r'data-event="([a-z_]+)"', page.text)
        assert "authn_login_success" in events
        assert "authn_login_fail" in events
    async with client_for(app) as admin:
        await log_in(admin, username="admin")
        events = re.findall(r'data-event="([a-z_]+)"', (await admin.get("/audit")).text)
        assert "authn_login_success" in events
        assert "authn_login_fail" not in events  # demo's failure is not admin's


@pytest.mark.asyncio
async def test_csrf_refusals_are_friendly_403s(app: DemoApp) -> None:
    async with client_for(app) as client:
        await log_in(client)
        forged = await client.post(
            "/logout", headers=browser_headers("http://127.0.0.1:9999", site="same-site")
        )
        assert forged.status_code == 403
        assert "<title>Forbidden" in forged.text
        assert "CSRF protection" in forged.text
        assert "content-security-policy" in forged.headers
        no_token = await client.post("/account/password", data={"current_password": SEED})
        assert no_token.status_code == 403
        as_json = await client.post("/logout", headers={"Accept": "application/json"})
        assert as_json.status_code == 403
        assert as_json.json()["reason"] == "token_missing"
        assert (await client.get("/account")).status_code == 200  # still logged in


@pytest.mark.asyncio
async def test_rate_limit_refusal_is_a_friendly_429(app: DemoApp) -> None:
    async with client_for(app) as client:
        token = await afetch_token(client, "/register")
        statuses = []
        for i in range(11):
            response = await client.post(
                "/register",
                data={"username": f"u{i:03}", "password": "x", "csrf_token": token},
                headers={"Accept": BROWSER_ACCEPT},  # a browser: the friendly page
            )
            statuses.append(response.status_code)
        assert statuses == [400] * 10 + [429]
        assert "Too many requests" in response.text
        assert int(response.headers["retry-after"]) > 0
        assert 'id="retry-after"' in response.text
        assert "ratelimit-policy" in response.headers


def test_development_mode_warns_and_production_refuses(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.security.sessions")
    make_app()
    assert any("development=True" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigurationError, match="development=True"):
        DemoApp(MemoryStore(), seed_password=SEED, production=True)


def test_read_setting() -> None:
    assert read_setting(PASSWORD_SETTING, {PASSWORD_SETTING: "s3cret"}) == "s3cret"
    assert read_setting(PASSWORD_SETTING, {PASSWORD_SETTING: ""}) is None
    assert read_setting(PASSWORD_SETTING, {}) is None
    with pytest.raises(ConfigurationError, match="BASTION_"):
        read_setting("HOME", {"HOME": "/root"})


def test_banner_names_the_url_and_the_seeded_accounts() -> None:
    text = banner(make_app(), "http://127.0.0.1:8000/")
    assert "http://127.0.0.1:8000/" in text
    assert f"user 'demo' (user), password: {SEED}" in text
    assert f"user 'admin' (admin), password: {SEED}" in text


@pytest.mark.slow
def test_bastion_demo_serves_on_loopback(tmp_path: Path) -> None:
    """`bastion demo` as `make demo` runs it: a real uvicorn server on a free loopback port."""
    port = free_port()
    db = tmp_path / "demo.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PASSWORD_SETTING: SEED}
    env.pop("ENV", None)
    env.pop("BASTION_ENV", None)
    script = Path(sys.executable).with_name("bastion")  # the entry point `make demo` runs
    program = [str(script)] if script.exists() else [sys.executable, "-m", "bastion.cli"]
    command = [*program, "demo", "--port", str(port), "--store", f"sqlite:///{db}"]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    ready = functools.partial(http_ready, base + "/healthz", b"ok")
    with server_process(command, ready=ready, log=log, env=env):
        with urllib.request.urlopen(base + "/login", timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["server"] is None
            assert "nonce-" in resp.headers["content-security-policy"]
            assert resp.headers["set-cookie"].startswith(COOKIE + "=")
        assert db.exists()
        assert (tmp_path / "demo.documents.db").exists()  # the documents table beside it
    text = log.read_text(errors="replace")
    assert f"bastion demo: http://127.0.0.1:{port}/" in text
    assert f"user 'admin' (admin), password: {SEED}" in text
    assert "development=True" in text  # the development-mode warning is logged
    assert "Traceback" not in text


def test_demo_refuses_a_public_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "demo", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr


def test_bastion_secret_prints_a_fresh_key() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-m", "bastion.cli", "secret"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(outputs) == 2
    assert all(len(text) >= 43 for text in outputs)  # 32 bytes of base64url


@pytest.mark.asyncio
async def test_csp_reports_reach_the_receiver_and_the_audit_page(app: DemoApp) -> None:
    async with client_for(app) as client:
        home = await client.get("/")
        csp = home.headers["content-security-policy"]
        assert "report-uri /csp-report" in csp
        assert "report-to" not in csp  # see build_stack: report-uri is what plain HTTP delivers
        report = {
            "csp-report": {
                "document-uri": BASE + "/",
                "violated-directive": "script-src-elem",
                "effective-directive": "script-src-elem",
                "blocked-uri": "inline",
                "disposition": "enforce",
                "status-code": 200,
            }
        }
        sent = await client.post(
            "/csp-report",
            content=json.dumps(report),
            headers={"Content-Type": "application/csp-report"},
        )
        assert sent.status_code == 204
        wrong_type = await client.post("/csp-report", content="{}")
        assert wrong_type.status_code == 415
        await log_in(client)
        events = re.findall(r'data-event="([a-z_]+)"', (await client.get("/audit")).text)
        assert "csp_violation" in events


async def _plain_refusal(scope: Any, receive: Any, send: Any) -> None:
    status = 503 if scope["path"] == "/down" else 403
    content_type = b"application/json" if scope["path"] == "/json" else b"text/plain"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"retry-after", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"Service Unavailable"})


@pytest.mark.asyncio
async def test_friendly_errors_replace_plain_refusals_only(app: DemoApp) -> None:
    def render(_scope: Any, status: int, text: str, retry_after: str | None) -> bytes:
        return f"<p>{status} {text} {retry_after}</p>".encode()

    friendly = FriendlyErrors(_plain_refusal, render)
    transport = httpx.ASGITransport(app=friendly)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        down = await client.get("/down")
        assert (down.status_code, down.text) == (503, "<p>503 Service Unavailable 5</p>")
        assert down.headers["content-type"] == "text/html; charset=utf-8"
        assert down.headers["retry-after"] == "5"
        as_json = await client.get("/json")
        assert (as_json.status_code, as_json.text) == (403, "Service Unavailable")
    marked = FriendlyErrors(mark_rendered(_plain_refusal), render)
    transport = httpx.ASGITransport(app=marked)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        own = await client.get("/down")
        assert (own.status_code, own.text) == (503, "Service Unavailable")


@pytest.mark.redis
@pytest.mark.asyncio
async def test_the_demo_on_redis(redis_url: str, redis_prefix: str) -> None:
    app = build_demo(f"{redis_url}?prefix={redis_prefix}", seed_password=SEED)
    await app.startup()
    try:
        async with client_for(app) as first, client_for(app) as second:
            assert (await log_in(first)).status_code == 303
            assert (await log_in(second)).status_code == 303
            page = await first.get("/account/sessions")
            assert page.text.count('class="session') == 2
            await post_form(first, "/account/sessions", "/account/sessions/revoke-others", {})
            assert (await second.get("/account")).status_code == 303
            created = await post_form(first, "/account", "/account/api-keys", {"scopes": API_SCOPE})
            key = re.search(r'id="api-key">(bst_[A-Za-z0-9_]+)<', created.text)
            assert key is not None
            me = await first.get("/api/me", headers={"X-API-Key": key.group(1)})
            assert me.json()["username"] == "demo"
            assert "ratelimit-policy" in me.headers
    finally:
        await app.shutdown()


@pytest.mark.redis
@pytest.mark.asyncio
async def test_store_outage_is_a_friendly_503(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    server = start_redis_server()
    app = build_demo(server.url, seed_password=SEED)
    await app.startup()
    try:
        async with client_for(app) as client:
            assert (await log_in(client)).status_code == 303
            server.stop()
            for path in ("/account", "/"):
                down = await client.get(path)
                assert down.status_code == 503, path
                assert down.headers["retry-after"] == "5"
                assert "Service unavailable" in down.text
                assert "Traceback" not in down.text
                assert "content-security-policy" in down.headers
            server.start()
            assert (await client.get("/account")).status_code == 200  # not logged out
    finally:
        await app.shutdown()
