"""The demo's token routes over ASGI (httpx): the token endpoint as ``curl`` would call it,
refresh rotation and reuse, revocation, JWKS, and the password-reset flow with its outbox."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio

from bastion.core.clock import FrozenClock
from bastion.demo.app import DemoApp
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from servers import free_port
from test_demo import BASE, GOOD, SEED, client_for, log_in, make_app, post_form

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

NEWER = "another long passphrase for the reset 9"


@pytest_asyncio.fixture
async def app() -> AsyncIterator[DemoApp]:
    demo = make_app()
    await demo.startup()
    yield demo
    await demo.shutdown()


def curl(app: DemoApp) -> httpx.AsyncClient:
    """A client without cookies, Origin or Fetch Metadata: what ``curl`` sends."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def get_pair(client: httpx.AsyncClient, password: str = SEED) -> dict[str, object]:
    answer = await client.post("/api/token", data={"username": "demo", "password": password})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    client.cookies.clear()  # the endpoint sets none; keep the next call cookie-free regardless
    pair: dict[str, object] = answer.json()
    return pair


async def me(client: httpx.AsyncClient, access: object) -> httpx.Response:
    return await client.get("/api/me", headers={"Authorization": f"Bearer {access}"})


@pytest.mark.asyncio
async def test_token_endpoint_from_curl_then_api_me(app: DemoApp) -> None:
    async with curl(app) as client:
        answer = await client.post("/api/token", data={"username": "demo", "password": SEED})
        assert answer.status_code == 200
        assert "set-cookie" not in answer.headers
        pair = answer.json()
        assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in", "scope"}
        assert (pair["token_type"], pair["expires_in"]) == ("Bearer", 300)
        found = await me(client, pair["access_token"])
        assert (found.status_code, found.json()["username"]) == (200, "demo")


@pytest.mark.asyncio
async def test_wrong_password_is_invalid_grant_without_tokens(app: DemoApp) -> None:
    async with curl(app) as client:
        answer = await client.post("/api/token", data={"username": "demo", "password": "nope"})
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_grant"
        assert "access_token" not in answer.text


@pytest.mark.asyncio
async def test_refresh_rotates_and_a_reused_token_revokes_the_family(app: DemoApp) -> None:
    async with curl(app) as client:
        first = await get_pair(client)
        second = await client.post(
            "/api/token/refresh", data={"refresh_token": first["refresh_token"]}
        )
        assert second.status_code == 200
        newer = second.json()
        assert newer["refresh_token"] != first["refresh_token"]
        # Past the grace window the old token is a replay: 401, and the family is revoked.
        app.clock.advance(60)  # type: ignore[attr-defined]
        replay = await client.post(
            "/api/token/refresh", data={"refresh_token": first["refresh_token"]}
        )
        assert (replay.status_code, replay.json()["error"]) == (401, "invalid_grant")
        after = await client.post(
            "/api/token/refresh", data={"refresh_token": newer["refresh_token"]}
        )
        assert after.status_code == 401


@pytest.mark.asyncio
async def test_revoking_an_access_token_and_a_refresh_token(app: DemoApp) -> None:
    async with curl(app) as client:
        pair = await get_pair(client)
        done = await client.post("/api/token/revoke", data={"token": pair["access_token"]})
        assert done.status_code == 200
        refused = await me(client, pair["access_token"])
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["www-authenticate"]
        await client.post("/api/token/revoke", data={"token": pair["refresh_token"]})
        gone = await client.post(
            "/api/token/refresh", data={"refresh_token": pair["refresh_token"]}
        )
        assert gone.status_code == 401
        unknown = await client.post("/api/token/revoke", data={"token": "not a token"})
        assert unknown.status_code == 200  # RFC 7009: no oracle


@pytest.mark.asyncio
async def test_jwks_lists_public_keys_only(app: DemoApp) -> None:
    async with curl(app) as client:
        answer = await client.get("/.well-known/jwks.json")
        assert answer.status_code == 200
        keys = answer.json()["keys"]
        assert [key["kid"] for key in keys] == ["demo-1"]
        assert all("d" not in key for key in keys)


@pytest.mark.asyncio
async def test_a_browser_post_with_cookies_still_needs_csrf(app: DemoApp) -> None:
    async with client_for(app) as browser:
        await log_in(browser)
        forged = await browser.post(
            "/api/token",
            data={"username": "demo", "password": SEED},
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        )
        assert forged.status_code == 403


@pytest.mark.asyncio
async def test_password_change_and_logout_elsewhere_end_token_families(app: DemoApp) -> None:
    async with curl(app) as api, client_for(app) as browser:
        pair = await get_pair(api)
        await log_in(browser)
        changed = await post_form(
            browser,
            "/account",
            "/account/password",
            {"current_password": SEED, "new_password": GOOD},
        )
        assert changed.status_code == 303
        assert (await me(api, pair["access_token"])).status_code == 401
        refused = await api.post(
            "/api/token/refresh", data={"refresh_token": pair["refresh_token"]}
        )
        assert refused.status_code == 401
        fresh = await get_pair(api, GOOD)
        assert (await me(api, fresh["access_token"])).status_code == 200
        app.clock.advance(1)  # type: ignore[attr-defined]
        ended = await post_form(browser, "/account/sessions", "/account/sessions/revoke-others", {})
        assert ended.status_code == 303
        assert (await me(api, fresh["access_token"])).status_code == 401


async def request_reset(app: DemoApp, username: str) -> httpx.Response:
    async with client_for(app) as anonymous:
        return await post_form(
            anonymous, "/reset-password", "/reset-password", {"username": username}
        )


async def reset_link(browser: httpx.AsyncClient) -> str:
    page = await browser.get("/outbox")
    assert page.status_code == 200
    links = re.findall(r'class="reset-link" href="([^"]+)"', page.text)
    assert links, page.text
    return links[0].removeprefix(BASE)


@pytest.mark.asyncio
async def test_password_reset_through_the_outbox(app: DemoApp) -> None:
    async with curl(app) as api:
        pair = await get_pair(api)
    sent = await request_reset(app, "demo")
    unknown = await request_reset(app, "nobody-here")
    assert sent.status_code == unknown.status_code == 200
    assert 'id="reset-sent"' in sent.text
    assert 'id="reset-sent"' in unknown.text
    async with client_for(app) as browser:
        await log_in(browser)
        link = await reset_link(browser)
    async with client_for(app) as anonymous:
        form = await anonymous.get(link)
        assert form.status_code == 200
        assert "Choose a new password for demo" in form.text
        done = await post_form(anonymous, link, link, {"new_password": NEWER})
        assert done.status_code == 303
        again = await anonymous.get(link)
        assert again.status_code == 400
    async with client_for(app) as browser:
        assert (await log_in(browser)).status_code == 401  # the old password is gone
        assert (await log_in(browser, password=NEWER)).status_code == 303
    async with curl(app) as api:
        assert (await me(api, pair["access_token"])).status_code == 401


@pytest.mark.asyncio
async def test_a_reset_link_dies_when_the_password_changes(app: DemoApp) -> None:
    await request_reset(app, "demo")
    async with client_for(app) as browser:
        await log_in(browser)
        link = await reset_link(browser)
        changed = await post_form(
            browser,
            "/account",
            "/account/password",
            {"current_password": SEED, "new_password": GOOD},
        )
        assert changed.status_code == 303
    async with client_for(app) as anonymous:
        assert (await anonymous.get(link)).status_code == 400


@pytest.mark.asyncio
async def test_the_outbox_is_the_signed_in_users_own(app: DemoApp) -> None:
    await request_reset(app, "demo")
    async with client_for(app) as browser:
        assert (await browser.get("/outbox")).status_code == 303
        await log_in(browser, "admin")
        page = await browser.get("/outbox")
        assert 'id="no-messages"' in page.text


@pytest.fixture
def served() -> Iterator[str]:
    """The demo under uvicorn on a free loopback port, for the real curl."""
    import uvicorn  # noqa: PLC0415

    clock = FrozenClock(time.time())
    app = DemoApp(
        MemoryStore(clock=clock),
        clock=clock,
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_curl(*args: str) -> tuple[int, dict[str, object] | None]:
    """``curl`` with ``args``: the status and the JSON body (``None`` when empty)."""
    binary = shutil.which("curl")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is missing: .ci/run installs it")
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [binary, "-s", "-w", "\n%{http_code}", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(body) if body else None


def test_the_token_routes_from_curl(served: str) -> None:
    status, pair = run_curl(
        "-d", "username=demo", "--data-urlencode", f"password={SEED}", f"{served}/api/token"
    )
    assert status == 200, pair
    assert pair is not None
    assert pair["token_type"] == "Bearer"
    access, refresh = str(pair["access_token"]), str(pair["refresh_token"])
    status, me = run_curl("-H", f"Authorization: Bearer {access}", f"{served}/api/me")
    assert (status, me) == (200, {"username": "demo", "scopes": ["profile:read"]})
    status, newer = run_curl("-d", f"refresh_token={refresh}", f"{served}/api/token/refresh")
    assert status == 200
    assert newer is not None
    status, jwks = run_curl(f"{served}/.well-known/jwks.json")
    assert status == 200
    assert jwks is not None
    status, _ = run_curl("-d", f"token={access}", f"{served}/api/token/revoke")
    assert status == 200
    status, refused = run_curl("-H", f"Authorization: Bearer {access}", f"{served}/api/me")
    assert (status, refused) == (401, {"error": "invalid_token"})


@pytest.mark.asyncio
async def test_a_refused_post_to_a_reset_link_keeps_the_token_out_of_the_audit_trail(
    app: DemoApp,
) -> None:
    await request_reset(app, "demo")
    async with client_for(app) as browser:
        await log_in(browser)
        link = await reset_link(browser)
    token = link.rsplit("/", 1)[1]
    async with client_for(app) as forger:
        forged = await forger.post(
            link,
            data={"new_password": NEWER},
            headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        )
        assert forged.status_code == 403
    events = [event.to_dict() for event in app.events]
    csrf = [event for event in events if event["event"] == "malicious_csrf"]
    assert csrf, events
    assert csrf[-1]["details"]["path"] == "/reset-password/bot_[redacted]"
    assert token not in repr(events)
    assert token.split(".")[1] not in repr(events)


@pytest.mark.asyncio
async def test_knowing_a_family_id_is_not_enough_to_revoke_it(app: DemoApp) -> None:
    """The family id is the visible half of a refresh token (and appears in audit events): a
    revocation with that id and a made-up secret must not end someone else's family."""
    async with curl(app) as client:
        pair = await get_pair(client)
        refresh = str(pair["refresh_token"])
        family = refresh.split(".", 1)[0]
        forged = family + "." + "A" * 43
        answer = await client.post("/api/token/revoke", data={"token": forged})
        assert answer.status_code == 200  # RFC 7009: the same answer, no oracle
        still = await client.post("/api/token/refresh", data={"refresh_token": refresh})
        assert still.status_code == 200
