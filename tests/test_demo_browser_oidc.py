"""Sign in with the local provider in a real browser: Chromium (Playwright) clicks "Sign in with
the local provider" on the demo's login page, signs in on the provider's own login and consent
pages, and lands on ``/account`` with a new session cookie.

The demo runs under uvicorn on a free 127.0.0.1 port with a real :class:`LocalProvider` (Node,
another 127.0.0.1 port) registered for that port's callback. Chromium is set up as in
tests/test_demo_browser.py (its switches, and every non-loopback connection recorded and
refused). Without Chromium, Playwright or the pinned Node these tests skip locally and fail
under ``CI=true``. Screenshots go to ``$BASTION_TEST_ARTIFACTS/demo`` (else the test's
temporary directory).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from bastion.core.clock import FrozenClock
from bastion.core.sessions import DEVELOPMENT_COOKIE_NAME
from bastion.demo.app import DemoApp
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from servers import free_port
from test_demo_browser import (  # noqa: F401 (fixtures)
    SEED,
    OutsideRecorder,
    browser,
    shots,
)
from test_demo_oidc import ALICE, start_provider

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Browser, BrowserContext, Page

    from bastion.demo.local_provider import LocalProvider

PROVIDER_FONT = "fonts.googleapis.com:443"
"""The one host outside loopback that Chromium asks for here: oidc-provider's stock login and
consent pages ``@import`` a Google web font. The recorder refuses it (nothing leaves the
machine); the demo's own pages ask for nothing outside."""


@pytest.fixture(scope="module")
def outside() -> Iterator[OutsideRecorder]:
    """tests/test_demo_browser.py's recorder, its listener shut down before the close, so the
    accepting thread wakes at once instead of after the join's 5 s timeout."""
    recorder = OutsideRecorder()
    try:
        yield recorder
    finally:
        with contextlib.suppress(OSError):
            recorder._listener.shutdown(socket.SHUT_RDWR)
        recorder.close()


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def local(port: int) -> Iterator[LocalProvider]:
    provider = start_provider([f"http://127.0.0.1:{port}/auth/local/callback"])
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def served(local: LocalProvider, port: int) -> Iterator[tuple[DemoApp, str]]:
    """A fresh demo (memory store, frozen clock) with the local provider, under uvicorn."""
    import uvicorn  # noqa: PLC0415

    clock = FrozenClock(time.time())
    app = DemoApp(
        MemoryStore(clock=clock),
        clock=clock,
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
        oidc_provider=local.provider(),
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", server_header=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)  # polling a starting server
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def session_cookie(context: BrowserContext) -> str | None:
    for cookie in context.cookies():
        if cookie["name"] == DEVELOPMENT_COOKIE_NAME:
            return cookie["value"]
    return None


def to_provider(page: Page, base: str, local: LocalProvider) -> None:
    page.goto(base + "/login")
    assert page.inner_text("#oidc-local") == "Sign in with the local provider"
    with page.expect_navigation():
        page.click("#oidc-local")
    assert page.url.startswith(local.issuer + "/interaction/"), page.url
    assert page.locator("input[name=login]").count() == 1


def test_sign_in_through_the_providers_pages(
    browser: Browser,  # noqa: F811 (the fixture imported above)
    served: tuple[DemoApp, str],
    local: LocalProvider,
    outside: OutsideRecorder,
    shots: Path,  # noqa: F811
) -> None:
    app, base = served
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(base + "/login")
        page.screenshot(path=str(shots / "login-oidc.png"), full_page=True)
        before = session_cookie(context)
        to_provider(page, base, local)
        page.screenshot(path=str(shots / "provider-login.png"), full_page=True)
        page.fill("input[name=login]", ALICE.username)
        page.fill("input[name=password]", ALICE.password)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.locator("input[name=prompt][value=consent]").count() == 1  # "Authorize"
        page.screenshot(path=str(shots / "provider-consent.png"), full_page=True)
        with page.expect_navigation(url=base + "/account"):
            page.click("button[type=submit]")
        assert page.url == base + "/account"
        assert page.inner_text("#who") == "alice"
        after = session_cookie(context)
        assert after is not None
        assert after != before  # login(): a new session ID
        page.screenshot(path=str(shots / "account-oidc.png"), full_page=True)
    finally:
        context.close()
    assert [e.name for e in app.events if e.name.startswith("authn_login")] == [
        "authn_login_success"
    ]
    assert set(outside.foreign()) <= {PROVIDER_FONT}


def test_cancel_at_the_provider_is_the_demos_error_page(
    browser: Browser,  # noqa: F811
    served: tuple[DemoApp, str],
    local: LocalProvider,
    shots: Path,  # noqa: F811
) -> None:
    app, base = served
    context = browser.new_context()
    try:
        page = context.new_page()
        to_provider(page, base, local)
        with page.expect_response(
            lambda r: r.url.startswith(base + "/auth/local/callback")
        ) as back:
            page.click("text=[ Cancel ]")
        assert back.value.status == 400
        page.wait_for_load_state()
        assert page.inner_text("#error-message") == "The provider did not complete the sign-in."
        assert page.locator("#who-anonymous").count() == 1
        page.screenshot(path=str(shots / "provider-cancel.png"), full_page=True)
    finally:
        context.close()
    fails = [e for e in app.events if e.name == "authn_login_fail"]
    assert [dict(e.details or {})["reason"] for e in fails] == ["provider_error"]


def test_a_wrong_password_stays_at_the_provider(
    browser: Browser,  # noqa: F811
    served: tuple[DemoApp, str],
    local: LocalProvider,
) -> None:
    app, base = served
    context = browser.new_context()
    try:
        page = context.new_page()
        to_provider(page, base, local)
        page.fill("input[name=login]", ALICE.username)
        page.fill("input[name=password]", "not the password")
        with page.expect_navigation() as navigation:
            page.click("button[type=submit]")
        response = navigation.value
        assert response is not None
        assert response.status == 401
        assert page.inner_text(".error") == "invalid login or password"
        assert page.url.startswith(local.issuer)
    finally:
        context.close()
    assert not [e for e in app.events if e.name.startswith("authn_login")]
