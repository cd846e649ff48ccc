"""A safe method with a body is read as the write it can become.

Starlette routes ``HEAD`` to every ``GET`` route, Flask adds ``HEAD`` to every ``GET`` rule, and
both read a body under any method. A view written ``if request.method == "GET": show the form``
``else: handle the form`` then runs its form branch for ``HEAD /login`` with a urlencoded body:
on the demo that logged a client in, and created accounts past the 10/minute signup limit (a
rule for ``POST``). A ``POST`` rule now covers a safe method that carries a body, and the demo's
views handle a form only under ``POST``. CSRF leaves such a request a safe method: no browser
can send it (see bastion.core.csrf), so the token check would stop nobody who could not fetch
a token and post.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute

from bastion.asgi import CSRFMiddleware, RateLimitMiddleware
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.keys import KeyRing
from bastion.core.request import body_methods, has_body
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import afetch_token
from bastion.wsgi import CSRFMiddleware as WSGICSRFMiddleware
from bastion.wsgi import RateLimitMiddleware as WSGIRateLimitMiddleware
from test_demo import SEED, client_for, make_app

if TYPE_CHECKING:
    from starlette.requests import Request

FORM = {"content-type": "application/x-www-form-urlencoded"}
KEYRING = KeyRing.from_secrets(["k" * 43])


def login_rule(limit: str = "3/minute") -> Rule:
    return Rule("login", limit, strategy="fixed_window", path="/login", methods={"POST"})


def test_a_body_is_announced_by_length_or_encoding() -> None:
    assert not has_body(None, None)
    assert not has_body("", None)  # WSGI's CONTENT_LENGTH for no body
    assert not has_body(" 0 ", None)
    assert has_body("12", None)
    assert has_body("twelve", None)  # a length that does not parse is no proof of none
    assert has_body(None, "chunked")
    assert body_methods("head", body=True) == ("HEAD", "POST")
    assert body_methods("GET", body=False) == ("GET",)
    assert body_methods("post", body=True) == ("POST",)


@pytest.mark.asyncio
async def test_demo_head_with_a_form_body_logs_nobody_in() -> None:
    app = make_app()
    await app.startup()
    async with client_for(app) as client:
        body = f"username=demo&password={SEED.replace(' ', '+')}"
        sneaky = await client.request("HEAD", "/login", content=body, headers=FORM)
        assert sneaky.status_code == 200  # the login page's headers, nothing handled
        assert not any("bastion-device" in c for c in sneaky.headers.get_list("set-cookie"))
        account = await client.get("/account")
        assert (account.status_code, account.headers["location"]) == (303, "/login")
    await app.shutdown()


@pytest.mark.asyncio
async def test_demo_head_with_a_form_body_creates_no_account_and_is_rate_limited() -> None:
    app = make_app(FrozenClock(1_800_000_000.0))
    await app.startup()
    async with client_for(app) as client:
        token = await afetch_token(client, "/register")
        statuses = []
        for index in range(12):
            body = f"username=user{index}x&password=a+long+passphrase+7+{index}&csrf_token={token}"
            answer = await client.request("HEAD", "/register", content=body, headers=FORM)
            statuses.append(answer.status_code)
        assert statuses == [200] * 10 + [429] * 2  # the page, shown; the POST rule counts it
        assert await app.users.get("user0x") is None
    await app.shutdown()


def test_flask_head_with_a_body_is_rate_limited_by_a_post_rule() -> None:
    handled: list[str] = []
    app = flask.Flask(__name__)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str:
        if flask.request.method == "GET":
            return "form"
        handled.append(flask.request.method)
        return "handled"

    limiter = RateLimiter(MemoryStore(clock=FrozenClock(1_800_000_000.0)))
    csrf = WSGICSRFMiddleware(
        app.wsgi_app,
        config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KEYRING,
        production=False,
    )
    app.wsgi_app = WSGIRateLimitMiddleware(csrf, limiter, login_rule())  # type: ignore[method-assign]
    client = app.test_client()
    statuses = [client.head("/login", data="u=a&p=b", headers=FORM).status_code for _ in range(5)]
    assert statuses == [200] * 3 + [429] * 2  # the app's own view bug, bounded by the rule
    assert handled == ["HEAD"] * 3
    assert [client.head("/login").status_code for _ in range(5)] == [200] * 5  # no body


@pytest.mark.asyncio
async def test_starlette_get_with_a_body_is_rate_limited_by_a_post_rule() -> None:
    handled: list[str] = []

    async def login(request: Request) -> PlainTextResponse:
        if request.method == "HEAD":
            return PlainTextResponse("form")
        handled.append(request.method)
        await request.body()
        return PlainTextResponse("handled")

    inner = Starlette(routes=[StarletteRoute("/login", login, methods=["GET", "POST"])])
    csrf = CSRFMiddleware(
        inner,
        config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
        keyring=KEYRING,
        production=False,
    )
    limiter = RateLimiter(MemoryStore(clock=FrozenClock(1_800_000_000.0)))
    app = RateLimitMiddleware(csrf, limiter, login_rule())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        statuses = [
            (await client.request("GET", "/login", content="u=a", headers=FORM)).status_code
            for _ in range(5)
        ]
        assert statuses == [200] * 3 + [429] * 2
        assert handled == ["GET"] * 3
        assert (await client.head("/login")).status_code == 200  # no body: not counted
