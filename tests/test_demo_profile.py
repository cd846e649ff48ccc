"""The demo's ``/account/profile`` (phone encrypted at rest, bio sanitized) and ``/audit`` on the
stored trail (filters, ``bastion audit verify`` on the demo's own data), over HTTP (httpx ASGI)
with real SQLite files and the real command line in a subprocess."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
import pytest
import pytest_asyncio

from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.demo import KEY_SETTING, audit_url, banner, build_demo
from bastion.demo.app import DemoApp
from bastion.demo.profile import TABLE, profiles_path
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import afetch_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SEED = "correct horse battery staple for the demo"
BASE = "http://127.0.0.1:8000"
SECRET = SecretKey.generate().to_text()
PHONE = "+44 20 7946 0000"
BIO = (
    '<b>hello</b> <script>alert("x")</script><a href="javascript:alert(1)">bad</a>'
    '<img src=x onerror="alert(2)"><a href="https://example.com/">site</a>'
)


class Demo:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FrozenClock(time.time())
        self.audit_url = f"sqlite:///{tmp_path / 'demo.audit.db'}"
        self.profiles = tmp_path / "demo.profiles.db"
        self.app = DemoApp(
            MemoryStore(clock=self.clock),
            keyring=KeyRing.from_secrets([SECRET]),
            clock=self.clock,
            seed_password=SEED,
            hasher=PasswordHasher(TEST_ONLY_PROFILE),
            production=False,
            audit_url=self.audit_url,
            profiles_path=str(self.profiles),
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)

    def rows(self) -> list[tuple[str, str | None, str]]:
        with sqlite3.connect(self.profiles) as db:
            return db.execute(f"SELECT username, phone, bio FROM {TABLE}").fetchall()


@pytest_asyncio.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    made = Demo(tmp_path)
    await made.app.startup()
    yield made
    await made.app.shutdown()


async def log_in(client: httpx.AsyncClient, username: str = "demo", password: str = SEED) -> None:
    token = await afetch_token(client, "/login")
    data = {"username": username, "password": password, "csrf_token": token}
    await client.post("/login", data=data)


async def save(client: httpx.AsyncClient, phone: str, bio: str) -> httpx.Response:
    token = await afetch_token(client, "/account/profile")
    form = {"phone": phone, "bio": bio, "csrf_token": token}
    return await client.post("/account/profile", data=form)


def events(page: str) -> list[str]:
    return re.findall(r'data-event="([a-z_]+)"', page)


@pytest.mark.asyncio
async def test_phone_is_ciphertext_in_the_file_and_the_bio_is_sanitized(demo: Demo) -> None:
    async with demo.client() as client:
        await log_in(client)
        account = await client.get("/account")
        assert 'href="/account/profile"' in account.text
        empty = await client.get("/account/profile")
        assert empty.status_code == 200
        assert 'id="phone" value=""' in empty.text
        saved = await save(client, PHONE, BIO)
        assert saved.status_code == 200
        assert 'id="saved"' in saved.text
        shown = await client.get("/account/profile")
        assert f'id="phone" value="{PHONE}"' in shown.text
        bio_shown = shown.text.split('id="bio-shown">', 1)[1].split("</div>", 1)[0]
        assert "<b>hello</b>" in bio_shown
        assert '<a href="https://example.com/" rel="noopener noreferrer">site</a>' in bio_shown
        for bad in ("<script", "javascript:", "onerror", "alert("):
            assert bad not in bio_shown
    ((username, phone, bio),) = demo.rows()
    assert username == "demo"
    assert phone is not None
    assert PHONE not in phone
    assert "7946" not in phone
    assert demo.app.runtime.crypto.decrypt_field(
        phone, table=TABLE, row="demo", column="phone"
    ) == (PHONE)
    assert "<script" not in bio
    assert b"7946" not in demo.profiles.read_bytes()  # nowhere in the file, WAL or not


@pytest.mark.asyncio
async def test_a_ciphertext_moved_to_another_row_does_not_show(demo: Demo) -> None:
    async with demo.client() as client:
        await log_in(client)
        assert (await save(client, PHONE, "mine")).status_code == 200
    async with demo.client() as admin:
        await log_in(admin, "admin")
        assert (await save(admin, "", "admin's")).status_code == 200
        with sqlite3.connect(demo.profiles) as db:  # copy demo's phone into admin's row
            db.execute(
                f"UPDATE {TABLE} SET phone = (SELECT phone FROM {TABLE} WHERE username = 'demo') "
                "WHERE username = 'admin'"
            )
        page = await admin.get("/account/profile")
        assert page.status_code == 200
        assert PHONE not in page.text
        assert 'id="note"' in page.text
        assert "cannot be decrypted" in page.text


@pytest.mark.asyncio
async def test_csrf_is_enforced_and_bad_input_is_a_400(demo: Demo) -> None:
    async with demo.client() as client:
        await log_in(client)
        forged = await client.post("/account/profile", data={"phone": PHONE, "bio": "x"})
        assert forged.status_code == 403
        assert forged.json()["reason"] == "token_missing"
        wrong = await client.post(
            "/account/profile", data={"phone": PHONE, "bio": "x", "csrf_token": "forged"}
        )
        assert wrong.status_code == 403
        assert wrong.json()["reason"] == "token_malformed"
        assert demo.rows() == []
        bad_phone = await save(client, "call me <b>", "x")
        assert bad_phone.status_code == 400
        assert "Phone: digits" in bad_phone.text
        long_bio = await save(client, PHONE, "a" * 2001)
        assert long_bio.status_code == 400
        assert "Bio: at most 2000 characters." in long_bio.text
        assert demo.rows() == []
    async with demo.client() as anonymous:
        page = await anonymous.get("/account/profile")
        assert (page.status_code, page.headers["location"]) == (303, "/login")


@pytest.mark.asyncio
async def test_audit_reads_the_stored_trail_with_filters(demo: Demo) -> None:
    async with demo.client() as client:
        await log_in(client, password="a wrong password for the log")
        await log_in(client)
        await save(client, PHONE, "hi")
        page = await client.get("/audit")
        assert page.status_code == 200
        assert "stored, tamper-evident trail" in page.text
        assert 'data-seq="' in page.text  # rows come from the store
        found = events(page.text)
        assert {"authn_login_fail", "authn_login_success", "user_updated"} <= set(found)
        assert set(events((await client.get("/audit?event=user_updated")).text)) == {"user_updated"}
        assert events((await client.get("/audit?event=authz_admin")).text) == []
        assert "user_updated" in events((await client.get("/audit?since=1h")).text)
        later = datetime.fromtimestamp(demo.clock.now() + 60, tz=UTC).isoformat()
        demo.clock.advance(120)
        await save(client, PHONE, "again")
        after = events((await client.get("/audit", params={"since": later})).text)
        assert after == ["user_updated"]
        for query, message in (
            ("event=AUTHN;drop", "event must be an event name"),
            ("event=" + "a" * 65, "event must be an event name"),
            ("since=yesterday", "since must be ISO 8601"),
            ("since=2026-13-45", "since must be ISO 8601"),
            ("since=" + "9" * 41, "since is at most 40 characters"),
            ("since=999999999d", None),  # an age before 1970: from the start, not an error
        ):
            answer = await client.get(f"/audit?{query}")
            if message is None:
                assert answer.status_code == 200
                continue
            assert answer.status_code == 400, query
            assert message in answer.text
    async with demo.client() as admin:  # another account does not see demo's events
        await log_in(admin, "admin")
        assert "user_updated" not in events((await admin.get("/audit")).text)


def verify(url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, KEY_SETTING: SECRET}
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "audit", "verify", "--store", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


@pytest.mark.asyncio
async def test_bastion_audit_verify_passes_then_names_an_edited_row(tmp_path: Path) -> None:
    demo = Demo(tmp_path)
    await demo.app.startup()
    try:
        async with demo.client() as client:
            await log_in(client)
            await save(client, PHONE, "first")
            await save(client, PHONE, "second")
    finally:
        await demo.app.shutdown()  # writes what is queued and seals, as a stopped demo does
    done = verify(demo.audit_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ")
    assert SECRET not in done.stdout + done.stderr
    path = demo.audit_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        (seq,) = db.execute(
            "SELECT seq FROM bastion_audit_events WHERE name = 'user_updated' ORDER BY seq LIMIT 1"
        ).fetchone()
        db.execute(
            "UPDATE bastion_audit_events SET body = replace(body, 'phone,bio', 'bio') "
            "WHERE seq = ?",
            (seq,),
        )
    broken = verify(demo.audit_url)
    assert broken.returncode == 1
    assert re.match(rf"BROKEN at segment \d+, event {seq}: event_mac ", broken.stdout), (
        broken.stdout
    )


def test_the_demo_keeps_its_trail_and_profiles_beside_a_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'bastion-demo.db'}"
    assert audit_url(store) == f"sqlite:///{tmp_path / 'bastion-demo.audit.db'}"
    assert profiles_path(store) == str(tmp_path / "bastion-demo.profiles.db")
    assert audit_url("memory://") is None
    assert profiles_path("memory://") is None
    monkeypatch.setenv(KEY_SETTING, SECRET)
    app = build_demo(store, seed_password=SEED)
    try:
        assert app.audit_policy is not None
        assert app.runtime.keyring == KeyRing.from_secrets([SECRET])
        text = banner(app, "http://127.0.0.1:8000/")
        assert f"audit trail: sqlite:///{tmp_path / 'bastion-demo.audit.db'}" in text
        assert SECRET not in text
    finally:
        app.runtime.close()


@pytest.mark.asyncio
async def test_without_a_stored_trail_the_page_filters_the_recent_events() -> None:
    clock = FrozenClock(time.time())
    app = DemoApp(
        MemoryStore(clock=clock),
        clock=clock,
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
    )
    await app.startup()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE
        ) as client:
            await log_in(client, password="a wrong password for the log")
            await log_in(client)
            page = await client.get("/audit")
            assert "Kept in memory." in page.text
            assert 'data-seq="' not in page.text
            assert {"authn_login_fail", "authn_login_success"} <= set(events(page.text))
            only = events((await client.get("/audit?event=authn_login_fail")).text)
            assert set(only) == {"authn_login_fail"}
            assert "authn_login_fail" in events((await client.get("/audit?since=1h")).text)
            later = datetime.fromtimestamp(clock.now() + 60, tz=UTC).isoformat()
            assert events((await client.get("/audit", params={"since": later})).text) == []
            bad = await client.get("/audit?since=%00")
            assert bad.status_code == 400
            assert "since must be ISO 8601" in bad.text
    finally:
        await app.shutdown()
