"""bastion on Starlette: sessions, CSRF, security headers and a rate limit through protect()."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route as Endpoint

from bastion.asgi import csrf_token, load_session, protect
from bastion.asgi.sessions import login, logout
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.passwords import PasswordHasher
from bastion.stores.ratelimit import open_ratelimit_store

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request

    from bastion.asgi.csrf import ASGIApp


def create_app(
    users: Mapping[str, str],  # user name -> Argon2id hash: the app's own user table
    *,
    store: str = "sqlite:///bastion.db",
    limiter: RateLimiter | None = None,
    hasher: PasswordHasher | None = None,
) -> ASGIApp:
    hasher = hasher or PasswordHasher()
    limiter = limiter or RateLimiter(open_ratelimit_store("memory://"))

    async def home(request: Request) -> JSONResponse:
        session = await load_session(request)  # one awaited read: the loop never blocks
        return JSONResponse({"user": session.user_id, "csrf_token": csrf_token(request)})

    async def sign_in(request: Request) -> JSONResponse:
        form = await request.form()
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        if not (await hasher.averify_and_update(users.get(name), password)).valid:
            return JSONResponse({"error": "invalid_credentials"}, 401)
        await load_session(request)
        login(request, name)  # new session ID and CSRF secret; the old ID is dead
        return JSONResponse({"user": name})

    async def sign_out(request: Request) -> JSONResponse:
        await load_session(request)
        logout(request)  # server data deleted, cookie expired
        return JSONResponse({"user": None})

    app = Starlette(
        routes=[
            Endpoint("/", home),
            Endpoint("/login", sign_in, methods=["POST"]),
            Endpoint("/logout", sign_out, methods=["POST"]),
        ]
    )
    login_limit = Rule("login", "5/minute", path="/login", methods={"POST"})
    return protect(app, store=store, rate_limit={"limiter": limiter, "rules": [login_limit]})
