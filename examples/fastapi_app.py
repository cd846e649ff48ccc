"""bastion on FastAPI: one config, protect(), and the session, user and rate-limit dependencies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Form, HTTPException, Request

import bastion
import bastion.asgi
from bastion.asgi import csrf_token
from bastion.integrations.ratelimit import RateLimit
from bastion.integrations.sessions import SessionDep, UserIdDep  # noqa: TC001 (read at run time)

if TYPE_CHECKING:
    from collections.abc import Mapping

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
    config = bastion.Bastion(
        store=store,
        keyring=keyring or bastion.KeyRing.generate(),
        clock=clock,
        rate_limits=(bastion.Rule("site", "600/minute"),),
    )
    runtime = config.build()  # shared by protect() and the dependencies below
    login_limit = RateLimit(runtime.limiter, "5/minute", name="login")  # 429 with Retry-After
    api = FastAPI()

    @api.get("/")
    async def home(request: Request, session: SessionDep) -> dict[str, str | None]:
        return {"user": session.user_id, "csrf_token": csrf_token(request)}

    @api.post("/login", dependencies=[Depends(login_limit)])
    async def sign_in(
        session: SessionDep,  # loaded before the handler runs
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
    ) -> dict[str, str]:
        if not (await hasher.averify_and_update(users.get(username), password)).valid:
            raise HTTPException(401, "invalid credentials")
        session.login(username)  # new session ID and CSRF secret; the old ID is dead
        return {"user": username}

    @api.get("/me")
    async def me(user_id: UserIdDep) -> dict[str, str]:  # 401 unless logged in
        return {"user": user_id}

    @api.post("/logout")
    async def sign_out(session: SessionDep) -> dict[str, None]:
        session.logout()  # server data deleted, cookie expired
        return {"user": None}

    return bastion.asgi.protect(api, runtime)
