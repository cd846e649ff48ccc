"""A ``_method`` field in a form body is a method override like the headers and the
``_method`` query parameter: the route table refuses it (``400 authz_method_override``,
audited ``input_validation_fail``) unless ``method_override=True``, which checks the method
it names too. The adapters read form bodies only (urlencoded, multipart), at most the first
MiB, and the app then receives the body byte for byte. Real Starlette and Flask apps behind
the real bearer and route-table middlewares (users in a MemoryStore, tests/authz_http_support)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tests.authz_http_support import POLICY, World

from bastion.asgi.authz import AuthzMiddleware
from bastion.asgi.bearer import BearerMiddleware
from bastion.authz.policy import AuthzPolicy, RouteRule
from bastion.authz.service import Authorizer
from bastion.core.authz.routes import FORM_SCAN_BYTES
from bastion.wsgi.authz import AuthzMiddleware as WSGIAuthzMiddleware
from bastion.wsgi.bearer import BearerMiddleware as WSGIBearerMiddleware

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

BOUNDARY = "xYzBoundary"


def multipart(**fields: str) -> tuple[bytes, str]:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return ("".join(parts) + f"--{BOUNDARY}--\r\n").encode(), (
        f"multipart/form-data; boundary={BOUNDARY}"
    )


FORM = "application/x-www-form-urlencoded"
REFUSED_BODIES = [
    (b"title=x&_method=DELETE", FORM),
    (b"%5Fmethod=delete&title=x", FORM),  # encoded as frameworks decode it
    (b"_method=PUT", f"{FORM}; charset=utf-8"),
    multipart(title="x", _method="DELETE"),
]


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"{request.method} " + (await request.body()).decode("latin-1"))


def asgi_client(world: World) -> httpx.AsyncClient:
    app = Starlette(
        routes=[
            Route("/posts", echo, methods=["GET", "POST", "DELETE"]),
            Route("/drafts", echo, methods=["POST"]),
        ]
    )
    stack = BearerMiddleware(
        AuthzMiddleware(app, world.authorizer), world.verifier, protected=(), optional=("/*",)
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=stack), base_url="http://t")


def _inputs(world: World) -> list[object]:
    return [
        dict(e.details).get("problem")
        for e in world.sink.events
        if e.name == "input_validation_fail"
    ]


@pytest.mark.asyncio
@pytest.mark.parametrize(("body", "content_type"), REFUSED_BODIES)
async def test_a_form_method_field_is_refused(body: bytes, content_type: str) -> None:
    world = World()
    async with asgi_client(world) as client:
        headers = {**world.auth("alice"), "Content-Type": content_type}
        refused = await client.post("/posts", content=body, headers=headers)
    assert (refused.status_code, refused.json()["error"]) == (400, "authz_method_override")
    assert refused.headers["cache-control"] == "no-store"
    assert len(_inputs(world)) == 1
    assert str(_inputs(world)[0]).startswith("asks to be read as ")


@pytest.mark.asyncio
async def test_other_bodies_reach_the_app_unchanged() -> None:
    world = World()
    async with asgi_client(world) as client:
        auth = world.auth("alice")
        form = await client.post(
            "/posts", content=b"title=x&method=y", headers={**auth, "Content-Type": FORM}
        )
        assert form.text == "POST title=x&method=y"
        json = b'{"_method": "DELETE"}'  # not a form: no framework reads it as an override
        sent = {**auth, "Content-Type": "application/json"}
        assert (
            await client.post("/posts", content=json, headers=sent)
        ).text == f"POST {json.decode()}"
        big = b"a=" + b"x" * (FORM_SCAN_BYTES + 10) + b"&_method=DELETE"  # beyond what is read
        chunks = [big[i : i + 65536] for i in range(0, len(big), 65536)]

        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        through = await client.post(
            "/posts", content=stream(), headers={**auth, "Content-Type": FORM}
        )
        assert through.status_code == 200
        assert through.text == "POST " + big.decode()
        body, kind = multipart(title="x")
        plain = await client.post("/posts", content=body, headers={**auth, "Content-Type": kind})
        assert plain.text == "POST " + body.decode()
    assert _inputs(world) == []


@pytest.mark.asyncio
async def test_with_method_override_the_form_method_is_checked_too() -> None:
    world = World()
    routes = (
        RouteRule(path="/posts", methods=("POST",), permission="posts:write"),
        RouteRule(path="/posts", methods=("DELETE",), permission="posts:delete"),
        RouteRule(path="/drafts", methods=("POST",), permission="posts:write"),
    )
    world.authorizer = Authorizer(
        AuthzPolicy(policy=POLICY, routes=routes, method_override=True),
        store=world.store,
        auditor=world.auditor,
        clock=world.clock,
    )
    for user, role in (("uma", "user"), ("alice", "admin")):
        world.set_role(user, role)
    world.assignments().grant_sync("seed", "uma", "posts:write", may_administer=True)
    form = {"Content-Type": FORM}
    async with asgi_client(world) as client:
        uma, alice = {**world.auth("uma"), **form}, {**world.auth("alice"), **form}
        assert (await client.post("/posts", content=b"title=x", headers=uma)).status_code == 200
        asked = await client.post("/posts", content=b"_method=DELETE", headers=uma)
        assert (asked.status_code, asked.json()["error"]) == (403, "no_match")  # posts:delete
        fine = await client.post("/posts", content=b"_method=DELETE", headers=alice)
        assert fine.text == "POST _method=DELETE"  # the app gets the body as sent
        nothing = await client.post("/drafts", content=b"_method=DELETE", headers=alice)
        assert (nothing.status_code, nothing.json()["error"]) == (403, "no_route_rule")


def flask_client(world: World) -> flask.testing.FlaskClient:
    app = flask.Flask(__name__)

    @app.route("/posts", methods=["GET", "POST"])
    def posts() -> str:
        return f"{flask.request.method} {sorted(flask.request.form.items())}"

    app.wsgi_app = WSGIBearerMiddleware(  # type: ignore[method-assign]
        WSGIAuthzMiddleware(app.wsgi_app, world.authorizer),
        world.verifier,
        protected=(),
        optional=("/*",),
    )
    return app.test_client()


@pytest.mark.parametrize(("body", "content_type"), REFUSED_BODIES)
def test_flask_a_form_method_field_is_refused(body: bytes, content_type: str) -> None:
    world = World()
    client = flask_client(world)
    headers = {**world.auth("alice"), "Content-Type": content_type}
    refused = client.post("/posts", data=body, headers=headers)
    assert refused.status_code == 400
    assert refused.json is not None
    assert refused.json["error"] == "authz_method_override"
    assert len(_inputs(world)) == 1


def test_flask_other_forms_reach_the_app_unchanged() -> None:
    world = World()
    client = flask_client(world)
    auth = world.auth("alice")
    answer = client.post("/posts", data={"title": "x", "method": "y"}, headers=auth)
    assert answer.text == "POST [('method', 'y'), ('title', 'x')]"
    body, kind = multipart(title="x")
    answer = client.post("/posts", data=body, headers={**auth, "Content-Type": kind})
    assert answer.text == "POST [('title', 'x')]"
    assert _inputs(world) == []
