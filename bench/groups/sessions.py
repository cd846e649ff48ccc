"""Group ``sessions``: bastion's session middleware beside its peers, same app, same run.

Every ASGI case is the same Starlette app (``/read`` returns ``session["n"]``, ``/modify``
increments it, ``/`` never touches the session) under a different session middleware, driven
in-process with a session cookie obtained by one set-up request. Cases and their baselines:

* redis modify / read: bastion (``RedisStore``, preload on a cookie) against starsessions
  (``starsessions.stores.redis.RedisStore`` + autoload), and bastion modify against the I/O
  floor: the bare app whose handler does one redis-py ``GET`` and one ``SET`` itself.
* memory modify: bastion (``MemoryStore``) against starsessions' ``InMemoryStore`` and against
  Starlette's signed-cookie ``SessionMiddleware``; the same app with a plain dict as its session
  (no store, no cookie) shows the floor any session middleware sits on.
* untouched: bastion with no cookie against a pass-through ASGI middleware on the same app.
* flask modify on Redis: ``bastion.flask.Bastion`` against Flask-Session's Redis interface, both
  driven as WSGI callables with a prebuilt environ (sync driver, no event loop), beside the I/O
  floor: the same Flask app whose handler does one redis-py ``GET`` and one ``SET`` itself.
* floors for the targets: the memory rows also show :class:`LeastJSONSession`, the least a
  server-side session with hashed IDs and JSON records can do (no checks at all); any session
  with those two properties costs at least that much.

The set-up also proves the round trips per request kind on counted memory and Redis stores
(untouched 0, or 1 on Redis when a cookie is sent since the read is preloaded; read-only 1;
modified 2; no cookie 0) and refuses to run if they differ.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
import warnings
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import redis as redis_sync
from flask import Flask
from flask import session as flask_session
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starsessions import InMemoryStore, SessionAutoloadMiddleware
from starsessions import SessionMiddleware as StarSessionMiddleware
from starsessions.stores.redis import RedisStore as StarRedisStore

import bastion.flask
from bastion.asgi import SessionMiddleware
from bastion.config import Bastion
from bastion.core.cookies import parse_cookie
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.core.sessions import SessionConfig
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.redis_server import RedisServer
from bastion.testing.sync_store import CountingStore
from bench.driver import call_asgi, http_scope
from bench.group import Group
from bench.measure import async_case, sync_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from starlette.requests import Request

    from bench.driver import ASGIApp, Message, Receive, Scope, Send
    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP", "session_cases"]

PREFIX: Final = "bastion-bench-sessions:"
CONFIG: Final = SessionConfig(cookie_name="session", secure=False, development=True)
_COOKIE = re.compile(r"^(session)=([^;]+)")


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(f"sessions bench set-up check failed: {what}")


async def _read(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(request.session.get("n", 0)))


async def _modify(request: Request) -> PlainTextResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return PlainTextResponse("ok")


async def _untouched(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


ROUTES: Final = [Route("/", _untouched), Route("/read", _read), Route("/modify", _modify)]


def _app(*middleware: Middleware) -> Starlette:
    return Starlette(routes=ROUTES, middleware=list(middleware))


def _floor_app(client: Redis) -> Starlette:
    async def modify(_request: Request) -> PlainTextResponse:
        raw = await client.get(PREFIX + "floor")
        await client.set(PREFIX + "floor", raw or b"{}", px=3_600_000)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/modify", modify)])


class DictSession:
    """The floor of any session middleware: a plain dict in ``scope["session"]``, no store, no
    cookie. What is left above it is the cost of a session system."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["session"] = {"n": 1}
        await self.app(scope, receive, send)


def least_key(cookie: str) -> bytes:
    """The dict key of :class:`LeastJSONSession`: SHA-256 of the decoded session ID."""
    session_id = parse_cookie(cookie)["session"]
    return hashlib.sha256(base64.urlsafe_b64decode(session_id + "=")).digest()


def least_record() -> str:
    """A record in bastion's shape (times, ID hash, user, flags, client, data), 200-odd bytes."""
    now = time.time()
    return json.dumps(
        {
            "v": 1,
            "c": now,
            "i": now,
            "s": now,
            "x": base64.urlsafe_b64encode(hashlib.sha256(b"x").digest()).decode().rstrip("="),
            "u": None,
            "a": None,
            "p": False,
            "ip": "127.0.0.1",
            "ua": "bastion-bench/1",
            "d": {"n": 1},
        },
        separators=(",", ":"),
    )


class LeastJSONSession:
    """The least a server-side session with hashed IDs and JSON records can do per request:
    find the cookie, decode and hash the ID, get the record from a dict, decode it, and on the
    response encode it and put it back. No validation, change tracking, expiry, compare-and-set,
    registry or cookie refresh: a floor for the memory rows, not a usable session."""

    def __init__(self, app: ASGIApp, *, records: dict[bytes, str]) -> None:
        self.app = app
        self.records = records

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cookie = ""
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie = value.decode("latin-1")
        key = least_key(cookie)
        record = json.loads(self.records[key])
        scope["session"] = record["d"]
        records = self.records

        async def put_back(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["s"] = time.time()
                records[key] = json.dumps(record, separators=(",", ":"))
            await send(message)

        await self.app(scope, receive, put_back)


class PassThrough:
    """The cheapest middleware: awaits the app. The baseline for an untouched request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _scope(path: str, cookie: str | None) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bastion-bench/1")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    return http_scope("GET", path, headers=headers)


async def _cookie_for(name: str, app: ASGIApp) -> str:
    status, headers, _body = await call_asgi(app, _scope("/modify", None))
    _expect(status == 200, f"{name}: set-up request answered {status}")
    for header, value in headers:
        if header.lower() == b"set-cookie":
            match = _COOKIE.match(value.decode("latin-1"))
            if match is not None:
                return f"{match.group(1)}={match.group(2)}"
    raise RuntimeError(f"sessions bench: {name} set no session cookie")


async def _checked(name: str, app: ASGIApp, path: str, cookie: str | None) -> Case:
    template = _scope(path, cookie)
    status, _headers, _body = await call_asgi(app, template)
    _expect(status == 200, f"{name} answered {status}")
    return async_case(name, partial(call_asgi, app, template))


async def _round_trips(store: CountingStore, name: str, untouched: int) -> None:
    """Prove the round trips per request kind before timing anything: ``untouched`` for a
    request with a cookie that never touches the session (0 lazy, 1 with preload), 1 for a
    read, 2 for a modification, 0 without a cookie."""
    app = _app(Middleware(SessionMiddleware, store=store, config=CONFIG, production=False))
    cookie = await _cookie_for(name, app)
    checks = (
        ("/", None, 0),
        ("/", cookie, untouched),
        ("/read", cookie, 1),
        ("/modify", cookie, 2),
    )
    for path, sent, expected in checks:
        store.reset()
        await call_asgi(app, _scope(path, sent))
        _expect(
            store.total == expected, f"{name} {path}: {store.total} round trips, not {expected}"
        )


def _wsgi_call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> bytes:
    env = dict(environ)
    env["wsgi.input"] = io.BytesIO(b"")
    out: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        del exc_info
        out.append((status, headers))

    body = b"".join(app(env, start_response))
    if not out[0][0].startswith("200"):
        raise RuntimeError(f"WSGI bench app answered {out[0][0]}")
    return body


def _environ(cookie: str | None) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder  # noqa: PLC0415 (bench set-up only)

    headers = {} if cookie is None else {"Cookie": cookie}
    builder = EnvironBuilder(path="/modify", method="POST", headers=headers)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _flask_cookie(app: Flask) -> str:
    response = app.test_client().post("/modify")
    match = _COOKIE.match(response.headers.get("Set-Cookie", ""))
    _expect(match is not None, "flask set-up request set no session cookie")
    assert match is not None
    return f"session={match.group(2)}"


def _flask_app() -> Flask:
    app = Flask("bench")

    @app.post("/modify")
    def modify() -> str:
        flask_session["n"] = flask_session.get("n", 0) + 1
        return "ok"

    return app


def _flask_cases(stack: AsyncExitStack, url: str) -> list[Case]:
    ours = _flask_app()
    store = RedisStore.from_url(url, prefix=PREFIX + "flask:")
    stack.push_async_callback(store.aclose)
    bastion.flask.protect(  # sessions alone, as Flask-Session offers
        ours,
        Bastion(
            store=store,
            sessions=CONFIG,
            csrf=None,
            headers=None,
            environment=Environment.DEVELOPMENT,
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Flask-Session's own import-time deprecations
        from flask_session import Session as FlaskSession  # noqa: PLC0415

    peer = _flask_app()
    client = redis_sync.Redis.from_url(url)
    stack.callback(client.close)
    peer.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=client,
        SESSION_KEY_PREFIX=PREFIX + "flask-session:",
        SECRET_KEY=KeyRing.generate().current.to_text(),
    )
    FlaskSession(peer)
    floor = Flask("bench-floor")

    @floor.post("/modify")
    def modify() -> str:
        raw = client.get(PREFIX + "flask-floor")
        client.set(PREFIX + "flask-floor", raw or b"{}", px=3_600_000)
        return "ok"

    ours_env = _environ(_flask_cookie(ours))
    peer_env = _environ(_flask_cookie(peer))
    base = "flask modify redis: Flask-Session"
    return [
        sync_case(base, partial(_wsgi_call, peer.wsgi_app, peer_env)),
        sync_case(
            "flask modify redis: floor GET+SET (no session)",
            partial(_wsgi_call, floor.wsgi_app, _environ(None)),
            baseline=base,
        ),
        sync_case(
            "flask modify redis: bastion",
            partial(_wsgi_call, ours.wsgi_app, ours_env),
            baseline=base,
        ),
    ]


@asynccontextmanager
async def session_cases(options: Options) -> AsyncIterator[list[Case]]:
    async with AsyncExitStack() as stack:
        await _round_trips(CountingStore(MemoryStore()), "bastion memory", 0)
        if options.redis_url is None:
            server = stack.enter_context(RedisServer())
            url = server.url
            admin = Redis.from_url(url)
            await admin.config_set("appendfsync", "everysec")
            await admin.aclose()
        else:
            url = options.redis_url
        counted = CountingStore(RedisStore.from_url(url, prefix=PREFIX + "counted:"))
        await _round_trips(counted, "bastion redis", 1)
        await counted.aclose()
        floor_client = Redis.from_url(url)
        stack.push_async_callback(floor_client.aclose)

        bastion_redis = RedisStore.from_url(url, prefix=PREFIX)
        stack.push_async_callback(bastion_redis.aclose)
        star_redis = StarRedisStore(url=url, prefix=PREFIX + "star:")
        ours_redis = _app(
            Middleware(SessionMiddleware, store=bastion_redis, config=CONFIG, production=False)
        )
        star_redis_app = _app(
            Middleware(StarSessionMiddleware, store=star_redis, cookie_https_only=False),
            Middleware(SessionAutoloadMiddleware),
        )
        ours_memory = _app(
            Middleware(SessionMiddleware, store=MemoryStore(), config=CONFIG, production=False)
        )
        star_memory = _app(
            Middleware(StarSessionMiddleware, store=InMemoryStore(), cookie_https_only=False),
            Middleware(SessionAutoloadMiddleware),
        )
        signed_cookie = _app(
            Middleware(StarletteSessionMiddleware, secret_key="x" * 32, https_only=False)
        )
        plain = _app()
        passthrough = PassThrough(plain)
        ours_plain = SessionMiddleware(plain, store=MemoryStore(), config=CONFIG, production=False)

        cookies = {
            "ours_redis": await _cookie_for("bastion redis", ours_redis),
            "star_redis": await _cookie_for("starsessions redis", star_redis_app),
            "ours_memory": await _cookie_for("bastion memory", ours_memory),
            "star_memory": await _cookie_for("starsessions memory", star_memory),
            "signed": await _cookie_for("starlette signed cookie", signed_cookie),
        }
        cases = [
            await _checked(
                "redis modify: starsessions", star_redis_app, "/modify", cookies["star_redis"]
            ),
            await _checked(
                "redis modify: floor GET+SET", _floor_app(floor_client), "/modify", None
            ),
        ]
        ours_modify = _scope("/modify", cookies["ours_redis"])
        cases += [
            async_case(
                "redis modify: bastion",
                partial(call_asgi, ours_redis, ours_modify),
                baseline="redis modify: starsessions",
            ),
            async_case(
                "redis modify: bastion (vs floor)",
                partial(call_asgi, ours_redis, ours_modify),
                baseline="redis modify: floor GET+SET",
            ),
            await _checked(
                "redis read: starsessions", star_redis_app, "/read", cookies["star_redis"]
            ),
        ]
        ours_read = _scope("/read", cookies["ours_redis"])
        cases.append(
            async_case(
                "redis read: bastion",
                partial(call_asgi, ours_redis, ours_read),
                baseline="redis read: starsessions",
            )
        )
        cases += [
            await _checked(
                "memory modify: starsessions", star_memory, "/modify", cookies["star_memory"]
            ),
            await _checked(
                "memory modify: starlette signed cookie",
                signed_cookie,
                "/modify",
                cookies["signed"],
            ),
        ]
        cases.append(
            async_case(
                "memory modify: floor (dict in scope, no store)",
                partial(call_asgi, _app(Middleware(DictSession)), _scope("/modify", None)),
                baseline="memory modify: starsessions",
            )
        )
        records = {least_key(cookies["ours_memory"]): least_record()}
        cases.append(
            async_case(
                "memory modify: least JSON session (no checks)",
                partial(
                    call_asgi,
                    _app(Middleware(LeastJSONSession, records=records)),
                    _scope("/modify", cookies["ours_memory"]),
                ),
                baseline="memory modify: starsessions",
            )
        )
        ours_mem = _scope("/modify", cookies["ours_memory"])
        cases += [
            async_case(
                "memory modify: bastion",
                partial(call_asgi, ours_memory, ours_mem),
                baseline="memory modify: starsessions",
            ),
            async_case(
                "memory modify: bastion (vs signed cookie)",
                partial(call_asgi, ours_memory, ours_mem),
                baseline="memory modify: starlette signed cookie",
            ),
            await _checked("untouched: pass-through layer", passthrough, "/", None),
        ]
        untouched = _scope("/", None)
        cases.append(
            async_case(
                "untouched: bastion",
                partial(call_asgi, ours_plain, untouched),
                baseline="untouched: pass-through layer",
            )
        )
        cases += _flask_cases(stack, url)
        yield cases
        await floor_client.delete(PREFIX + "floor", PREFIX + "flask-floor")


GROUP = Group(
    name="sessions",
    title=(
        "Session middleware on one Starlette app (in-process ASGI driver, session cookie set): "
        "bastion beside starsessions (Redis and memory stores), Starlette's signed-cookie "
        "SessionMiddleware, a bare redis-py GET+SET handler (the I/O floor) and a pass-through "
        "layer; Flask + bastion beside Flask-Session, both on Redis."
    ),
    iterations=500,
    cases=session_cases,
)
