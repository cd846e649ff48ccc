"""WebSocket handshakes under RateLimitMiddleware: a real Starlette app with a WebSocketRoute.

Starlette's TestClient offers the ``websocket.http.response`` extension, so refusals there are
real 429/503 responses. The close-code path (servers without the extension) is driven with a
hand-written receive/send pair whose scope lacks it, against the same Starlette app.

The last test runs the same app in a real uvicorn server on a free loopback port and connects
with the ``websockets`` client: uvicorn's ``websockets-sansio`` protocol offers the extension too.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route as StarletteRoute
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client from httpx to httpx2 at import time;
    # the dev environment pins httpx. Only that import-time notice is silenced.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketDenialResponse


from bastion.asgi import RateLimitMiddleware, SecurityHeadersMiddleware
from bastion.core.audit import Auditor, EventName, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import SecretKey
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.stores.base import Store
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink
from servers import uvicorn_thread

if TYPE_CHECKING:
    from collections.abc import Sequence

    from starlette.requests import Request
    from starlette.websockets import WebSocket

    from bastion.core.request import RequestView
    from bastion.stores.base import SupportsRateLimit

NOW = 1_700_000_000.0  # 20 s into a minute: a fixed 60 s window resets in 40 s
CLIENT = ("203.0.113.7", 4000)
CLOSED_PORT = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every call fails

# bastion's refusals as these clients get them: httpx sends Accept: */* and werkzeug's test
# client no Accept, so the bodies are JSON (bastion.core.refusal)
LIMITED = '{"error": "rate_limited", "detail": "Too Many Requests"}'
UNAVAILABLE = '{"error": "rate_limit_store_unavailable", "detail": "Service Unavailable"}'


def make_limiter(
    backend: SupportsRateLimit | None = None, *, shadow: bool = False
) -> tuple[RateLimiter, RecordingAuditSink]:
    clock = FrozenClock(NOW)
    sink = RecordingAuditSink()
    # Every event written one by one (no flood aggregation): the tests count them.
    auditor = Auditor(IdentifierHasher(SecretKey(b"k" * 32)), clock, sink, aggregation=None)
    limiter = RateLimiter(
        backend if backend is not None else MemoryStore(clock=clock),
        auditor=auditor,
        fallback=MemoryStore(clock=clock),
        shadow=shadow,
    )
    return limiter, sink


async def echo(websocket: WebSocket) -> None:
    """Accept, then echo each text message with the scope's method (a handshake has none)."""
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        await websocket.send_text(f"{message['text']}|method={websocket.scope.get('method')}")


async def ok(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def ws_app(limiter: RateLimiter, rules: Sequence[Rule], **options: Any) -> Starlette:
    return Starlette(
        routes=[
            StarletteRoute("/", ok),
            WebSocketRoute("/ws", echo),
            WebSocketRoute("/api/ws", echo),
        ],
        middleware=[Middleware(RateLimitMiddleware, limiter=limiter, rules=rules, **options)],
    )


def echoes(client: TestClient, path: str = "/ws") -> bool:
    """Open a WebSocket, send one message, check the echo."""
    with client.websocket_connect(path) as websocket:
        websocket.send_text("ping")
        return websocket.receive_text() == "ping|method=None"


def denied(client: TestClient, path: str = "/ws") -> WebSocketDenialResponse:
    with pytest.raises(WebSocketDenialResponse) as caught, client.websocket_connect(path):
        pass  # pragma: no cover - the handshake is refused
    return caught.value


def refusals(sink: RecordingAuditSink) -> list[tuple[str, str, object, object]]:
    return [
        (e.name, e.outcome, e.details["rule"], e.details["shadow"])
        for e in sink.events
        if e.name == EventName.EXCESS_RATE_LIMIT_EXCEEDED
    ]


# -- a hand-written ASGI server without the denial-response extension ---------------------------


class Driver:
    """One WebSocket connection driven by hand: ``incoming`` is what the client sends (the
    connect first), ``sent`` what the app or the middleware sent back."""

    def __init__(self, incoming: Sequence[dict[str, Any]]) -> None:
        self.incoming = list(incoming)
        self.received = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        self.received += 1
        if self.incoming:
            return self.incoming.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def ws_scope(path: str = "/ws", *, extension: bool = False) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": CLIENT,
        "server": ("testserver", 80),
        "subprotocols": [],
    }
    if extension:
        scope["extensions"] = {"websocket.http.response": {}}
    return scope


async def drive(app: Any, path: str = "/ws", *, extension: bool = False) -> Driver:
    driver = Driver(
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "ping"},
            {"type": "websocket.disconnect", "code": 1000},
        ]
    )
    await app(ws_scope(path, extension=extension), driver.receive, driver.send)
    return driver


ECHOED = [
    {"type": "websocket.accept", "subprotocol": None, "headers": []},
    {"type": "websocket.send", "text": "ping|method=None"},
]


# -- with the extension (Starlette's TestClient) -----------------------------------------------


def test_the_handshake_after_the_limit_gets_a_429_with_headers() -> None:
    limiter, sink = make_limiter()
    rule = Rule("ws", "2/minute", strategy="fixed_window", path="/ws/*")
    app = ws_app(limiter, [rule], legacy_headers=True)
    with TestClient(app, client=CLIENT) as client:
        assert echoes(client)
        assert echoes(client)
        refused = denied(client)
        assert refused.status_code == 429
        assert refused.text == LIMITED
        assert refused.headers["content-type"] == "application/json"
        assert refused.headers["content-length"] == str(len(LIMITED))
        assert refused.headers["retry-after"] == "40"
        assert refused.headers["ratelimit-policy"] == '"ws";q=2;w=60'
        assert refused.headers["ratelimit"] == '"ws";r=0;t=40'
        assert refused.headers["x-ratelimit-limit"] == "2"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert refused.headers["x-ratelimit-reset"] == "40"
        assert denied(client).status_code == 429  # a flood stays refused
        assert client.get("/").status_code == 200  # the route covers /ws only
    with TestClient(app, client=("198.51.100.1", 1)) as other:
        assert echoes(other)  # another client, another counter
    assert refusals(sink) == [
        (EventName.EXCESS_RATE_LIMIT_EXCEEDED, "blocked", "ws", False),
        (EventName.EXCESS_RATE_LIMIT_EXCEEDED, "blocked", "ws", False),
    ]
    assert sink.events[0].client_ip is not None
    assert CLIENT[0] not in sink.events[0].to_json()  # hashed, as for HTTP refusals


def test_handshakes_match_routes_as_get_requests() -> None:
    limiter, _sink = make_limiter()
    rules = [
        Rule("site", "3/minute", strategy="fixed_window"),
        # never a handshake
        Rule("posts", "1/minute", strategy="fixed_window", path="/ws/*", methods={"POST"}),
        Rule("gets", "2/minute", strategy="fixed_window", path="/api/*", methods={"get"}),
        Rule("elsewhere", "1/minute", strategy="fixed_window", path="/w"),  # /ws is not /w
    ]
    app = ws_app(limiter, rules)
    with TestClient(app, client=CLIENT) as client:
        assert echoes(client, "/ws")
        assert echoes(client, "/api/ws")
        assert echoes(client, "/api/ws")
        refused = denied(client, "/api/ws")
        # site was charged three times (3 of 3 used) and refuses; gets (2 of 2) refuses too
        assert refused.headers["ratelimit-policy"] == '"site";q=3;w=60, "gets";q=2;w=60'
        assert refused.headers["ratelimit"] == '"site";r=0;t=40, "gets";r=0;t=40'
        assert refused.headers["retry-after"] == "40"
        assert client.get("/").status_code == 429  # HTTP and handshakes share the site rule


def test_key_and_cost_functions_see_a_get_while_the_app_sees_the_servers_scope() -> None:
    limiter, _sink = make_limiter()
    seen: list[tuple[str, str]] = []

    def cost(request: RequestView) -> int:
        seen.append((request.source["type"], request.method))
        return 5 if request.method == "POST" else 2

    def key(request: RequestView) -> str | None:
        return None if request.path == "/api/ws" else "everyone"

    rule = Rule("ws", "4/minute", strategy="fixed_window", key=key, cost=cost)
    app = ws_app(limiter, [rule])
    with TestClient(app, client=CLIENT) as client:
        assert echoes(client)  # method=None: the app's scope is the server's
        assert echoes(client)
        assert denied(client).headers["ratelimit"] == '"ws";r=0;t=40'  # 2 + 2, then 2 more
        assert [echoes(client, "/api/ws") for _ in range(3)] == [True] * 3  # key None: exempt
    assert seen == [("websocket", "GET")] * 3


def test_shadow_mode_admits_and_audits() -> None:
    limiter, sink = make_limiter(shadow=True)
    app = ws_app(limiter, [Rule("ws", "1/minute", strategy="fixed_window")])
    with TestClient(app, client=CLIENT) as client:
        assert [echoes(client) for _ in range(3)] == [True] * 3
    assert refusals(sink) == [(EventName.EXCESS_RATE_LIMIT_EXCEEDED, "success", "ws", True)] * 2


def test_opting_out_lets_handshakes_through_unlimited() -> None:
    limiter, sink = make_limiter()
    app = ws_app(limiter, [Rule("ws", "1/minute", strategy="fixed_window")], websockets=False)
    with TestClient(app, client=CLIENT) as client:  # lifespan passes through too
        assert [echoes(client) for _ in range(5)] == [True] * 5
        assert client.get("/").status_code == 200
        refused = client.get("/")
        assert (refused.status_code, refused.headers["retry-after"]) == (429, "40")
    assert refusals(sink) == [(EventName.EXCESS_RATE_LIMIT_EXCEEDED, "blocked", "ws", False)]


@pytest.mark.asyncio
async def test_opting_out_passes_the_servers_messages_untouched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter, sink = make_limiter()
    app = ws_app(limiter, [Rule("ws", "1/minute")], websockets=False)
    with caplog.at_level(logging.DEBUG, logger="bastion"):
        assert [(await drive(app)).sent for _ in range(3)] == [ECHOED] * 3
    assert sink.events == []
    # Only the opt-out itself is logged, once, when Starlette builds the middleware.
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("bastion")]
    assert len(logged) == 1
    assert "websockets=False" in logged[0]


# -- without the extension: close before accept -------------------------------------------------


@pytest.mark.asyncio
async def test_without_the_extension_a_refused_handshake_is_closed_1008() -> None:
    limiter, sink = make_limiter()
    app = ws_app(limiter, [Rule("ws", "2/minute", strategy="fixed_window")])
    assert (await drive(app)).sent == ECHOED
    assert (await drive(app)).sent == ECHOED
    refused = await drive(app)
    assert refused.sent == [{"type": "websocket.close", "code": 1008, "reason": "rate limited"}]
    assert refused.received == 1  # only the connect was read: the app never ran
    assert refusals(sink) == [(EventName.EXCESS_RATE_LIMIT_EXCEEDED, "blocked", "ws", False)]
    # the same middleware answers a server that has the extension with the real response
    with_extension = await drive(app, extension=True)
    assert [m["type"] for m in with_extension.sent] == [
        "websocket.http.response.start",
        "websocket.http.response.body",
    ]
    start, body = with_extension.sent
    assert start["status"] == 429
    assert (b"retry-after", b"40") in start["headers"]
    assert (b"ratelimit", b'"ws";r=0;t=40') in start["headers"]
    assert body == {"type": "websocket.http.response.body", "body": LIMITED.encode()}


@pytest.mark.asyncio
async def test_a_client_gone_before_connect_gets_nothing() -> None:
    limiter, _sink = make_limiter()
    app = ws_app(limiter, [Rule("ws", "1/minute", strategy="fixed_window")])
    assert (await drive(app)).sent == ECHOED
    gone = Driver([{"type": "websocket.disconnect", "code": 1006}])
    await app(ws_scope(), gone.receive, gone.send)
    assert (gone.sent, gone.received) == ([], 1)


# -- backend outages ------------------------------------------------------------------------------


async def close_limiter(limiter: RateLimiter) -> None:
    """Close the limiter and the store it was given (the limiter does not own the store)."""
    await limiter.aclose()
    store: object = limiter.store
    if isinstance(store, Store):
        await store.aclose()


def outage_limiter(
    policy: str, limit: str = "100/minute"
) -> tuple[RateLimiter, RecordingAuditSink, Rule]:
    backend = RedisStore.from_url(CLOSED_PORT, socket_timeout=1, connect_timeout=1)
    limiter, sink = make_limiter(backend)
    return limiter, sink, Rule("ws", limit, on_failure=policy, strategy="fixed_window")


@pytest.mark.asyncio
async def test_fail_closed_outage_refuses_with_503_or_1013(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter, sink, rule = outage_limiter("closed")
    app = ws_app(limiter, [rule])
    try:
        with caplog.at_level(logging.WARNING, logger="bastion.security.ratelimit"):
            closed = [(await drive(app)).sent for _ in range(2)]
            answered = await drive(app, extension=True)
    finally:
        await close_limiter(limiter)
    reason = {"type": "websocket.close", "code": 1013, "reason": "service unavailable"}
    assert closed == [[reason]] * 2
    start, body = answered.sent
    assert (start["type"], start["status"]) == ("websocket.http.response.start", 503)
    assert start["headers"] == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(UNAVAILABLE)).encode()),
        (b"retry-after", b"5"),  # no decision to wait on: the outage's fixed back-off
    ]
    assert body == {"type": "websocket.http.response.body", "body": UNAVAILABLE.encode()}
    assert caplog.text.count("rate-limit store failed") == 1  # once per outage
    outage = [e for e in sink.events if e.name == "ratelimit_store_unavailable"]
    assert [(e.outcome, e.details["rule"]) for e in outage] == [("failure", "ws")]


def test_fail_closed_outage_through_the_test_client() -> None:
    limiter, _sink, rule = outage_limiter("closed")
    app = ws_app(limiter, [rule])
    with TestClient(app, client=CLIENT) as client:
        refused = denied(client)
        assert (refused.status_code, refused.text) == (503, UNAVAILABLE)
        assert refused.headers.get_list("retry-after") == ["5"]
        assert "ratelimit" not in refused.headers
        client.portal.call(close_limiter, limiter)  # type: ignore[union-attr]


@pytest.mark.asyncio
async def test_fail_open_and_fallback_outages_behave_as_for_http() -> None:
    limiter, sink, rule = outage_limiter("open", "1/minute")
    try:
        app = ws_app(limiter, [rule])
        assert [(await drive(app)).sent for _ in range(3)] == [ECHOED] * 3
    finally:
        await close_limiter(limiter)
    assert refusals(sink) == []

    limiter, sink, rule = outage_limiter("fallback", "2/minute")
    try:
        app = ws_app(limiter, [rule])
        sent = [(await drive(app)).sent for _ in range(3)]
    finally:
        await close_limiter(limiter)
    assert sent[:2] == [ECHOED] * 2  # counted in the per-process fallback
    assert sent[2] == [{"type": "websocket.close", "code": 1008, "reason": "rate limited"}]
    assert refusals(sink) == [(EventName.EXCESS_RATE_LIMIT_EXCEEDED, "blocked", "ws", False)]


@pytest.mark.asyncio
async def test_lifespan_passes_through() -> None:
    limiter, sink = make_limiter()
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        message = await receive()
        await send({"type": message["type"] + ".complete"})

    middleware = RateLimitMiddleware(app, limiter, Rule("ws", "1/minute"))
    driver = Driver([{"type": "lifespan.startup"}])
    for _ in range(2):
        await middleware({"type": "lifespan"}, driver.receive, driver.send)
        driver.incoming.append({"type": "lifespan.startup"})
    assert seen == ["lifespan", "lifespan"]
    assert driver.sent == [{"type": "lifespan.startup.complete"}] * 2
    assert sink.events == []


def test_websocket_close_is_caught_by_a_starlette_client_without_the_extension() -> None:
    """A server without the extension (the scope's extensions stripped): the client sees the
    close code and reason, the way a browser would."""
    limiter, _sink = make_limiter()
    inner = ws_app(limiter, [Rule("ws", "1/minute", strategy="fixed_window")])

    async def no_extension(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {k: v for k, v in scope.items() if k != "extensions"}
        await inner(scope, receive, send)

    with TestClient(no_extension, client=CLIENT) as client:
        assert echoes(client)
        with pytest.raises(WebSocketDisconnect) as caught, client.websocket_connect("/ws"):
            pass  # pragma: no cover - the handshake is refused
    assert not isinstance(caught.value, WebSocketDenialResponse)
    assert (caught.value.code, caught.value.reason) == (1008, "rate limited")


def test_a_real_uvicorn_server_refuses_the_handshake_over_the_limit() -> None:
    from websockets.exceptions import InvalidStatus  # noqa: PLC0415 (this test only)
    from websockets.sync.client import connect  # noqa: PLC0415

    limiter, sink = make_limiter()
    app = ws_app(limiter, [Rule("ws", "2/minute")])
    with uvicorn_thread(app, ws="websockets-sansio") as port:
        url = f"ws://127.0.0.1:{port}/ws"
        for _ in range(2):
            with connect(url, open_timeout=5) as websocket:
                websocket.send("ping")
                assert websocket.recv(timeout=5) == "ping|method=None"
        with pytest.raises(InvalidStatus) as caught:
            connect(url, open_timeout=5)
    response = caught.value.response
    assert response.status_code == 429
    # Token bucket (the default) on a frozen clock: the next handshake is due in 60 s / 2,
    # the bucket is full again in 60 s.
    assert response.headers["Retry-After"] == "30"
    assert response.headers["RateLimit"] == '"ws";r=0;t=60'
    assert response.body == LIMITED.encode()
    assert [event[0] for event in refusals(sink)] == ["excess_rate_limit_exceeded"]


def test_the_security_headers_policy_covers_a_refused_handshake() -> None:
    """protect()'s order: SecurityHeadersMiddleware outside the limiter. The 429 that refuses a
    handshake is an HTTP response like any other and carries the policy's headers."""
    limiter, _sink = make_limiter()
    inner = ws_app(limiter, [Rule("ws", "1/minute")])
    app = SecurityHeadersMiddleware(inner)
    with TestClient(app, client=CLIENT) as client:
        assert echoes(client)
        refused = denied(client)
        assert client.get("/").headers["x-frame-options"] == "DENY"
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-frame-options"] == "DENY"
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert refused.headers["cross-origin-opener-policy"] == "same-origin"
    csp = refused.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; script-src 'nonce-")
    assert "strict-transport-security" not in refused.headers  # ws://, not wss://
