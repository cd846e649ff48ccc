"""The guide's ten security events, driven through the real demo over HTTP (httpx ASGI) and read
back from its stored audit trail on a real SQLite file; and attacks on the account routes of
:mod:`bastion.demo.account` (revoke a key, export, delete)."""

from __future__ import annotations

import gc
import re
import time
import warnings
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio

from bastion.core.audit import EventName
from bastion.core.audit_names import GUIDE_EVENTS, owasp_name
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.demo.app import DemoApp
from bastion.engine.audit.ecs import ecs_document
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import afetch_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from bastion.audit import AuditRecord

SEED = "correct horse battery staple for the demo"
NEWER = "another long passphrase for the reset 9"
BASE = "http://127.0.0.1:8000"
SECRET = SecretKey.generate().to_text()
UA = "demo-events-probe/1.0 (+https://example.test/ua)"
USER_IP = "198.51.100.23"
ATTACKER_IP = "203.0.113.66"
PHONE = "+44 20 7946 0001"


class Demo:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FrozenClock(time.time())
        self.app = DemoApp(
            MemoryStore(clock=self.clock),
            keyring=KeyRing.from_secrets([SECRET]),
            clock=self.clock,
            seed_password=SEED,
            hasher=PasswordHasher(TEST_ONLY_PROFILE),
            production=False,
            audit_url=f"sqlite:///{tmp_path / 'demo.audit.db'}",
            profiles_path=str(tmp_path / "demo.profiles.db"),
        )

    def client(self, ip: str = USER_IP, cookies: dict[str, str] | None = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 51000))
        return httpx.AsyncClient(
            transport=transport, base_url=BASE, headers={"User-Agent": UA}, cookies=cookies
        )

    def records(self, name: EventName | str) -> list[AuditRecord]:
        trail = self.app.runtime.audit
        trail.flush()
        return trail.query(event=name, limit=1000)

    def digest(self, value: str, kind: str) -> str:
        return self.app.runtime.audit.hasher.hash(value, kind=kind).digest


@pytest_asyncio.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    made = Demo(tmp_path)
    await made.app.startup()
    yield made
    await made.app.shutdown()


async def post_form(
    client: httpx.AsyncClient, page: str, path: str, data: dict[str, str]
) -> httpx.Response:
    token = await afetch_token(client, page)
    return await client.post(path, data={**data, "csrf_token": token})


async def log_in(
    client: httpx.AsyncClient, username: str = "demo", password: str = SEED
) -> httpx.Response:
    return await post_form(client, "/login", "/login", {"username": username, "password": password})


async def new_key(client: httpx.AsyncClient) -> tuple[str, str]:
    """``(key id, key)`` of a new ``profile:read`` key made on the account page."""
    made = await post_form(client, "/account", "/account/api-keys", {"scopes": "profile:read"})
    assert made.status_code == 200
    token = re.findall(r'id="api-key">([^<]+)<', made.text)[0]
    page = (await client.get("/account")).text
    key_ids = re.findall(r'action="/account/api-keys/([0-9a-f]{16})/revoke"', page)
    return key_ids[-1], token


async def api_me(demo: Demo, key: str) -> httpx.Response:
    async with demo.client() as api:
        return await api.get("/api/me", headers={"X-API-Key": key})


async def reset_password(demo: Demo, browser: httpx.AsyncClient, new: str) -> None:
    async with demo.client() as anonymous:
        sent = await post_form(
            anonymous, "/reset-password", "/reset-password", {"username": "demo"}
        )
        assert sent.status_code == 200
    outbox = await browser.get("/outbox")
    link = re.findall(r'class="reset-link" href="([^"]+)"', outbox.text)[0].removeprefix(BASE)
    async with demo.client() as anonymous:
        done = await post_form(anonymous, link, link, {"new_password": new})
        assert done.status_code == 303


# --- the ten events ---------------------------------------------------------------------------


async def drive_every_guide_event(demo: Demo) -> None:
    """Each of the guide's events once, by HTTP only."""
    async with demo.client(ATTACKER_IP) as attacker:  # admin: fail, lock, then a burst
        statuses = [(await log_in(attacker, "admin", f"guess {i}")).status_code for i in range(10)]
        assert statuses == [401] * 6 + [429] * 4  # LOGIN_FAILED, LOGIN_BLOCKED, SUSPICIOUS
    async with demo.client() as browser:
        assert (await log_in(browser, "demo", "not the password")).status_code == 401
        assert (await log_in(browser)).status_code == 303  # LOGIN_SUCCESS
        denied = await browser.get("/admin")  # PERMISSION_DENIED
        assert denied.status_code == 403
        key_id, key = await new_key(browser)  # API_KEY_CREATED
        revoked = await post_form(browser, "/account", f"/account/api-keys/{key_id}/revoke", {})
        assert revoked.status_code == 303  # API_KEY_REVOKED
        assert (await api_me(demo, key)).status_code == 401
        page = (await browser.get("/account")).text
        assert f'id="revoked-{key_id}"' in page
        assert f'id="revoke-{key_id}"' not in page
        assert 'href="/account/export"' in page
        assert 'action="/account/delete"' in page
        await reset_password(demo, browser, NEWER)  # PASSWORD_RESET
    async with demo.client() as browser:
        assert (await log_in(browser, password=NEWER)).status_code == 303
        exported = await browser.get("/account/export")  # DATA_EXPORT
        assert exported.status_code == 200
        deleted = await post_form(
            browser, "/account", "/account/delete", {"current_password": NEWER}
        )
        assert deleted.status_code == 303  # ACCOUNT_DELETED


# guide name -> (outcome, account, address) of the event the drive above must have stored
EXPECTED = {
    "LOGIN_SUCCESS": ("success", "demo", USER_IP),
    "LOGIN_FAILED": ("failure", "demo", USER_IP),
    "LOGIN_BLOCKED": ("blocked", "admin", ATTACKER_IP),
    "PASSWORD_RESET": ("success", "demo", USER_IP),
    "PERMISSION_DENIED": ("blocked", "demo", USER_IP),
    "SUSPICIOUS_ACTIVITY": ("failure", None, ATTACKER_IP),
    "API_KEY_CREATED": ("success", "demo", USER_IP),
    "API_KEY_REVOKED": ("success", "demo", USER_IP),
    "DATA_EXPORT": ("success", "demo", USER_IP),
    "ACCOUNT_DELETED": ("success", "demo", USER_IP),
}


def stored_event(demo: Demo, guide: str) -> AuditRecord:
    """The one stored event for ``guide`` with the expected outcome and account."""
    outcome, account, _ip = EXPECTED[guide]
    user = None if account is None else demo.digest(account, "user")
    found = [
        record
        for record in demo.records(owasp_name(guide))
        if record.outcome == outcome and (user is None or record.user == user)
    ]
    assert found, f"{guide}: no stored {owasp_name(guide)} {outcome} for {account}"
    return found[-1]  # newest first: the first of them


def test_the_guide_names_map_onto_the_vocabulary() -> None:
    assert set(EXPECTED) == set(GUIDE_EVENTS)
    assert owasp_name("DATA_EXPORT") is EventName.SENSITIVE_READ
    assert EventName.SENSITIVE_READ.value == "sensitive_read"
    document = ecs_document(
        {"time": "t", "event": "sensitive_read", "outcome": "success", "level": "warn"}
    )
    assert (document["event"]["category"], document["event"]["type"]) == (
        ["database", "web"],
        ["access"],
    )


@pytest.mark.asyncio
async def test_every_guide_event_is_stored_with_its_client_address_and_user_agent(
    demo: Demo,
) -> None:
    await drive_every_guide_event(demo)
    for guide, (_outcome, _account, ip) in EXPECTED.items():
        record = stored_event(demo, guide)
        assert record.client_ip is not None, guide
        assert record.client_ip == demo.digest(ip, "client_ip"), guide
        assert record.user_agent == UA, guide
        assert record.to_dict()["user_agent"] == UA, guide
    assert stored_event(demo, "SUSPICIOUS_ACTIVITY").details["pattern"] == "account_burst"
    assert stored_event(demo, "LOGIN_BLOCKED").details["counter"] == "pair"
    assert stored_event(demo, "PASSWORD_RESET").details["via"] == "reset_link"
    assert stored_event(demo, "DATA_EXPORT").details["action"] == "data_export"
    assert demo.app.runtime.audit.verify().ok


# --- attacks on the account routes -----------------------------------------------------------


@pytest.mark.asyncio
async def test_another_users_key_id_is_the_same_404_as_an_unknown_one(demo: Demo) -> None:
    async with demo.client() as admin:
        await log_in(admin, "admin")
        admins_key_id, admins_key = await new_key(admin)
    async with demo.client(ATTACKER_IP) as browser:
        await log_in(browser)
        theirs = await post_form(
            browser, "/account", f"/account/api-keys/{admins_key_id}/revoke", {}
        )
        unknown = await post_form(
            browser, "/account", "/account/api-keys/00112233445566ff/revoke", {}
        )
        malformed = await post_form(
            browser, "/account", "/account/api-keys/00112233445566FF/revoke", {}
        )
        for answer in (theirs, unknown, malformed):
            assert answer.status_code == 404
            assert re.findall(r'id="error-message">([^<]*)<', answer.text) == [
                "There is no such API key."
            ]
    mine = await api_me(demo, admins_key)
    assert (mine.status_code, mine.json()["username"]) == (200, "admin")  # still works
    assert demo.records(EventName.AUTHN_TOKEN_REVOKED) == []


@pytest.mark.asyncio
async def test_revoke_needs_login_and_a_csrf_token(demo: Demo) -> None:
    async with demo.client() as browser:
        await log_in(browser)
        key_id, key = await new_key(browser)
        no_token = await browser.post(
            f"/account/api-keys/{key_id}/revoke", headers={"Accept": "application/json"}
        )
        assert (no_token.status_code, no_token.json()["reason"]) == (403, "token_missing")
    async with demo.client() as anonymous:
        token = await afetch_token(anonymous, "/login")
        answer = await anonymous.post(
            f"/account/api-keys/{key_id}/revoke", data={"csrf_token": token}
        )
        assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    assert (await api_me(demo, key)).status_code == 200


@pytest.mark.asyncio
async def test_export_is_own_data_without_secrets_and_not_cached(demo: Demo) -> None:
    async with demo.client() as admin:
        await log_in(admin, "admin")
        await post_form(
            admin,
            "/account/profile",
            "/account/profile",
            {"phone": "+1 555 0100", "bio": "admin bio"},
        )
        admins_key_id, _ = await new_key(admin)
    async with demo.client() as browser:
        await log_in(browser, "demo")
        await demo.app.users.set_totp_secret("demo", "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP")
        saved = await post_form(
            browser, "/account/profile", "/account/profile", {"phone": PHONE, "bio": "<b>hi</b>"}
        )
        assert saved.status_code == 200
        key_id, key = await new_key(browser)
        exported = await browser.get("/account/export?user=admin&username=admin")
    assert exported.status_code == 200
    assert exported.headers["cache-control"] == "no-store"
    assert exported.headers["content-type"] == "application/json"
    body = exported.json()
    assert body["account"] == {
        "username": "demo",
        "role": "user",
        "created_at": body["account"]["created_at"],
        "totp_enabled": True,
    }
    assert body["profile"] == {"phone": PHONE, "phone_note": None, "bio": "<b>hi</b>"}
    assert body["sessions"] == {"live": 1}
    assert [k["key_id"] for k in body["api_keys"]] == [key_id]
    record = await demo.app.api_keys.get(key_id)
    assert record is not None
    user = await demo.app.users.get("demo")
    assert user is not None
    text = exported.text
    for secret in (key, record.digest, user.password_hash, "JBSWY3DPEHPK3PXP", "$argon2"):
        assert secret not in text
    for theirs in ("admin bio", "555 0100", admins_key_id):  # the query string picks no one
        assert theirs not in text
    (event,) = demo.records(EventName.SENSITIVE_READ)
    assert (event.outcome, event.user) == ("success", demo.digest("demo", "user"))


@pytest.mark.asyncio
async def test_export_without_login_goes_to_the_login_page(demo: Demo) -> None:
    async with demo.client() as anonymous:
        answer = await anonymous.get("/account/export")
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    assert "account" not in answer.text
    assert demo.records(EventName.SENSITIVE_READ) == []


@pytest.mark.asyncio
async def test_delete_with_a_wrong_password_is_refused_and_deletes_nothing(demo: Demo) -> None:
    async with demo.client() as browser:
        await log_in(browser)
        _key_id, key = await new_key(browser)
        for wrong in ("not my password", "x" * 5000):
            refused = await post_form(
                browser, "/account", "/account/delete", {"current_password": wrong}
            )
            assert refused.status_code == 403
            assert re.findall(r'id="error-reason">([^<]*)<', refused.text) == [
                "current_password_wrong"
            ]
        assert (await browser.get("/account")).status_code == 200  # still signed in
    assert await demo.app.users.get("demo") is not None
    assert (await api_me(demo, key)).status_code == 200
    failures = demo.records(EventName.USER_DELETED)
    assert [(r.outcome, r.details["reason"]) for r in failures] == [
        ("failure", "current_password_wrong")
    ] * 2
    assert all(r.user == demo.digest("demo", "user") for r in failures)


@pytest.mark.asyncio
async def test_delete_without_a_csrf_token_is_refused(demo: Demo) -> None:
    async with demo.client() as browser:
        await log_in(browser)
        refused = await browser.post(
            "/account/delete",
            data={"current_password": SEED},
            headers={"Accept": "application/json"},
        )
        assert (refused.status_code, refused.json()["reason"]) == (403, "token_missing")
        forged = await browser.post(
            "/account/delete",
            data={"current_password": SEED, "csrf_token": "forged"},
            headers={"Accept": "application/json"},
        )
        assert (forged.status_code, forged.json()["reason"]) == (403, "token_malformed")
        assert (await browser.get("/account")).status_code == 200
    assert await demo.app.users.get("demo") is not None
    assert demo.records(EventName.USER_DELETED) == []


@pytest.mark.asyncio
async def test_nothing_of_a_deleted_account_can_be_replayed(demo: Demo) -> None:
    async with demo.client() as other_device:
        await log_in(other_device)
        other_cookies = dict(other_device.cookies)
    async with demo.client() as api:
        pair = (await api.post("/api/token", data={"username": "demo", "password": SEED})).json()
        before = await api.get(
            "/api/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
        )
        assert before.status_code == 200
    async with demo.client() as browser:
        await log_in(browser)
        await post_form(
            browser, "/account/profile", "/account/profile", {"phone": PHONE, "bio": "b"}
        )
        _key_id, key = await new_key(browser)
        codes = await demo.app.totp.new_recovery_codes("demo")
        cookies = dict(browser.cookies)
        demo.clock.advance(1)
        deleted = await post_form(
            browser, "/account", "/account/delete", {"current_password": SEED}
        )
        assert (deleted.status_code, deleted.headers["location"]) == (303, "/?deleted=1")
        home = await browser.get("/?deleted=1")
        assert 'id="deleted"' in home.text
    for jar in (cookies, other_cookies):  # the old session cookies are anonymous now
        async with demo.client(cookies=jar) as replay:
            answer = await replay.get("/account")
            assert (answer.status_code, answer.headers["location"]) == (303, "/login")
            assert (await replay.get("/account/export")).status_code == 303
    refused = await api_me(demo, key)
    assert (refused.status_code, refused.json()["error"]) == (401, "revoked")
    assert await demo.app.totp.remaining_recovery_codes("demo") == 0  # forgotten with it
    assert not await demo.app.totp.use_recovery_code("demo", codes[0])
    async with demo.client() as api:
        bearer = await api.get(
            "/api/me", headers={"Authorization": f"Bearer {pair['access_token']}"}
        )
        assert (bearer.status_code, bearer.json()) == (401, {"error": "invalid_token"})
        refreshed = await api.post(
            "/api/token/refresh", data={"refresh_token": pair["refresh_token"]}
        )
        assert (refreshed.status_code, refreshed.json()["error"]) == (401, "invalid_grant")
    async with demo.client() as browser:
        assert (await log_in(browser)).status_code == 401
    assert await demo.app.users.get("demo") is None
    assert "demo" not in await demo.app.users.names()
    assert demo.app.profiles.table.get("demo") is None
    assert (await demo.app.assignments.load("demo")).roles == frozenset()
    (gone,) = [r for r in demo.records(EventName.USER_DELETED) if r.outcome == "success"]
    assert gone.user == demo.digest("demo", "user")
    assert dict(gone.details) == {"sessions_ended": 2}


@pytest.mark.asyncio
async def test_a_key_the_deletion_missed_dies_with_the_account(demo: Demo) -> None:
    """A key made by a request already under way when the account was deleted (so the
    deletion's revocation sweep did not list it) is refused: its owner is gone."""
    async with demo.client() as browser:
        await log_in(browser)
        deleted = await post_form(
            browser, "/account", "/account/delete", {"current_password": SEED}
        )
        assert deleted.status_code == 303
    late = await demo.app.api_keys.create("demo", scopes=["profile:read"])
    refused = await api_me(demo, late.token)
    assert (refused.status_code, refused.json()) == (401, {"error": "unknown"})


@pytest.mark.asyncio
async def test_the_password_field_of_delete_is_rate_limited(demo: Demo) -> None:
    async with demo.client(ATTACKER_IP) as stolen_session:
        await log_in(stolen_session)
        statuses = []
        for i in range(6):
            answer = await post_form(
                stolen_session, "/account", "/account/delete", {"current_password": f"guess {i}"}
            )
            statuses.append(answer.status_code)
        assert statuses == [403] * 5 + [429]
        assert "retry-after" in answer.headers
    assert await demo.app.users.get("demo") is not None


@pytest.mark.asyncio
async def test_the_admin_page_counts_the_stored_trail(demo: Demo) -> None:
    async with demo.client() as admin:
        assert (await log_in(admin, "admin")).status_code == 303
        page = await admin.get("/admin")
    assert page.status_code == 200
    stored = demo.app.runtime.audit.last_seq()
    assert stored >= 2  # the login and the admin view at least
    where = demo.app.runtime.audit.backend.where
    # The admin view's own event is written before the count is read; nothing comes after.
    assert f"{stored} audit events are stored in the trail at {where}." in page.text


@pytest.mark.asyncio
async def test_a_file_sent_to_a_form_is_closed_with_the_request(demo: Demo) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with demo.client() as browser:
            token = await afetch_token(browser, "/login")
            refused = await browser.post(
                "/login",
                data={"username": "demo", "password": "not it", "csrf_token": token},
                files={"doc": ("a.txt", b"x" * 10, "text/plain")},
            )
        gc.collect()
    assert refused.status_code == 401
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
