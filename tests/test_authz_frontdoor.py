"""Authorization through the front door: ``Bastion(authz=...)`` built into a runtime and composed
by ``protect()`` under ASGI (Starlette, FastAPI) and Flask, with sessions and real access tokens.

What the stack adds over the middlewares alone (tests/test_authz_http.py): the authorization
layer sits innermost, after sessions, bearer and CSRF; without routes it only hands the
authorizer to the dependencies and decorators; access tokens carry the permission version
(claim ``pv``); a demotion counts on the next request whether the user comes by session or by
token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import bastion.asgi
import bastion.flask
from bastion import Bastion, CSRFConfig, KeyRing
from bastion.authz import AuthzPolicy, Policy, Role, RouteRule
from bastion.core.authz.subjects import Subject
from bastion.core.clock import FrozenClock
from bastion.core.tokens.jwk import JWTKey, JWTKeySet
from bastion.errors import ConfigurationError
from bastion.fastapi import require
from bastion.flask.authz import require_permission as flask_require_permission
from bastion.starlette import requires_permission
from bastion.stores.memory import MemoryStore
from bastion.tokens import TokenPolicy

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.runtime import Runtime

POLICY = Policy(
    roles=(
        Role("user", permissions=("posts:read",)),
        Role("editor", inherits=("user",), permissions=("posts:write",)),
        Role("admin", inherits=("editor",), permissions=("authz:admin",)),
    )
)
ROUTES = (
    RouteRule(path="/login", public=True),
    RouteRule(path="/posts/*", methods=("GET",), permission="posts:read"),
    RouteRule(path="/posts/*", methods=("POST",), permission="posts:write"),
    RouteRule(path="/me"),
    RouteRule(path="/admin"),  # any signed-in user; the decorator asks for authz:admin
)


def config(*, routes: bool = True) -> Bastion:
    clock = FrozenClock(1_800_000_000.0)
    return Bastion(
        store=MemoryStore(clock=clock),
        keyring=KeyRing.generate(),
        csrf=CSRFConfig(cookieless=("/login",)),
        tokens=TokenPolicy(
            issuer="https://app.example",
            keys=JWTKeySet(JWTKey.generate("EdDSA", kid="k1")),
            optional=("/*",),
        ),
        authz=AuthzPolicy(policy=POLICY, routes=ROUTES if routes else ()),
        headers=None,
        clock=clock,
        environment="development",
    )


def starlette_app(runtime: Runtime) -> Any:
    async def login(request: Request) -> JSONResponse:
        user = request.query_params["user"]
        session = request.scope["session"]
        await bastion.asgi.load_session(request)
        session.login(user)
        await runtime.authz.stamp(session, user)
        pair = await runtime.tokens.issue(user)
        return JSONResponse({"access": pair.access_token})

    async def posts(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.method} posts")

    async def me(request: Request) -> PlainTextResponse:
        return PlainTextResponse("me")

    @requires_permission("authz:admin")
    async def admin(request: Request) -> PlainTextResponse:
        return PlainTextResponse("admin")

    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/posts/{n}", posts, methods=["GET", "POST"]),
            Route("/me", me),
            Route("/admin", admin),
        ]
    )
    return bastion.asgi.protect(app, runtime)


async def promote(runtime: Runtime, user: str, role: str) -> None:
    assert runtime.authz.assignments is not None
    await runtime.authz.assignments.set_role("root", user, role, may_administer=True)


@pytest.mark.asyncio
async def test_the_route_table_through_protect_with_sessions_and_tokens() -> None:
    runtime = config().build()
    app = starlette_app(runtime)
    await promote(runtime, "alice", "editor")
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="https://t") as browser,
        httpx.AsyncClient(transport=transport, base_url="https://t") as api,
    ):
        anonymous = await api.get("/posts/1")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "unauthenticated"
        unlisted = await api.get("/nowhere")
        assert unlisted.status_code == 403
        assert unlisted.json()["error"] == "no_route_rule"

        logged = await browser.post("/login?user=alice")
        assert logged.status_code == 200
        access = logged.json()["access"]
        claims = runtime.tokens.decode_access(access)[0]
        assert claims["pv"] == 1  # the version the role change gave alice
        bearer = {"Authorization": f"Bearer {access}"}

        assert (await browser.get("/posts/1")).text == "GET posts"
        assert (await api.get("/posts/1", headers=bearer)).text == "GET posts"
        assert (await api.post("/posts/1", headers=bearer)).text == "POST posts"
        refused = await api.get("/admin", headers=bearer)
        assert refused.status_code == 403
        assert refused.json()["error"] == "no_match"

        # Demoted: the session and the token still carry version 1; the store has 2.
        await promote(runtime, "alice", "user")
        demoted = await api.post("/posts/1", headers=bearer)
        assert demoted.status_code == 403
        assert demoted.json()["error"] == "no_match"
        assert (await api.get("/posts/1", headers=bearer)).status_code == 200
        after = await browser.get("/posts/1?x=1", headers={"Accept": "application/json"})
        assert after.status_code == 200  # reading is still the user role's
        await runtime.aclose()


@pytest.mark.asyncio
async def test_without_routes_the_stack_only_hands_out_the_authorizer() -> None:
    runtime = config(routes=False).build()
    api = FastAPI()

    @api.get("/write")
    async def write(subject: Annotated[Subject, Depends(require("posts:write"))]) -> str:
        return subject.id

    @api.get("/open")
    async def open_route() -> str:
        return "open"  # no route table: nothing refuses it

    @api.post("/login")
    async def login(user: str) -> dict[str, str]:
        pair = await runtime.tokens.issue(user)
        return {"access": pair.access_token}

    await promote(runtime, "bob", "editor")
    app = bastion.asgi.protect(api, runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t") as c:
        assert (await c.get("/open")).text == '"open"'
        assert (await c.get("/write")).status_code == 401
        token = (await c.post("/login?user=bob")).json()["access"]
        answer = await c.get("/write", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert answer.json() == "bob"
        await promote(runtime, "bob", "user")
        again = await c.get("/write", headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 403
    await runtime.aclose()


def test_flask_protect_runs_the_route_table_and_the_decorators() -> None:
    runtime = config().build()
    assert runtime.authz.assignments is not None
    runtime.authz.assignments.set_role_sync("root", "carol", "editor", may_administer=True)
    app = flask.Flask(__name__)

    @app.post("/login")
    def login() -> str:
        user = flask.request.args["user"]
        bastion.flask.session.login(user)
        runtime.authz.stamp_sync(bastion.flask.session, user)
        return "ok"

    @app.route("/posts/<n>", methods=["GET", "POST"])
    @flask_require_permission("posts:write")
    def posts(n: str) -> str:
        return f"{flask.request.method} {n}"

    bastion.flask.protect(app, runtime)
    client = app.test_client()
    assert client.get("/posts/1").status_code == 401
    assert client.get("/elsewhere").status_code == 403
    assert client.post("/login?user=carol").status_code == 200
    # GET: the route table's posts:read, then the decorator's posts:write
    assert client.get("/posts/1").get_data(as_text=True) == "GET 1"
    runtime.authz.assignments.set_role_sync("root", "carol", "user", may_administer=True)
    demoted = client.get("/posts/1")
    assert demoted.status_code == 403
    assert b"no_match" in demoted.get_data()
    runtime.close()


def test_roles_in_the_store_need_a_store() -> None:
    with pytest.raises(ConfigurationError, match="roles='store'") as raised:
        Bastion(authz=AuthzPolicy(policy=POLICY))
    assert raised.value.setting == "store"
    with pytest.raises(ConfigurationError, match="must be an AuthzPolicy"):
        Bastion(store="memory://", authz=POLICY)  # type: ignore[arg-type]
    found = Bastion(store="memory://", authz=AuthzPolicy(policy=POLICY, roles=lambda _u: {}))
    assert found.authz is not None


def test_from_env_reads_the_policy_file(tmp_path: Any) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"roles": {"user": {"permissions": ["posts:read"]}}}', encoding="utf-8")
    config = Bastion.from_env({"BASTION_STORE": "memory://", "BASTION_AUTHZ_POLICY": str(path)})
    assert config.authz is not None
    runtime = config.build()
    assert runtime.authz.engine.allows(
        Subject(id="u", roles=frozenset({"user"})), None, "posts:read"
    )
    runtime.close()
    path.write_text('{"roles": {"user": {"permisions": []}}}', encoding="utf-8")
    broken = Bastion.from_env({"BASTION_STORE": "memory://", "BASTION_AUTHZ_POLICY": str(path)})
    with pytest.raises(ConfigurationError, match="line 1"):
        _ = broken.build().authz


@pytest.mark.asyncio
async def test_a_refreshed_access_token_carries_the_current_version() -> None:
    runtime = config().build()
    await promote(runtime, "erin", "editor")
    pair = await runtime.tokens.issue("erin")
    assert runtime.tokens.decode_access(pair.access_token)[0]["pv"] == 1
    await promote(runtime, "erin", "user")
    assert pair.refresh_token is not None
    fresh = await runtime.tokens.refresh(pair.refresh_token)
    assert runtime.tokens.decode_access(fresh.access_token)[0]["pv"] == 2
    with pytest.raises(ConfigurationError, match="'pv'"):
        await runtime.tokens.issue("erin", claims={"pv": 99})
    await runtime.aclose()
