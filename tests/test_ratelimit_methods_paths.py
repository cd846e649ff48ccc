"""Methods and paths as every layer reads them: case, HEAD, mount prefixes, path forms.

Attacks at the HTTP level: a lower-case method, HEAD for GET, a mounted app's full path and the
spellings of one path (``//``, ``/./``, ``..``, a trailing slash, case, percent-escapes) must
all be counted by the rule that covers the path the framework serves.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.routing import Route as StarletteRoute
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, EnvironBuilder

from bastion.asgi import RateLimitMiddleware
from bastion.asgi.ratelimit import path_key, request_view
from bastion.core.clock import FrozenClock
from bastion.core.request import (
    asgi_path,
    expand_methods,
    is_normal,
    match_forms,
    normalize_method,
    normalize_path,
    wsgi_path,
)
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.wsgi import RateLimitMiddleware as WSGIRateLimitMiddleware
from bastion.wsgi.ratelimit import request_view as environ_view
from servers import uvicorn_thread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, MutableMapping

    from starlette.requests import Request

NOW = 1_700_000_000.0


def memory_limiter() -> RateLimiter:
    return RateLimiter(MemoryStore(clock=FrozenClock(NOW)))


def login_route(limit: str = "10/minute", **options: Any) -> Rule:
    options.setdefault("path", "/login")
    options.setdefault("methods", frozenset({"POST"}))
    return Rule("login", limit, strategy="fixed_window", **options)


# -- the core readings -------------------------------------------------------------------------


def test_methods_are_upper_cased_in_ascii_only() -> None:
    assert normalize_method("post") == "POST"
    assert normalize_method("PoSt") == "POST"
    # str.upper() would make "POST" of this; a method that is not ASCII stays what it is.
    assert "po\u017ft".upper() == "POST"
    assert normalize_method("po\u017ft") == "po\u017ft"
    assert expand_methods(["get"]) == {"GET", "HEAD"}
    assert expand_methods({"post", "put"}) == {"POST", "PUT"}


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/login", "/login"),
        ("//login", "/login"),
        ("/./login", "/login"),
        ("/x/../login", "/login"),
        ("/../login", "/login"),
        ("/a//b/", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/", "/"),
    ],
)
def test_normal_form(path: str, normal: str) -> None:
    assert normalize_path(path) == normal
    assert is_normal(path) is (path == normal)


def test_match_forms_fold_case_and_trailing_slash() -> None:
    assert match_forms("/Login/") == ("/login",)
    assert match_forms("/api/../login") == ("/api/../login", "/login")
    assert match_forms("/") == ("/",)


def test_the_full_path_under_asgi_and_wsgi() -> None:
    assert asgi_path("/app/login", "/app") == "/app/login"  # the spec: path includes root_path
    assert asgi_path("/login", "/app") == "/app/login"  # older servers left it out
    assert asgi_path("/apple", "/app") == "/app/apple"
    assert asgi_path("/login", "") == "/login"
    assert wsgi_path("/app", "/login") == "/app/login"
    assert wsgi_path("", "") == "/"
    # PEP 3333 latin-1 text of UTF-8 bytes reads as the ASGI server's text.
    assert wsgi_path("", "/caf\u00c3\u00a9") == "/caf\u00e9"


def test_route_methods_must_be_names() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Rule("x", "1/minute", methods="POST")  # type: ignore[arg-type]
    assert caught.value.setting == "methods"


def test_a_get_route_covers_head_and_lower_case() -> None:
    route = login_route(methods=frozenset({"get"}))
    assert route.methods == {"GET", "HEAD"}
    assert route.matches("head", "/login")
    assert route.matches("get", "/LOGIN/")
    assert not route.matches("POST", "/login")


# -- item 9: a lower-case method ---------------------------------------------------------------


def flask_login_app(calls: list[str]) -> flask.Flask:
    app = flask.Flask(__name__)

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str:
        calls.append(flask.request.method)
        return "ok"

    return app


def test_lower_case_post_is_limited_in_flask() -> None:
    """werkzeug's test client sends ``post`` as given; Flask upper-cases it and runs POST."""
    calls: list[str] = []
    app = flask_login_app(calls)
    app.wsgi_app = WSGIRateLimitMiddleware(app.wsgi_app, memory_limiter(), login_route())  # type: ignore[method-assign]
    client = app.test_client()
    statuses = [client.open("/login", method="post").status_code for _ in range(15)]
    assert statuses == [200] * 10 + [429] * 5
    assert calls == ["POST"] * 10


def counting_asgi_app(calls: list[str]) -> Callable[..., Any]:
    """A raw ASGI app that serves every method, as Quart does once it has upper-cased it."""

    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        calls.append(scope["method"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def raw_request(port: int, line: bytes) -> int:
    """Send one HTTP/1.1 request line as given over a real socket; the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            line + b"\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ", 2)[1])


def test_lower_case_post_is_limited_under_uvicorn_h11() -> None:
    """uvicorn's h11 protocol passes ``post`` through to the app unchanged."""
    calls: list[str] = []
    app = RateLimitMiddleware(counting_asgi_app(calls), memory_limiter(), login_route())
    with uvicorn_thread(app, http="h11") as port:
        statuses = [raw_request(port, b"post /login HTTP/1.1") for _ in range(15)]
    assert statuses == [200] * 10 + [429] * 5
    assert calls == ["post"] * 10  # the app still sees what the server gave it


# -- item 10: HEAD runs the GET view ------------------------------------------------------------


def test_head_is_counted_by_a_get_rule_in_starlette() -> None:
    calls: list[str] = []

    async def profile(request: Request) -> PlainTextResponse:
        calls.append(request.method)
        return PlainTextResponse("exists")

    route = Rule("profile", "3/minute", strategy="fixed_window", path="/users/*", methods={"GET"})
    inner = Starlette(routes=[StarletteRoute("/users/{name}", profile)])
    app = RateLimitMiddleware(inner, memory_limiter(), route)

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [(await client.head("/users/alice")).status_code for _ in range(9)]

    import asyncio  # noqa: PLC0415

    assert asyncio.run(run()) == [200] * 3 + [429] * 6
    assert calls == ["HEAD"] * 3


def test_head_is_counted_by_a_get_rule_in_flask() -> None:
    calls: list[str] = []
    app = flask_login_app(calls)
    route = login_route("3/minute", methods=frozenset({"GET"}))
    app.wsgi_app = WSGIRateLimitMiddleware(app.wsgi_app, memory_limiter(), route)  # type: ignore[method-assign]
    client = app.test_client()
    assert [client.head("/login").status_code for _ in range(9)] == [200] * 3 + [429] * 6
    assert calls == ["HEAD"] * 3


# -- item 11: one path, mount prefix included ----------------------------------------------------


def test_a_wsgi_app_mounted_at_a_prefix_is_limited_by_its_full_path() -> None:
    calls: list[str] = []
    inner = flask_login_app(calls)
    limited = WSGIRateLimitMiddleware(
        inner.wsgi_app, memory_limiter(), login_route("2/minute", path="/app/login")
    )
    outer = DispatcherMiddleware(flask.Flask("root"), {"/app": limited})
    client = Client(outer)
    statuses = [client.post("/app/login").status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    assert calls == ["POST", "POST"]


def test_an_asgi_app_mounted_at_a_prefix_is_limited_by_its_full_path() -> None:
    calls: list[str] = []

    async def login(request: Request) -> PlainTextResponse:
        calls.append(request.method)
        return PlainTextResponse("ok")

    inner = Starlette(routes=[StarletteRoute("/login", login, methods=["POST"])])
    limited = RateLimitMiddleware(
        inner, memory_limiter(), login_route("2/minute", path="/app/login")
    )
    outer = Starlette(routes=[Mount("/app", app=limited)])

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=outer)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [(await client.post("/app/login")).status_code for _ in range(4)]

    import asyncio  # noqa: PLC0415

    assert asyncio.run(run()) == [200, 200, 429, 429]
    assert calls == ["POST", "POST"]


async def call_asgi(app: Callable[..., Any], method: str, path: str, root_path: str = "") -> int:
    """One request with the scope a server would build for ``path`` (already percent-decoded)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8"),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"t")],
        "client": ("203.0.113.9", 5000),
        "server": ("t", 80),
    }
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


SPELLINGS = ("/login", "//login", "/./login", "/x/../login", "/login/", "/LOGIN", "/Login//")


@pytest.mark.asyncio
async def test_every_spelling_of_a_path_is_counted_asgi() -> None:
    calls: list[str] = []
    app = RateLimitMiddleware(
        counting_asgi_app(calls), memory_limiter(), login_route(f"{len(SPELLINGS)}/minute")
    )
    assert [await call_asgi(app, "POST", p) for p in SPELLINGS] == [200] * len(SPELLINGS)
    # The budget is spent whatever the spelling: the next one of each is refused.
    assert {await call_asgi(app, "post", p) for p in SPELLINGS} == {429}


@pytest.mark.asyncio
async def test_a_prefix_rule_counts_a_path_that_only_resolves_outside_it() -> None:
    """``/api/../login`` is ``/api/...`` to a framework that does not resolve dot segments:
    the ``/api`` rule counts it too (and the ``/login`` rule, for those that do)."""
    calls: list[str] = []
    api = Rule("api", "1/minute", strategy="fixed_window", path="/api/*")
    app = RateLimitMiddleware(counting_asgi_app(calls), memory_limiter(), [api, login_route()])
    assert await call_asgi(app, "POST", "/api/../login") == 200
    assert await call_asgi(app, "GET", "/api/items") == 429


@pytest.mark.asyncio
async def test_an_old_style_root_path_is_prepended() -> None:
    app = RateLimitMiddleware(
        counting_asgi_app([]), memory_limiter(), login_route("1/minute", path="/app/login")
    )
    assert await call_asgi(app, "POST", "/login", root_path="/app") == 200  # path without prefix
    assert await call_asgi(app, "POST", "/app/login", root_path="/app") == 429  # path with it


def wsgi_status(app: Any, method: str, script_name: str, path_info: str) -> int:
    environ = EnvironBuilder(method="POST").get_environ()
    environ.update(REQUEST_METHOD=method, SCRIPT_NAME=script_name, PATH_INFO=path_info)
    statuses: list[str] = []

    def start_response(status: str, headers: Iterable[tuple[str, str]], *exc: Any) -> None:
        statuses.append(status)

    b"".join(app(environ, start_response))
    return int(statuses[0].split()[0])


def test_every_spelling_of_a_path_is_counted_wsgi() -> None:
    calls: list[str] = []
    app = flask_login_app(calls)
    limited = WSGIRateLimitMiddleware(
        app.wsgi_app, memory_limiter(), login_route(f"{len(SPELLINGS)}/minute")
    )
    for path in SPELLINGS:
        wsgi_status(limited, "POST", "", path)
    assert {wsgi_status(limited, "post", "", p) for p in SPELLINGS} == {429}


def test_path_keys_share_one_counter_per_path() -> None:
    def key(scope: dict[str, Any]) -> str | None:
        return path_key(request_view(scope))

    assert key({"path": "/x"}) == key({"path": "//x/"}) == key({"path": "/X"}) == "path:/x"
    assert key({"path": "/x", "root_path": "/app"}) == "path:/app/x"
    assert path_key(environ_view({"SCRIPT_NAME": "/app", "PATH_INFO": "/./x"})) == "path:/app/x"


# -- a method override is a reading of the method too ------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ([(b"x-http-method-override", b"delete")], b""),
        ([(b"x-method-override", b"DELETE")], b""),
        ([], b"_method=DELETE"),
        ([], b"%5Fmethod=%64elete"),
    ],
)
async def test_a_method_override_is_counted_by_the_route_of_its_method(
    headers: list[tuple[bytes, bytes]], query: bytes
) -> None:
    """An app behind method-override middleware runs the DELETE view for these POSTs."""
    route = Rule("delete", "1/minute", strategy="fixed_window", path="/items/*", methods={"DELETE"})
    app = RateLimitMiddleware(counting_asgi_app([]), memory_limiter(), route)

    async def post() -> int:
        sent: list[MutableMapping[str, Any]] = []
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/items/1",
            "root_path": "",
            "query_string": query,
            "headers": [(b"host", b"t"), *headers],
            "client": ("203.0.113.9", 5000),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return int(sent[0]["status"])

    assert [await post(), await post()] == [200, 429]
    assert await call_asgi(app, "DELETE", "/items/2") == 429  # the same budget


def test_a_method_override_is_counted_under_wsgi() -> None:
    calls: list[str] = []
    app = flask_login_app(calls)
    route = login_route("1/minute", methods=frozenset({"PUT"}))
    limited = WSGIRateLimitMiddleware(app.wsgi_app, memory_limiter(), route)
    client = Client(limited)
    override = {"X-HTTP-Method-Override": "put"}
    assert [client.post("/login", headers=override).status_code for _ in range(2)] == [200, 429]
    assert client.post("/login").status_code == 200  # no override: a POST, not limited
