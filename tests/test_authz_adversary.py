"""Adversarial tests of authorization over HTTP: what an attacker (or a careless caller) sends
to real Starlette, FastAPI and Flask apps behind bastion's route table and helpers, and to
the demo. Each test asserts the exact refusal (status and reason).

The users of :mod:`tests.authz_http_support`: ``alice`` admin, ``mona`` moderator, ``uma`` and
``umar`` users; requests carry real signed test tokens verified by BearerMiddleware.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tests.authz_http_support import World
from tests.test_demo_authz import reason as demo_reason

import bastion.asgi
from bastion.asgi.authz import AuthzMiddleware
from bastion.asgi.bearer import BearerMiddleware
from bastion.authz import AuthzPolicy, Policy, Role, RouteRule
from bastion.authz.service import Authorizer
from bastion.config import Bastion
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.tokens.jwk import JWTKey, JWTKeySet
from bastion.engine.authz.record import ChangeKind
from bastion.errors import Forbidden, SelfGrantRefused
from bastion.fastapi import require, require_owner
from bastion.flask.authz import require_owner as flask_require_owner
from bastion.flask.authz import require_permission as flask_require_permission
from bastion.starlette import requires_permission
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink
from bastion.tokens import TokenPolicy
from bastion.wsgi.authz import ShareAuthorizer as WSGIShareAuthorizer
from bastion.wsgi.bearer import BearerMiddleware as WSGIBearerMiddleware
from test_demo import GOOD, client_for, log_in, make_app, post_form

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request

    from bastion.asgi.types import ASGIApp
    from bastion.testing import RedisServer

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
JSON = {"Accept": "application/json"}


def starlette_app() -> Starlette:
    async def text(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.method} {request.url.path}")

    @requires_permission("posts:delete")
    async def decorated(request: Request) -> PlainTextResponse:
        return PlainTextResponse("deleted")

    paths = ["/login", "/health", "/posts", "/posts/{id}", "/admin/users", "/me"]
    routes = [Route(p, text, methods=METHODS) for p in paths]
    routes.append(Route("/decorated", decorated, methods=["POST"]))
    routes.append(Route("/{rest:path}", text, methods=METHODS))  # a catch-all the table must guard
    return Starlette(routes=routes)


def stack(app: ASGIApp, world: World) -> ASGIApp:
    return BearerMiddleware(
        AuthzMiddleware(app, world.authorizer), world.verifier, protected=(), optional=("/*",)
    )


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test")


def error(answer: httpx.Response) -> tuple[int, str]:
    body = answer.json()
    detail = body.get("detail")
    return answer.status_code, (detail["error"] if isinstance(detail, dict) else body["error"])


# -- audit events ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_authz_fail_events_never_carry_the_raw_user_id() -> None:
    """The Auditor hashes ``user`` so that a leaked log cannot be read back with a list of
    user names; the explanation beside it must not spell the id out in clear text."""
    world = World()
    secret_name = "uma"
    async with client(stack(starlette_app(), world)) as c:
        denied = await c.get("/admin/users", headers=world.auth(secret_name))
        owned = await c.post("/posts", headers=world.auth(secret_name))
    assert error(denied) == (403, "no_match")
    assert error(owned) == (403, "not_owner")
    events = [e for e in world.sink.events if e.name == "authz_fail"]
    assert len(events) == 2
    for event in events:
        assert event.user is not None
        assert secret_name not in str(event.user)
        assert all(secret_name not in str(v) for v in event.details.values()), event.details
    assert events[0].details["explanation"] == "denied: nothing grants admin:access to the user"
    assert events[1].details["explanation"] == (
        "denied: posts:write:own needs ownership and the user does not own the resource"
    )


# -- identities the store refuses ------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("user", ["x" * 600, "\ud800"], ids=["600-chars", "lone-surrogate"])
async def test_a_signed_identity_the_store_refuses_is_a_403_never_a_500(user: str) -> None:
    """A token's ``sub`` longer than the store accepts (or with a lone surrogate, which JSON
    can carry) made AuthzInputError escape the middleware: a 500 on every request."""
    world = World()
    async with client(stack(starlette_app(), world)) as c:
        answer = await c.get("/me", headers=world.auth(user))
    assert error(answer) == (403, "authz_bad_input")
    assert answer.headers["cache-control"] == "no-store"
    assert world.fails()[-1]["reason"] == "authz_bad_input"


@pytest.mark.asyncio
async def test_require_owner_with_an_integer_owner_denies_never_500() -> None:
    """A loader returning the row as SQL gave it (``owner_id`` an int) is malformed input:
    the check denies (errors.AuthzInputError's contract), it does not crash the request."""
    world = World()
    app = FastAPI()

    async def load(post_id: str) -> dict[str, Any]:
        return {"type": "posts", "id": post_id, "owner_id": 7, "locked": False}

    @app.put("/api/posts/{post_id}")
    async def edit(post: dict[str, Any] = Depends(require_owner(load, action="update"))) -> str:  # noqa: B008 (FastAPI's idiom)
        return "edited"

    @app.get("/api/me", dependencies=[Depends(require("app:use"))])
    async def me() -> str:
        return "me"

    inner = BearerMiddleware(app, world.verifier, protected=(), optional=("/*",))

    async def with_authorizer(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["bastion.authz"] = world.authorizer
        await inner(scope, receive, send)

    async with client(with_authorizer) as c:
        answer = await c.put("/api/posts/7", headers=world.auth("uma"))
        long_sub = await c.get("/api/me", headers=world.auth("y" * 513))
    assert error(answer) == (403, "authz_bad_input")
    assert error(long_sub) == (403, "authz_bad_input")


def test_flask_require_owner_with_an_integer_owner_denies_never_500() -> None:
    world = World()
    app = flask.Flask(__name__)

    def load(post_id: str) -> dict[str, Any]:
        return {"type": "posts", "id": post_id, "owner_id": 7, "locked": False}

    @app.post("/posts/<post_id>")
    @flask_require_owner(load, action="update")
    def edit(post_id: str, resource: dict[str, Any]) -> str:
        return "edited"

    app.wsgi_app = WSGIBearerMiddleware(  # type: ignore[method-assign]
        WSGIShareAuthorizer(app.wsgi_app, world.authorizer),
        world.verifier,
        protected=(),
        optional=("/*",),
    )
    answer = app.test_client().post("/posts/7", headers=world.auth("uma"))
    assert (answer.status_code, answer.json["error"]) == (403, "authz_bad_input")  # type: ignore[index]


# -- self-granting through a second account --------------------------------------------------------


def escalation_world() -> tuple[Authorizer, RecordingAuditSink]:
    clock = FrozenClock(1_800_000_000.0)
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink, aggregation=None)
    policy = Policy(
        roles=(
            Role("super_admin", ("*",), ("admin",)),
            Role("admin", ("authz:admin", "users:*"), ("user",)),
            Role("user", ("posts:read",)),
        )
    )
    authorizer = Authorizer(
        AuthzPolicy(policy=policy), store=MemoryStore(clock=clock), auditor=auditor, clock=clock
    )
    assert authorizer.assignments is not None
    seed = authorizer.assignments
    seed.set_role_sync("seed", "root", "super_admin", may_administer=True)
    seed.set_role_sync("seed", "alice", "admin", may_administer=True)
    seed.set_role_sync("seed", "puppet", "user", may_administer=True)
    seed.set_role_sync("seed", "bob", "user", may_administer=True)
    sink.clear()
    return authorizer, sink


@pytest.mark.asyncio
async def test_an_admin_cannot_escalate_through_a_second_account() -> None:
    """``alice`` holds authz:admin but not ``*``. She cannot give herself super_admin
    (SelfGrantRefused), so she gives it to ``puppet``, an account she also controls, which
    then gives it to her: two calls through bastion's API and she holds ``*``. An actor may
    only hand out roles and permissions they hold themselves."""
    authz, sink = escalation_world()
    with pytest.raises(SelfGrantRefused):
        await authz.assign_role("alice", "alice", "super_admin")
    with pytest.raises(Forbidden, match="hold themselves"):
        await authz.assign_role("alice", "puppet", "super_admin")
    with pytest.raises(Forbidden, match="hold themselves"):
        await authz.set_role("alice", "puppet", "super_admin")
    with pytest.raises(Forbidden, match="hold themselves"):
        await authz.grant("alice", "puppet", "*")
    with pytest.raises(Forbidden, match="hold themselves"):
        await authz.grant("alice", "puppet", "billing:refund")
    with pytest.raises(Forbidden, match="hold themselves"):  # demoting a superior
        await authz.set_role("alice", "root", "user")
    with pytest.raises(Forbidden, match="hold themselves"):
        await authz.revoke_role("alice", "root", "super_admin")
    with pytest.raises(Forbidden, match="hold themselves"):
        authz.change_sync("alice", "puppet", ChangeKind.ASSIGN_ROLE, ("super_admin",))
    assert (await authz.subject_for("puppet")).roles == frozenset({"user"})
    assert (await authz.subject_for("root")).roles == frozenset({"super_admin"})
    reasons = [e.details.get("reason") for e in sink.events if e.name == "authz_fail"]
    assert reasons == ["self_grant"] + ["beyond_actor"] * 7
    # What she holds herself she may still give, and take from someone no higher than her.
    await authz.assign_role("alice", "bob", "admin")
    await authz.grant("alice", "puppet", "users:delete")
    await authz.set_role("alice", "bob", "user")
    assert (await authz.subject_for("bob")).roles == frozenset({"user"})
    await authz.set_role("root", "alice", "user")  # the super admin can demote her
    assert (await authz.subject_for("alice")).roles == frozenset({"user"})


# -- what holds: the route table -------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/ADMİN/users", (403, "no_route_rule")),  # U+0130 lower-cases to 'i' + a combining dot
        ("/admin\u200b/users", (403, "no_route_rule")),  # a zero-width space is no /admin
        ("/\uff41dmin/users", (403, "no_route_rule")),  # fullwidth: the table does not NFKC
        ("/%61dmin/users", (403, "no_match")),  # an encoded letter decodes to /admin
        ("/admin/users%20", (403, "no_match")),  # a trailing space is still under /admin/*
        ("/Admin/Users/", (403, "no_match")),
        ("/admin%2fusers", (400, "authz_bad_path")),
        ("/admin%2Fusers", (400, "authz_bad_path")),
        ("/admin/users%00", (400, "authz_bad_path")),
        ("/admin/users%3Bx", (400, "authz_bad_path")),
        ("/admin/%252e%252e/x", (400, "authz_bad_path")),
        ("/admin/users\\..", (400, "authz_bad_path")),
    ],
)
async def test_path_tricks_at_the_route_table(path: str, expected: tuple[int, str]) -> None:
    """A user (no admin:access) against ``/admin/*``, with a catch-all route behind the
    table so that any path the table let through would answer 200."""
    world = World()
    async with client(stack(starlette_app(), world)) as c:
        answer = await c.get(path, headers=world.auth("uma"))
    assert error(answer) == expected, path


@pytest.mark.asyncio
@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PATCH", "TRACE", "get", "DELETE"])
async def test_every_method_meets_an_every_method_rule(method: str) -> None:
    world = World()
    async with client(stack(starlette_app(), world)) as c:
        answer = await c.request(method, "/admin/users", headers=world.auth("mona"))
        allowed = await c.request(method, "/admin/users", headers=world.auth("alice"))
    assert answer.status_code == 403
    if method != "HEAD":
        assert answer.json()["error"] == "no_match"
    assert allowed.status_code in {200, 405}  # the app's answer: the table let alice through


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/posts?%5Fmethod=DELETE", {}),
        ("/posts?_method=%44ELETE", {}),
        ("/posts?x=1&_METHOD=put", {}),
        ("/posts", {"x-http-method-override": "GET, DELETE"}),
        ("/posts", {"X-Method-Override": "get"}),  # even a "safer" method is refused
    ],
)
async def test_method_overrides_are_refused(target: str, headers: dict[str, str]) -> None:
    world = World()
    async with client(stack(starlette_app(), world)) as c:
        answer = await c.post(target, headers={**world.auth("mona"), **headers})
    assert error(answer) == (400, "authz_method_override")


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["admin", "moderator", "authz:admin", "*", "admin:access"])
async def test_a_user_named_like_a_role_or_a_permission_has_nothing(name: str) -> None:
    world = World()
    world.assignments().set_role_sync("seed", name, "user", may_administer=True)
    async with client(stack(starlette_app(), world)) as c:
        admin = await c.get("/admin/users", headers=world.auth(name))
        deleted = await c.post("/decorated", headers=world.auth(name))
        me = await c.get("/me", headers=world.auth(name))
    assert error(admin) == (403, "no_match")
    assert error(deleted) == (403, "no_match")
    assert me.text == "GET /me"


# -- what holds: the store's outage is a 503 everywhere --------------------------------------------


@pytest.mark.asyncio
async def test_a_roles_store_outage_is_a_503_under_every_helper(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    server = start_redis_server()
    roles = RedisStore.from_url(server.url, prefix="adv-outage:")
    world = World(roles_store=roles)
    app = FastAPI()

    @app.post("/api/posts", dependencies=[Depends(require("posts:delete"))])
    async def delete() -> str:
        return "deleted"

    inner = BearerMiddleware(app, world.verifier, protected=(), optional=("/*",))

    async def with_authorizer(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["bastion.authz"] = world.authorizer
        await inner(scope, receive, send)

    flask_app = flask.Flask(__name__)

    @flask_app.post("/decorated")
    @flask_require_permission("posts:delete")
    def flask_delete() -> str:
        return "deleted"

    flask_app.wsgi_app = WSGIBearerMiddleware(  # type: ignore[method-assign]
        WSGIShareAuthorizer(flask_app.wsgi_app, world.authorizer),
        world.verifier,
        protected=(),
        optional=("/*",),
    )
    try:
        async with client(with_authorizer) as api, client(stack(starlette_app(), world)) as c:
            assert (await api.post("/api/posts", headers=world.auth("mona"))).text == '"deleted"'
            server.stop()
            fastapi_down = await api.post("/api/posts", headers=world.auth("mona"))
            route_down = await c.get("/me", headers=world.auth("mona"))
            decorator_down = await c.post("/decorated", headers=world.auth("mona"))
        flask_down = flask_app.test_client().post("/decorated", headers=world.auth("mona"))
    finally:
        await roles.aclose()
    for answer in (fastapi_down, route_down, decorator_down):
        assert error(answer) == (503, "authz_store_unavailable")
        assert answer.headers["retry-after"] == "5"
    assert (flask_down.status_code, flask_down.json["error"]) == (503, "authz_store_unavailable")  # type: ignore[index]


# -- what holds: races and stale credentials -------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrent_role_changes_to_one_user_both_land() -> None:
    authz, sink = escalation_world()
    await asyncio.gather(
        authz.assign_role("root", "bob", "admin"),
        authz.grant("alice", "bob", "users:delete"),
        authz.deny("root", "bob", "posts:read"),
    )
    subject = await authz.subject_for("bob")
    assert subject.roles == frozenset({"user", "admin"})
    assert [str(g) for g in subject.grants] == ["users:delete"]
    assert [str(d) for d in subject.denies] == ["posts:read"]
    assert subject.version == 4  # the seed, then three changes: none lost
    versions = sorted(e.details["new_version"] for e in sink.events if e.name == "authz_change")
    assert versions == [2, 3, 4]


@pytest.mark.asyncio
async def test_a_refreshed_access_token_carries_the_new_version_and_the_old_one_is_stale() -> None:
    clock = FrozenClock(1_800_000_000.0)
    runtime = Bastion(
        store=MemoryStore(clock=clock),
        keyring=KeyRing.generate(),
        tokens=TokenPolicy(
            issuer="https://app.example",
            keys=JWTKeySet(JWTKey.generate("EdDSA", kid="k1")),
            optional=("/*",),
        ),
        authz=AuthzPolicy(
            policy=Policy(roles=(Role("user", ("posts:read",)), Role("editor", ("posts:write",)))),
            routes=(RouteRule(path="/posts/*", permission="posts:write"),),
        ),
        headers=None,
        clock=clock,
        environment="development",
    ).build()
    assert runtime.authz.assignments is not None
    await runtime.authz.assignments.set_role("root", "eve", "editor", may_administer=True)

    async def post(request: Request) -> PlainTextResponse:
        return PlainTextResponse("written")

    app = bastion.asgi.protect(
        Starlette(routes=[Route("/posts/{n}", post, methods=["POST"])]), runtime
    )
    pair = await runtime.tokens.issue("eve")
    assert pair.refresh_token is not None
    async with client(app) as c:
        bearer = {"Authorization": f"Bearer {pair.access_token}", **JSON}
        assert (await c.post("/posts/1", headers=bearer)).text == "written"
        await runtime.authz.assignments.set_role("root", "eve", "user", may_administer=True)
        stale = await c.post("/posts/1", headers=bearer)
        refreshed = await runtime.tokens.refresh(pair.refresh_token)
        new = {"Authorization": f"Bearer {refreshed.access_token}", **JSON}
        again = await c.post("/posts/1", headers=new)
    assert error(stale) == (403, "no_match")  # the old token's pv is 1; the store's is 2
    assert runtime.tokens.decode_access(refreshed.access_token)[0]["pv"] == 2
    assert error(again) == (403, "no_match")
    await runtime.aclose()


# -- what holds: the demo ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_demo_admin_cannot_change_their_own_role_under_another_spelling() -> None:
    demo = make_app()
    await demo.startup()
    try:
        async with client_for(demo) as admin, client_for(demo) as moderator:
            await log_in(admin, username="admin")
            for spelling in ("ADMIN", " Admin ", "\uff41\uff44\uff4d\uff49\uff4e"):  # fullwidth
                own = await post_form(
                    admin, "/admin/roles", "/admin/roles", {"username": spelling, "role": "user"}
                )
                assert own.status_code == 403, spelling
                assert "cannot change their own roles" in own.text
            odd = await post_form(
                admin, "/admin/roles", "/admin/roles", {"username": "demo", "role": "Admin"}
            )
            assert odd.status_code == 400
            # A user registered under a role's name holds nothing of it.
            answer = await post_form(
                moderator,
                "/register",
                "/register",
                {"username": "moderator", "password": GOOD},
            )
            assert answer.status_code == 303
            roles = await moderator.get("/admin/roles")
            assert roles.status_code == 403
            assert demo_reason(roles.text) == "no_match"
        assert (await demo.assignments.load("admin")).roles == frozenset({"admin"})
        assert (await demo.assignments.load("demo")).roles == frozenset({"user"})
        assert (await demo.assignments.load("moderator")).roles == frozenset({"user"})
        fails = [e.details.get("reason") for e in demo.events if e.name == "authz_fail"]
        assert "self_grant" in fails  # repeats are aggregated by the demo's auditor
    finally:
        await demo.shutdown()
