"""bastion on Starlette: sessions, CSRF, security headers and a login rate limit, one config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import bastion
import bastion.asgi
from bastion.asgi import csrf_token, load_session

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.requests import Request

    from bastion.asgi.types import ASGIApp


def create_app(
    users: Mapping[str, str],  # user name -> Argon2id hash: the app's own user table
    *,
    store: str = "sqlite:///bastion.db",
    keyring: bastion.KeyRing | None = None,
    hasher: bastion.PasswordHasher | None = None,
    clock: bastion.Clock = bastion.system_clock,
) -> ASGIApp:
    hasher = hasher or bastion.PasswordHasher()

    async def home(request: Request) -> JSONResponse:
        session = await load_session(request)  # one awaited read: the loop never blocks
        return JSONResponse({"user": session.user_id, "csrf_token": csrf_token(request)})

    async def sign_in(request: Request) -> JSONResponse:
        form = await request.form()
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        if not (await hasher.averify_and_update(users.get(name), password)).valid:
            return JSONResponse({"error": "invalid_credentials"}, 401)
        session = await load_session(request)
        session.login(name)  # new session ID and CSRF secret; the old ID is dead
        return JSONResponse({"user": name})

    async def sign_out(request: Request) -> JSONResponse:
        session = await load_session(request)
        session.logout()  # server data deleted, cookie expired
        return JSONResponse({"user": None})

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/login", sign_in, methods=["POST"]),
            Route("/logout", sign_out, methods=["POST"]),
        ]
    )
    config = bastion.Bastion(
        store=store,
        keyring=keyring or bastion.KeyRing.generate(),
        clock=clock,
        rate_limits=(bastion.Rule("login", "5/minute", path="/login", methods={"POST"}),),
    )
    return bastion.asgi.protect(app, config)
