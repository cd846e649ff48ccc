"""Authorization over HTTP: the route-table middlewares and the framework helpers on real
Starlette, FastAPI, Flask, Litestar and Quart apps, with the issue's HTTP attack cases.

Users and roles live in a real MemoryStore (bastion's Assignments); the user of a request is
the principal of a real signed test token verified by BearerMiddleware. Path attacks go over a
real socket to uvicorn, which decodes the path as production servers do (the test clients'
URL parsers would merge the dot segments before the request is sent).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Annotated, Any

import flask
import httpx
import pytest
import pytest_asyncio
import quart
from fastapi import Depends, FastAPI
from litestar import Litestar, Request, get
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tests.authz_http_support import POLICY, POSTS, ROUTES, World
from tests.bearer_support import handshake
from tests.servers import uvicorn_thread

import bastion.flask as bastion_flask
from bastion.asgi.authz import AuthzMiddleware
from bastion.asgi.bearer import BearerMiddleware
from bastion.asgi.sessions import SessionMiddleware
from bastion.authz.policy import AuthzPolicy
from bastion.authz.service import Authorizer
from bastion.config import Bastion
from bastion.core.authz.subjects import Subject  # noqa: TC001 (FastAPI reads the annotation at run time)
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.errors import AuthzInputError, ConfigurationError
from bastion.fastapi import require, require_owner
from bastion.flask.authz import init_authz
from bastion.flask.authz import require_owner as flask_require_owner
from bastion.flask.authz import require_permission as flask_require_permission
from bastion.starlette import requires_permission
from bastion.stores.redis import RedisStore
from bastion.wsgi.authz import AuthzMiddleware as WSGIAuthzMiddleware
from bastion.wsgi.bearer import BearerMiddleware as WSGIBearerMiddleware

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from starlette.requests import Request as StarletteRequest

    from bastion.asgi.types import ASGIApp
    from bastion.testing import RedisServer


@pytest.fixture
def world() -> World:
    return World()


def asgi_stack(app: ASGIApp, world: World) -> ASGIApp:
    """The order a stack uses: bearer outside, the route table inside it."""
    return BearerMiddleware(
        AuthzMiddleware(app, world.authorizer), world.verifier, protected=(), optional=("/*",)
    )


# -- Starlette -------------------------------------------------------------------------------


def starlette_app(world: World) -> Starlette:
    async def text(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse(f"{request.method} {request.url.path}")

    @requires_permission("posts:delete")
    async def decorated(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse("deleted")

    paths = ["/login", "/health", "/posts", "/posts/{id}", "/admin/users", "/me", "/elsewhere"]
    routes = [Route(p, text, methods=["GET", "POST", "PUT"]) for p in paths]
    routes.append(Route("/decorated", decorated, methods=["POST"]))
    return Starlette(routes=routes)


def http(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app.test")


@pytest_asyncio.fixture
async def starlette_client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with http(asgi_stack(starlette_app(world), world)) as client:
        yield client


@pytest.mark.asyncio
async def test_starlette_allowed_denied_and_unauthenticated(
    world: World, starlette_client: httpx.AsyncClient
) -> None:
    client = starlette_client
    assert (await client.get("/posts", headers=world.auth("uma"))).text == "GET /posts"
    assert (await client.post("/posts", headers=world.auth("mona"))).status_code == 200
    denied = await client.post("/posts", headers=world.auth("uma"))  # posts:write:own, no resource
    assert denied.status_code == 403
    assert denied.json()["error"] == "not_owner"
    assert denied.headers["cache-control"] == "no-store"
    admin = await client.get("/admin/users", headers=world.auth("mona"))
    assert (admin.status_code, admin.json()["error"]) == (403, "no_match")
    assert (await client.get("/admin/users", headers=world.auth("alice"))).status_code == 200
    anonymous = await client.get("/me", headers={"Accept": "application/json"})
    assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthenticated")
    assert (await client.get("/login")).text == "GET /login"  # public: nobody signed in
    assert (await client.get("/health")).status_code == 200
    fails = world.fails()
    assert [f["reason"] for f in fails] == ["not_owner", "no_match", "unauthenticated"]
    assert "admin:access" in str(fails[1]["explanation"])


@pytest.mark.asyncio
async def test_starlette_route_table_fails_closed(
    world: World, starlette_client: httpx.AsyncClient
) -> None:
    refused = await starlette_client.get(
        "/elsewhere", headers=world.auth("alice")
    )  # no rule at all
    assert (refused.status_code, refused.json()["error"]) == (403, "no_route_rule")
    public_post = await starlette_client.post("/health", headers={"Accept": "application/json"})
    assert (public_post.status_code, public_post.json()["error"]) == (403, "no_route_rule")
    assert world.fails()[-1]["reason"] == "no_route_rule"


@pytest.mark.asyncio
async def test_starlette_head_is_checked_as_get_and_overrides_are_refused(
    world: World, starlette_client: httpx.AsyncClient
) -> None:
    client = starlette_client
    head = await client.head("/admin/users", headers=world.auth("mona"))
    assert head.status_code == 403
    assert (await client.head("/admin/users", headers=world.auth("alice"))).status_code == 200
    for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        sent = {**world.auth("alice"), header: "DELETE"}
        refused = await client.post("/posts", headers=sent)
        assert (refused.status_code, refused.json()["error"]) == (400, "authz_method_override")
    query = await client.post("/posts?_method=DELETE", headers=world.auth("alice"))
    assert (query.status_code, query.json()["error"]) == (400, "authz_method_override")


@pytest.mark.asyncio
async def test_starlette_decorator(world: World, starlette_client: httpx.AsyncClient) -> None:
    assert (await starlette_client.post("/decorated", headers=world.auth("mona"))).text == "deleted"
    denied = await starlette_client.post("/decorated", headers=world.auth("uma"))
    assert (denied.status_code, denied.json()["error"]) == (403, "no_match")


@pytest.mark.asyncio
async def test_stale_role_after_demotion(world: World, starlette_client: httpx.AsyncClient) -> None:
    assert (await starlette_client.post("/posts", headers=world.auth("mona"))).status_code == 200
    world.set_role("mona", "user")  # demoted between two requests; her token is unchanged
    denied = await starlette_client.post("/posts", headers=world.auth("mona"))
    assert (denied.status_code, denied.json()["error"]) == (403, "not_owner")


@pytest.mark.asyncio
async def test_a_decorator_without_an_authorizer_is_a_configuration_error() -> None:
    @requires_permission("posts:read")
    async def view(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse("never")

    app = Starlette(routes=[Route("/x", view)])
    async with http(app) as client:
        with pytest.raises(ConfigurationError, match="no authorizer"):
            await client.get("/x")


# -- path attacks over a real server ----------------------------------------------------------


def raw_request(port: int, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
    lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize(
    "target",
    [
        "/posts/../admin/users",
        "/posts/%2e%2e/admin/users",
        "/posts/%2E%2E/admin/users",
        "/posts%2F..%2Fadmin/users",
        "/posts/x%2Fy",
        "//admin/users",
        "/posts//x",
        "/posts/./x",
        "/admin;x=1/users",
        "/posts/x;jsessionid=1",
        "/posts/x%5C..%5Cadmin",
        "/posts/%252e%252e/admin",
    ],
)
def test_paths_not_in_normal_form_get_400(world: World, target: str) -> None:
    with uvicorn_thread(asgi_stack(starlette_app(world), world)) as port:
        status, body = raw_request(port, target, world.auth("uma"))
    assert status == 400, target
    assert b'"error": "authz_bad_path"' in body


def test_case_and_trailing_slash_variants_meet_the_rule(world: World) -> None:
    with uvicorn_thread(asgi_stack(starlette_app(world), world)) as port:
        for target in ("/ADMIN/users", "/Admin/Users/", "/admin/users/"):
            status, body = raw_request(port, target, world.auth("mona"))
            assert status == 403, target
            assert b'"error": "no_match"' in body
        status, body = raw_request(port, "/LOGIN", {"Accept": "application/json"})
        assert status == 403  # not the public path as written, and no other rule
        assert b'"error": "no_route_rule"' in body
        status, body = raw_request(port, "/Me/", {"Accept": "application/json"})
        assert status == 401  # the trailing slash and case still meet the signed-in rule
        assert b'"error": "unauthenticated"' in body


# -- FastAPI ----------------------------------------------------------------------------------


async def load_post(post_id: str) -> dict[str, Any] | None:
    return POSTS.get(post_id)  # the app's own row: the owner as stored


def load_post_sync(post_id: str) -> dict[str, Any] | None:
    return POSTS.get(post_id)


def fastapi_app(world: World) -> FastAPI:
    app = FastAPI()

    @app.post("/api/posts", dependencies=[Depends(require("posts:delete"))])
    async def delete() -> dict[str, str]:
        return {"done": "yes"}

    explicit = require("app:use", authorizer=world.authorizer)  # no authorizer in the scope needed

    @app.get("/api/me")
    async def me(subject: Subject = Depends(explicit)) -> dict[str, Any]:  # noqa: B008 (a local dependency: Annotated would be read as a string in module globals)
        return {"id": subject.id, "roles": sorted(subject.roles)}

    @app.put("/api/posts/{post_id}")
    async def edit(
        post: Annotated[dict[str, Any], Depends(require_owner(load_post, action="update"))],
        body: dict[str, Any],
    ) -> dict[str, str]:
        return {"edited": str(post["id"])}

    return app


@pytest_asyncio.fixture
async def fastapi_client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    app = fastapi_app(world)
    stack = BearerMiddleware(app, world.verifier, protected=(), optional=("/*",))

    async def with_authorizer(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["bastion.authz"] = world.authorizer  # as the stack does
        await stack(scope, receive, send)

    async with http(with_authorizer) as client:
        yield client


@pytest.mark.asyncio
async def test_fastapi_require(world: World, fastapi_client: httpx.AsyncClient) -> None:
    client = fastapi_client
    assert (await client.post("/api/posts", headers=world.auth("mona"))).json() == {"done": "yes"}
    denied = await client.post("/api/posts", headers=world.auth("uma"))
    assert denied.status_code == 403
    assert denied.json()["detail"]["error"] == "no_match"
    anonymous = await client.post("/api/posts")
    assert (anonymous.status_code, anonymous.json()["detail"]["error"]) == (401, "unauthenticated")
    me = (await client.get("/api/me", headers=world.auth("uma"))).json()
    assert me == {"id": "uma", "roles": ["user"]}


@pytest.mark.asyncio
async def test_fastapi_owner_from_the_loader_never_from_the_body(
    world: World, fastapi_client: httpx.AsyncClient
) -> None:
    client = fastapi_client
    mine = await client.put("/api/posts/p-uma", headers=world.auth("uma"), json={"x": 1})
    assert mine.json() == {"edited": "p-uma"}
    forged = {"owner_id": "umar", "owner": "umar", "locked": False}
    theirs = await client.put("/api/posts/p-uma", headers=world.auth("umar"), json=forged)
    assert (theirs.status_code, theirs.json()["detail"]["error"]) == (403, "not_owner")
    locked = await client.put("/api/posts/p-locked", headers=world.auth("uma"), json=forged)
    assert (locked.status_code, locked.json()["detail"]["error"]) == (403, "denied_by_rule")
    missing = await client.put("/api/posts/nope", headers=world.auth("uma"), json={})
    assert missing.status_code == 404
    assert world.fails()[0]["explanation"] == (
        "denied: posts:update:own needs ownership and the user does not own posts:p-uma"
    )


# -- Flask ------------------------------------------------------------------------------------


def flask_app(world: World) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.route("/posts", methods=["GET", "POST"])
    def posts() -> str:
        return f"{flask.request.method} posts"

    @app.post("/decorated")
    @flask_require_permission("posts:delete")
    def decorated() -> str:
        return "deleted"

    @app.post("/posts/<post_id>")
    @flask_require_owner(load_post_sync, action="update")
    def edit(post_id: str, resource: dict[str, Any]) -> str:
        return f"edited {resource['id']}"

    @app.get("/elsewhere")
    def elsewhere() -> str:
        return "never"

    app.wsgi_app = WSGIBearerMiddleware(  # type: ignore[method-assign]
        WSGIAuthzMiddleware(app.wsgi_app, world.authorizer),
        world.verifier,
        protected=(),
        optional=("/*",),
    )
    return app


def test_flask_middleware_and_decorators(world: World) -> None:
    client = flask_app(world).test_client()
    assert client.get("/posts", headers=world.auth("uma")).text == "GET posts"
    denied = client.post("/posts", headers=world.auth("uma"))
    assert (denied.status_code, denied.json["error"]) == (403, "not_owner")  # type: ignore[index]
    assert client.post("/decorated", headers=world.auth("mona")).text == "deleted"
    refused = client.post("/decorated", headers=world.auth("uma"))
    assert (refused.status_code, refused.json["error"]) == (403, "no_match")  # type: ignore[index]
    assert client.post("/posts/p-uma", headers=world.auth("uma")).text == "edited p-uma"
    forged = client.post("/posts/p-uma", headers=world.auth("umar"), data={"owner_id": "umar"})
    assert (forged.status_code, forged.json["error"]) == (403, "not_owner")  # type: ignore[index]
    nobody = client.get("/posts", headers={"Accept": "application/json"})
    assert (nobody.status_code, nobody.json["error"]) == (401, "unauthenticated")  # type: ignore[index]
    closed = client.get("/elsewhere", headers=world.auth("alice"))
    assert (closed.status_code, closed.json["error"]) == (403, "no_route_rule")  # type: ignore[index]
    head = client.head("/admin/users", headers=world.auth("mona"))
    assert head.status_code == 403
    override = client.post("/posts", headers={**world.auth("alice"), "X-HTTP-Method": "PUT"})
    assert override.status_code == 400
    assert override.json["error"] == "authz_method_override"  # type: ignore[index]


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        ("/posts/../admin/users", "/posts/../admin/users"),
        ("/posts/../admin/users", "/posts/%2e%2e/admin/users"),
        ("/posts/a/b", "/posts/a%2Fb"),
        ("/admin;x/users", "/admin;x/users"),
    ],
)
def test_flask_paths_not_in_normal_form(world: World, path: str, uri: str) -> None:
    client = flask_app(world).test_client()
    environ = {"REQUEST_URI": uri, "RAW_URI": uri}
    response = client.get(path, headers=world.auth("alice"), environ_overrides=environ)
    assert response.status_code == 400
    assert response.json["error"] == "authz_bad_path"  # type: ignore[index]


# -- Litestar and Quart, through the ASGI scope ----------------------------------------------


@pytest.mark.asyncio
async def test_litestar(world: World) -> None:
    @get("/posts")
    async def posts() -> str:
        return "posts"

    @get("/decorated")
    @requires_permission("posts:delete")
    async def decorated(request: Request[Any, Any, Any]) -> str:
        return "deleted"

    app = Litestar([posts, decorated])
    async with http(asgi_stack(app, world)) as client:
        assert (await client.get("/posts", headers=world.auth("uma"))).text == "posts"
        denied = await client.post("/posts", headers=world.auth("uma"))
        assert (denied.status_code, denied.json()["error"]) == (403, "not_owner")
        assert (await client.get("/decorated", headers=world.auth("mona"))).text == "deleted"
        refused = await client.get("/decorated", headers=world.auth("uma"))
        assert (refused.status_code, refused.json()["error"]) == (403, "no_match")


@pytest.mark.asyncio
async def test_quart(world: World) -> None:
    app = quart.Quart(__name__)

    @app.get("/posts")
    async def posts() -> str:
        return "posts"

    @app.get("/decorated")
    @requires_permission("posts:delete")
    async def decorated() -> str:
        return "deleted"

    app.asgi_app = asgi_stack(app.asgi_app, world)  # type: ignore[assignment,method-assign]
    client = app.test_client()
    assert await (await client.get("/posts", headers=world.auth("uma"))).get_data() == b"posts"
    closed = await client.get("/elsewhere", headers=world.auth("uma"))
    assert (closed.status_code, (await closed.get_json())["error"]) == (403, "no_route_rule")
    ok = await client.get("/decorated", headers=world.auth("mona"))
    assert await ok.get_data() == b"deleted"
    refused = await client.get("/decorated", headers=world.auth("uma"))
    assert (refused.status_code, (await refused.get_json())["error"]) == (403, "no_match")


# -- the user from bastion's session ---------------------------------------------------------


@pytest.mark.asyncio
async def test_the_user_comes_from_the_session_without_a_token(world: World) -> None:
    async def login(request: StarletteRequest) -> PlainTextResponse:
        user = request.query_params["user"]
        request.session.login(user)
        await world.authorizer.stamp(request.session, user)
        return PlainTextResponse(f"signed in at {request.session['_authz_v']}")

    async def future(request: StarletteRequest) -> PlainTextResponse:
        request.session["_authz_v"] = 999  # newer than the store: the store lost writes
        return PlainTextResponse("ok")

    async def text(request: StarletteRequest) -> PlainTextResponse:
        return PlainTextResponse(f"{request.method} {request.url.path}")

    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/posts/future", future, methods=["POST"]),
            Route("/me", text),
            Route("/admin/users", text),
        ]
    )
    stack = SessionMiddleware(
        AuthzMiddleware(app, world.authorizer),
        store=world.store,
        keyring=KeyRing.generate(),
        auditor=world.auditor,
        clock=world.clock,
        production=False,
    )
    json = {"Accept": "application/json"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=stack), base_url="https://app.test"
    ) as client:
        anonymous = await client.get("/me", headers=json)
        assert (anonymous.status_code, anonymous.json()["error"]) == (401, "unauthenticated")
        assert (await client.post("/login?user=uma")).text == "signed in at 1"
        assert (await client.get("/me")).text == "GET /me"
        denied = await client.get("/admin/users", headers=json)
        assert (denied.status_code, denied.json()["error"]) == (403, "no_match")
        world.set_role("uma", "admin")  # promoted: the next request sees it
        assert (await client.get("/admin/users")).text == "GET /admin/users"
        world.set_role("uma", "user")  # demoted: version 3, the session still carries 1
        again = await client.get("/admin/users", headers=json)
        assert (again.status_code, again.json()["error"]) == (403, "no_match")
        assert (await client.post("/posts/future")).text == "ok"
        lost = await client.get("/me", headers=json)  # never the roles of an older store
        assert (lost.status_code, lost.json()["error"]) == (503, "authz_store_unavailable")


@pytest.mark.asyncio
async def test_roles_store_outage_is_503(start_redis_server: Callable[..., RedisServer]) -> None:
    server = start_redis_server()
    roles = RedisStore.from_url(server.url, prefix="authz-outage:")
    world = World(roles_store=roles)
    try:
        async with http(asgi_stack(starlette_app(world), world)) as client:
            assert (await client.get("/me", headers=world.auth("uma"))).status_code == 200
            server.stop()
            down = await client.get("/me", headers=world.auth("uma"))
            assert down.status_code == 503
            assert down.json()["error"] == "authz_store_unavailable"
            assert down.headers["retry-after"] == "5"
    finally:
        await roles.aclose()


@pytest.mark.asyncio
@pytest.mark.parametrize("extension", [True, False])
async def test_websocket_handshakes_meet_the_route_table(world: World, *, extension: bool) -> None:
    app = asgi_stack(starlette_app(world), world)  # no rule covers /api/ws
    token = world.auth("alice")["Authorization"].encode()
    sent = await handshake(app, [(b"authorization", token)], extension=extension)
    if extension:
        assert sent[0]["type"] == "websocket.http.response.start"
        assert sent[0]["status"] == 403
        assert b'"error": "no_route_rule"' in sent[1]["body"]
    else:
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": ""}]


# -- roles from the app's own loader -------------------------------------------------------


@pytest.mark.asyncio
async def test_roles_from_the_apps_own_loader(world: World) -> None:
    table = {"ann": {"id": "ann", "roles": ["moderator"]}, "bob": {"id": "eve", "roles": []}}
    authz = Authorizer(
        AuthzPolicy(policy=POLICY, routes=ROUTES, roles=table.__getitem__), auditor=world.auditor
    )
    assert authz.assignments is None
    assert (await authz.check("ann", "posts:delete")).allowed
    assert not authz.check_sync("ann", "admin:access").allowed
    with pytest.raises(AuthzInputError, match="another user"):
        await authz.subject_for("bob")
    with pytest.raises(ConfigurationError, match="change them there"):
        await authz.assign_role("ann", "bob", "user")
    async with http(
        BearerMiddleware(AuthzMiddleware(starlette_app(world), authz), world.verifier)
    ) as client:
        assert (await client.post("/posts", headers=world.auth("ann"))).status_code == 200
        denied = await client.get("/admin/users", headers=world.auth("ann"))
        assert (denied.status_code, denied.json()["error"]) == (403, "no_match")


def test_flask_route_table_with_the_flask_session(world: World) -> None:
    app = flask.Flask(__name__)
    config = Bastion(
        store=world.store,
        auditor=world.auditor,
        clock=world.clock,
        csrf=None,
        headers=None,
        environment=Environment.TEST,
    )
    bastion_flask.protect(app, config)
    init_authz(app, world.authorizer)

    @app.post("/login")
    def sign_in() -> str:
        flask.session.login(flask.request.args["user"])  # type: ignore[attr-defined]
        return "signed in"

    @app.get("/me")
    def me() -> str:
        return "me"

    @app.get("/admin/users")
    def users() -> str:
        return "users"

    @app.get("/decorated")
    @flask_require_permission("posts:delete")  # finds the authorizer init_authz registered
    def decorated() -> str:
        return "deleted"

    client = app.test_client()
    json = {"Accept": "application/json"}
    nobody = client.get("https://localhost/me", headers=json)
    assert (nobody.status_code, nobody.json["error"]) == (401, "unauthenticated")  # type: ignore[index]
    assert client.post("https://localhost/login?user=mona").text == "signed in"
    assert client.get("https://localhost/me").text == "me"
    admin = client.get("https://localhost/admin/users", headers=json)
    assert (admin.status_code, admin.json["error"]) == (403, "no_match")  # type: ignore[index]
    assert client.get("https://localhost/decorated").text == "deleted"
    world.set_role("mona", "user")  # demoted: the next request sees it
    demoted = client.get("https://localhost/decorated", headers=json)
    assert (demoted.status_code, demoted.json["error"]) == (403, "no_match")  # type: ignore[index]
    world.set_role("mona", "admin")
    assert client.get("https://localhost/admin/users").text == "users"
    bad = client.get("https://localhost/admin;x/users", headers=json)
    assert (bad.status_code, bad.json["error"]) == (400, "authz_bad_path")  # type: ignore[index]
