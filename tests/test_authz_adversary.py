"""Adversarial tests of authorization over HTTP: what an attacker (or a careless caller) sends
to real Starlette, FastAPI and Flask apps behind bastion's route table and helpers, and to
the demo. Each test asserts the exact refusal (status and reason).

The users of :mod:`tests.authz_http_support`: ``alice`` admin, ``mona`` moderator, ``uma`` and
``umar`` users; requests carry real signed test tokens verified by BearerMiddleware.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tests.authz_http_support import World

from bastion.asgi.authz import AuthzMiddleware
from bastion.asgi.bearer import BearerMiddleware
from bastion.authz import AuthzPolicy, Policy, Role
from bastion.authz.service import Authorizer
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.engine.authz.record import ChangeKind
from bastion.errors import Forbidden, SelfGrantRefused
from bastion.fastapi import require, require_owner
from bastion.flask.authz import require_owner as flask_require_owner
from bastion.starlette import requires_permission
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi.authz import ShareAuthorizer as WSGIShareAuthorizer
from bastion.wsgi.bearer import BearerMiddleware as WSGIBearerMiddleware

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.asgi.types import ASGIApp

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


# -- audit events ------------------------------------------------------------------------------


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


# -- identities the store refuses ----------------------------------------------------------------


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


# -- self-granting through a second account ------------------------------------------------------


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
