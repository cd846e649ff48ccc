"""The examples README embeds (examples/*.py), run as real apps.

Starlette and FastAPI go through ``httpx.ASGITransport``; the Flask example through Flask's test
client and as a real server process on a free loopback port. Each covers login (the session
cookie rotates, the old one is dead), a cross-site POST (403 naming the check), the security
headers and the limits (429 with ``Retry-After``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from examples import fastapi_app, flask_app, starlette_app

from bastion.core.clock import FrozenClock
from bastion.engine.ratelimit import RateLimiter
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import browser_headers, fetch_token, find_token
from servers import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HTTPS = "https://testserver"
FLASK_HTTPS = "https://localhost"
NOW = 1_800_000_000.0
GOOD = "tangerine-ocelot-violin-harbour"
JSON = {"Accept": "application/json"}
CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example", **JSON}
COOKIE = "__Host-session"


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(TEST_ONLY_PROFILE)


def session_cookie(set_cookie: list[str], name: str = COOKIE) -> str | None:
    """The session cookie's value in these ``Set-Cookie`` headers (``""`` when expired)."""
    for header in set_cookie:
        match = re.match(rf"{re.escape(name)}=([^;]*)", header)
        if match is not None:
            return match.group(1)
    return None


def assert_security_headers(headers: Any, *, https: bool = True) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    if https:
        assert headers["Strict-Transport-Security"].startswith("max-age=")
    else:
        assert "Strict-Transport-Security" not in headers


# --- Starlette and FastAPI --------------------------------------------------------------------

ASGI_FACTORIES: dict[str, Callable[..., Any]] = {
    "starlette": starlette_app.create_app,
    "fastapi": fastapi_app.create_app,
}


@pytest.fixture(params=sorted(ASGI_FACTORIES))
def asgi_app(request: pytest.FixtureRequest, tmp_path: Path, hasher: PasswordHasher) -> Any:
    limiter = RateLimiter(MemoryStore(clock=FrozenClock(NOW)))
    users = {"ada": hasher.hash(GOOD)}
    factory = ASGI_FACTORIES[request.param]
    return factory(users, store=f"sqlite:///{tmp_path}/app.db", limiter=limiter, hasher=hasher)


def asgi_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=HTTPS)


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


async def user_with(app: Any, cookie: str) -> str | None:
    """Who the app says is logged in for a request carrying only this session cookie."""
    async with asgi_client(app) as http:
        answer = await http.get("/", headers={"Cookie": f"{COOKIE}={cookie}"})
        user: str | None = answer.json()["user"]
        return user


@pytest.mark.asyncio
async def test_asgi_login_rotates_the_session_and_logout_ends_it(asgi_app: Any) -> None:
    async with asgi_client(asgi_app) as http:
        home = await http.get("/")
        assert home.json()["user"] is None
        before = session_cookie(set_cookies(home))
        assert before
        wrong = await http.post(
            "/login", data={"username": "ada", "password": "nope"}, headers=browser_headers(HTTPS)
        )
        assert wrong.status_code == 401
        logged_in = await http.post(
            "/login", data={"username": "ada", "password": GOOD}, headers=browser_headers(HTTPS)
        )
        assert logged_in.status_code == 200
        assert logged_in.json() == {"user": "ada"}
        after = session_cookie(set_cookies(logged_in))
        assert after
        assert after != before
        assert_security_headers(logged_in.headers)
        assert (await http.get("/")).json()["user"] == "ada"
    assert await user_with(asgi_app, after) == "ada"
    assert await user_with(asgi_app, before) is None  # the pre-login cookie is dead
    async with asgi_client(asgi_app) as http:
        http.cookies.set(COOKIE, after)
        token = (await http.get("/")).json()["csrf_token"]
        out = await http.post("/logout", headers={"X-CSRF-Token": token})  # the token path
        assert out.json() == {"user": None}
        assert session_cookie(set_cookies(out)) == ""
        assert out.headers["Clear-Site-Data"] == '"cookies"'
    assert await user_with(asgi_app, after) is None


@pytest.mark.asyncio
async def test_asgi_cross_site_post_is_refused(asgi_app: Any) -> None:
    async with asgi_client(asgi_app) as http:
        await http.get("/")
        forged = await http.post(
            "/login", data={"username": "ada", "password": GOOD}, headers=CROSS_SITE
        )
        assert forged.status_code == 403
        assert forged.json()["reason"] == "cross_site"
        assert session_cookie(set_cookies(forged)) is None
        assert_security_headers(forged.headers)
        no_token = await http.post("/logout", headers=JSON)  # no browser headers, no token
        assert no_token.status_code == 403
        assert no_token.json()["reason"] == "token_missing"
        assert (await http.get("/")).json()["user"] is None


@pytest.mark.asyncio
async def test_asgi_login_is_rate_limited(asgi_app: Any) -> None:
    async with asgi_client(asgi_app) as http:
        wrong = {"username": "ada", "password": "wrong"}
        for _ in range(5):
            answer = await http.post("/login", data=wrong, headers=browser_headers(HTTPS))
            assert answer.status_code == 401
        limited = await http.post(
            "/login", data={"username": "ada", "password": GOOD}, headers=browser_headers(HTTPS)
        )
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) > 0
        assert '"login";q=5;w=60' in limited.headers["RateLimit-Policy"]
        assert session_cookie(set_cookies(limited)) is None
        assert_security_headers(limited.headers)


@pytest.mark.asyncio
async def test_fastapi_user_dependency(tmp_path: Path, hasher: PasswordHasher) -> None:
    app = fastapi_app.create_app(
        {"ada": hasher.hash(GOOD)}, store=f"sqlite:///{tmp_path}/f.db", hasher=hasher
    )
    async with asgi_client(app) as http:
        anonymous = await http.get("/me")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == "Session"
        await http.post(
            "/login", data={"username": "ada", "password": GOOD}, headers=browser_headers(HTTPS)
        )
        me = await http.get("/me")
        assert me.status_code == 200
        assert me.json() == {"user": "ada"}
        assert me.headers["RateLimit-Policy"] == '"site";q=600;w=60'


# --- Flask: the test client -------------------------------------------------------------------


@pytest.fixture
def flask_example(tmp_path: Path, hasher: PasswordHasher) -> Flask:
    return flask_app.create_app(
        f"sqlite:///{tmp_path}/flask.db", hasher=hasher, clock=FrozenClock(NOW)
    )


def post(client: FlaskClient, path: str, ip: str = "192.0.2.10", **kwargs: Any) -> TestResponse:
    kwargs.setdefault("headers", browser_headers(FLASK_HTTPS))
    environ = {"REMOTE_ADDR": ip}
    return client.post(path, base_url=FLASK_HTTPS, environ_base=environ, **kwargs)


def get(client: FlaskClient, path: str) -> TestResponse:
    return client.get(path, base_url=FLASK_HTTPS)


def flask_cookie(response: TestResponse) -> str | None:
    return session_cookie(response.headers.getlist("Set-Cookie"))


def flask_user(app: Flask, cookie: str | None) -> str | None:
    """Who ``/account`` says is logged in for a request carrying only this session cookie."""
    answer = app.test_client(use_cookies=False).get(
        "/account", base_url=FLASK_HTTPS, headers={"Cookie": f"{COOKIE}={cookie}"}
    )
    user: str | None = answer.get_json().get("user")
    return user


def register(client: FlaskClient, username: str = "ada", password: str = GOOD) -> TestResponse:
    return post(client, "/register", data={"username": username, "password": password})


def test_flask_register_login_logout(flask_example: Flask) -> None:
    client = flask_example.test_client()
    page = get(client, "/")
    assert "Not logged in" in page.text
    anonymous = flask_cookie(page)
    assert anonymous
    weak = register(client, password="password")
    assert weak.status_code == 400
    assert weak.get_json()["error"] == "password_rejected"
    assert weak.get_json()["reasons"]
    created = register(client)
    assert created.status_code == 303
    assert created.headers["Location"] == "/account"
    registered = flask_cookie(created)
    assert registered
    assert registered != anonymous
    assert register(flask_example.test_client()).status_code == 409
    assert get(client, "/account").get_json() == {"user": "ada"}

    other = flask_example.test_client()
    before = flask_cookie(get(other, "/"))
    token = fetch_token(other, f"{FLASK_HTTPS}/")  # the token path: no browser headers
    form = {"username": "ADA", "password": GOOD, "csrf_token": token}
    logged_in = post(other, "/login", data=form, headers={})
    assert logged_in.status_code == 303
    after = flask_cookie(logged_in)
    assert after
    assert after != before
    assert get(other, "/account").get_json() == {"user": "ada"}
    assert flask_user(flask_example, after) == "ada"
    assert flask_user(flask_example, before) is None  # the pre-login cookie is dead

    out = post(other, "/logout")
    assert out.status_code == 303
    assert flask_cookie(out) == ""
    assert out.headers["Clear-Site-Data"] == '"cookies"'
    assert flask_user(flask_example, after) is None


def test_flask_cross_site_post_is_refused(flask_example: Flask) -> None:
    client = flask_example.test_client()
    assert register(client).status_code == 303
    forged = post(client, "/logout", headers=CROSS_SITE)
    assert forged.status_code == 403
    assert forged.get_json()["reason"] == "cross_site"
    assert_security_headers(forged.headers)
    no_token = post(client, "/logout", headers=JSON)
    assert no_token.status_code == 403
    assert no_token.get_json()["reason"] == "token_missing"
    assert get(client, "/account").get_json() == {"user": "ada"}  # still logged in


def test_flask_security_headers(flask_example: Flask) -> None:
    page = get(flask_example.test_client(), "/")
    assert page.status_code == 200
    assert_security_headers(page.headers)
    assert "nonce-" in page.headers["Content-Security-Policy"]
    assert page.headers["RateLimit-Policy"] == '"pages";q=300;w=60'
    assert "Server" not in page.headers


def test_flask_login_throttle(flask_example: Flask) -> None:
    assert register(flask_example.test_client()).status_code == 303
    attacker = flask_example.test_client()
    wrong = {"username": "ada", "password": "not-the-password"}
    statuses = [post(attacker, "/login", data=wrong).status_code for _ in range(6)]
    assert statuses == [401] * 6  # five free failures; the sixth starts the back-off
    throttled = post(attacker, "/login", data={"username": "ada", "password": GOOD})
    assert throttled.status_code == 429  # refused before the password is checked
    assert throttled.get_json() == {"error": "too_many_attempts"}
    assert int(throttled.headers["Retry-After"]) > 0
    assert flask_cookie(throttled) is None
    victim = flask_example.test_client()  # the owner, from another address: not locked out
    good = post(victim, "/login", ip="203.0.113.20", data={"username": "ada", "password": GOOD})
    assert good.status_code == 303


def test_flask_login_rate_limit(flask_example: Flask) -> None:
    client = flask_example.test_client()
    for n in range(10):
        form = {"username": f"user{n}", "password": "wrong-password"}
        assert post(client, "/login", data=form).status_code == 401
    limited = post(client, "/login", data={"username": "user10", "password": "wrong"})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert '"login";q=10;w=60' in limited.headers["RateLimit-Policy"]
    assert limited.get_json(silent=True) is None  # the rate limiter, not the login throttle
    assert_security_headers(limited.headers)


# --- Flask: a real server process -------------------------------------------------------------


@pytest.fixture
def flask_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k not in {"ENV", "BASTION_ENV"}}
    command = [
        sys.executable,
        str(EXAMPLES / "flask_app.py"),
        "--port",
        str(port),
        "--store",
        f"sqlite:///{tmp_path}/server.db",
    ]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30.0
        while True:
            if process.poll() is not None:
                pytest.fail(f"example server exited: {(tmp_path / 'server.log').read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1.0).text == "ok":
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no answer in 30 s: {(tmp_path / 'server.log').read_text()}")
            time.sleep(0.05)  # waiting for the process to listen, not for a time window
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def test_flask_example_as_a_real_server(flask_server: str) -> None:
    with httpx.Client(base_url=flask_server, timeout=10.0) as http:
        assert http.get("/healthz").text == "ok"
        page = http.get("/")
        assert page.status_code == 200
        assert_security_headers(page.headers, https=False)
        anonymous = http.cookies["session"]  # development mode: no __Host-, no Secure
        assert "Secure" not in page.headers["Set-Cookie"]
        form = {"username": "ada", "password": GOOD, "csrf_token": find_token(page.text)}
        created = http.post("/register", data=form)
        assert created.status_code == 303
        assert http.cookies["session"] != anonymous
        assert http.get("/account").json() == {"user": "ada"}
        token = find_token(http.get("/").text)
        assert http.post("/logout", data={"csrf_token": token}).status_code == 303
        assert http.get("/account").status_code == 401
        form["csrf_token"] = find_token(http.get("/").text)
        before = http.cookies["session"]
        logged_in = http.post("/login", data=form)
        assert logged_in.status_code == 303
        assert http.cookies["session"] != before
        assert http.get("/account").json() == {"user": "ada"}
        forged = http.post("/logout", headers=CROSS_SITE)
        assert forged.status_code == 403
        assert forged.json()["reason"] == "cross_site"
