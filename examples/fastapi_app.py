"""bastion on FastAPI: protect() plus the session, user and rate-limit dependencies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Form, HTTPException, Request

from bastion.asgi import csrf_token, protect
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.integrations.ratelimit import RateLimit
from bastion.integrations.sessions import SessionDep, UserIdDep  # noqa: TC001 (read at run time)
from bastion.passwords import PasswordHasher
from bastion.stores import open_store

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.asgi.csrf import ASGIApp


def create_app(
    users: Mapping[str, str],  # user name -> Argon2id hash: the app's own user table
    *,
    store: str = "sqlite:///bastion.db",
    limiter: RateLimiter | None = None,
    hasher: PasswordHasher | None = None,
) -> ASGIApp:
    hasher = hasher or PasswordHasher()
    limiter = limiter or RateLimiter(open_store("memory://"))
    login_limit = RateLimit(limiter, "5/minute", name="login")  # 429 with Retry-After
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

    return protect(
        api, store=store, rate_limit={"limiter": limiter, "rules": [Rule("site", "600/minute")]}
    )
