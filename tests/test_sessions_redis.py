"""Sessions on a real redis-server: round trips, preload versus lazy, and outages (503)."""

from __future__ import annotations

import asyncio
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from bastion.asgi import SessionMiddleware
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.sync_store import CountingStore

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client to httpx2 at import time.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request

    from bastion.testing.redis_server import RedisServer

pytestmark = pytest.mark.redis
HTTPS = "https://testserver"


def close_in(client: TestClient, store: Any) -> None:
    """Close the store on the event loop its async connections belong to (the client's)."""
    portal = client.portal
    assert portal is not None
    portal.call(store.aclose)


def make_app(
    store: Any, sink: RecordingAuditSink, *, preload: bool | None = None, **extra: Any
) -> Starlette:
    async def untouched(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def read(request: Request) -> JSONResponse:
        return JSONResponse({"n": request.session.get("n")})

    async def incr(request: Request) -> JSONResponse:
        request.session["n"] = request.session.get("n", 0) + 1
        stop = extra.get("stop_before_save")
        if stop is not None and request.query_params.get("stop") == "1":
            await asyncio.to_thread(stop)
        return JSONResponse({"n": request.session["n"]})

    clock = FrozenClock()
    # Every event written one by one (no flood aggregation): the tests count them.
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink, aggregation=None)
    return Starlette(
        routes=[
            Route("/", untouched),
            Route("/read", read),
            Route("/incr", incr, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                auditor=auditor,
                clock=clock,
                preload=preload,
                production=False,
            )
        ],
    )


def test_round_trips_with_preload_on_redis(redis_url: str, redis_prefix: str) -> None:
    store = CountingStore(RedisStore.from_url(redis_url, prefix=redis_prefix))
    app = make_app(store, RecordingAuditSink())
    with TestClient(app, base_url=HTTPS) as client:
        assert client.get("/").text == "ok"
        assert store.total == 0  # no cookie: nothing read
        client.post("/incr")
        store.reset()
        assert client.get("/").text == "ok"
        assert dict(store.calls) == {"get": 1}  # preload: one read even when untouched
        store.reset()
        assert client.get("/read").json() == {"n": 1}
        assert dict(store.calls) == {"get": 1}
        store.reset()
        assert client.post("/incr").json() == {"n": 2}
        assert dict(store.calls) == {"get": 1, "compare_and_set": 1}
        close_in(client, store)


def test_lazy_loading_on_redis_reads_only_when_touched(redis_url: str, redis_prefix: str) -> None:
    store = CountingStore(RedisStore.from_url(redis_url, prefix=redis_prefix))
    app = make_app(store, RecordingAuditSink(), preload=False)
    with TestClient(app, base_url=HTTPS) as client:
        client.post("/incr")
        store.reset()
        assert client.get("/").text == "ok"
        assert store.total == 0
        assert client.get("/read").json() == {"n": 1}
        assert dict(store.calls) == {"get": 1}
        close_in(client, store)


@pytest.mark.parametrize("preload", [True, False])
def test_store_outage_is_a_503_with_an_audit_event_and_no_logout(
    start_redis_server: Callable[..., RedisServer], *, preload: bool
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    sink = RecordingAuditSink()
    app = make_app(store, sink, preload=preload)
    with TestClient(app, base_url=HTTPS) as client:
        assert client.post("/incr").json() == {"n": 1}
        cookie = client.cookies.get("__Host-session")
        server.stop()
        page = {"Accept": "text/html"}  # a browser gets the text (an API client JSON)
        for response in (client.get("/read", headers=page), client.post("/incr", headers=page)):
            assert response.status_code == 503
            assert response.text.startswith("Service unavailable: the session store")
            assert response.headers["retry-after"] == "5"
            assert "set-cookie" not in response.headers
        assert [str(e.name) for e in sink.events[-2:]] == ["session_store_unavailable"] * 2
        assert dict(sink.events[-1].details) == {"operation": "load"}
        server.start()
        # Nothing acknowledged was lost, and the client was not logged out.
        assert client.cookies.get("__Host-session") == cookie
        assert client.get("/read").json() == {"n": 1}
        close_in(client, store)


def test_store_outage_during_the_save_is_a_503_not_an_acknowledgement(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    sink = RecordingAuditSink()
    app = make_app(store, sink, stop_before_save=server.stop)
    with TestClient(app, base_url=HTTPS) as client:
        assert client.post("/incr").json() == {"n": 1}
        response = client.post("/incr?stop=1", headers={"Accept": "text/html"})
        assert response.status_code == 503
        assert response.text.startswith("Service unavailable")
        assert dict(sink.events[-1].details) == {"operation": "save"}
        server.start()
        assert client.get("/read").json() == {"n": 1}
        close_in(client, store)
