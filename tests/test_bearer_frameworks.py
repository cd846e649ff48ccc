"""Access tokens under Starlette (``requires_token``), Litestar and Quart (``BearerMiddleware``
with scope rules, ``principal(request)``), through httpx against the real frameworks.

The verifier is tests/bearer_support.py's HMAC verifier over a real store (it stands in for
bastion's token service until that is merged).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest
import quart
from litestar import Litestar, Request, get
from starlette.applications import Starlette
from starlette.endpoints import HTTPEndpoint
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from tests.bearer_support import (
    CHALLENGE_MISSING,
    MALFORMED_HEADERS,
    NOW,
    REALM,
    HMACVerifier,
    auth,
    challenge,
    handshake,
    make_token,
)

from bastion.asgi.bearer import BearerMiddleware
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.tokens.bearer import BearerChallenge
from bastion.errors import ConfigurationError
from bastion.starlette import principal, requires_token
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request as StarletteRequest
    from starlette.websockets import WebSocket

    from bastion.asgi.types import ASGIApp
    from bastion.testing.redis_server import RedisServer

CHALLENGE = BearerChallenge(realm=REALM)
JSON = {"Accept": "application/json"}
ADMIN = ("admin", "read")


def starlette_app(verifier: HMACVerifier | None) -> Starlette:
    @requires_token(verifier=verifier, challenge=CHALLENGE)
    async def me(request: StarletteRequest) -> JSONResponse:
        found = principal(request)
        return JSONResponse({"sub": None if found is None else found.subject})

    @requires_token(*ADMIN, verifier=verifier, challenge=CHALLENGE)
    async def admin(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"sub": principal(request).subject})  # type: ignore[union-attr]

    class Posts(HTTPEndpoint):
        @requires_token("posts:write", verifier=verifier, challenge=CHALLENGE)
        async def post(self, request: StarletteRequest) -> JSONResponse:
            return JSONResponse({"ok": True})

    @requires_token(verifier=verifier, challenge=CHALLENGE)
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": principal(websocket).subject})  # type: ignore[union-attr]
        await websocket.close()

    return Starlette(
        routes=[
            Route("/api/me", me),
            Route("/api/admin", admin),
            Route("/api/posts", Posts),
            WebSocketRoute("/api/ws", socket),
        ]
    )


def litestar_app() -> Litestar:
    @get("/api/me")
    async def me(request: Request[Any, Any, Any]) -> dict[str, Any]:
        found = principal(request)
        return {"sub": None if found is None else found.subject}

    @get("/api/admin")
    async def admin(request: Request[Any, Any, Any]) -> dict[str, Any]:
        return {"sub": principal(request).subject}  # type: ignore[union-attr]

    return Litestar(route_handlers=[me, admin])


def quart_app() -> quart.Quart:
    app = quart.Quart(__name__)

    @app.get("/api/me")
    async def me() -> dict[str, Any]:
        found = principal(quart.request)
        return {"sub": None if found is None else found.subject}

    @app.get("/api/admin")
    async def admin() -> dict[str, Any]:
        return {"sub": principal(quart.request).subject}  # type: ignore[union-attr]

    return app


FRAMEWORKS = ["starlette", "starlette-middleware", "litestar", "quart"]


def build(framework: str, verifier: HMACVerifier) -> ASGIApp:
    if framework == "starlette":
        return starlette_app(verifier)
    inner: ASGIApp = {
        "starlette-middleware": lambda: starlette_app(None),
        "litestar": litestar_app,
        "quart": quart_app,
    }[framework]()
    return BearerMiddleware(
        inner, verifier, protected=["/api/*"], scopes={"/api/admin": ADMIN}, challenge=CHALLENGE
    )


@pytest.fixture
def verifier() -> HMACVerifier:
    return HMACVerifier(MemoryStore())


def client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.test")


@pytest.mark.asyncio
@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_exact_refusals(framework: str, verifier: HMACVerifier) -> None:
    forged = make_token(key=b"f" * 32)
    async with client(build(framework, verifier)) as http:
        ok = await http.get("/api/me", headers=auth(make_token()))
        missing = await http.get("/api/me", headers=JSON)
        invalid = await http.get("/api/me", headers={**auth(forged), **JSON})
        bound = await http.get("/api/me", headers=auth(make_token(cnf_jkt="k")))
        scope = await http.get("/api/admin", headers={**auth(make_token()), **JSON})
        admin = await http.get("/api/admin", headers=auth(make_token(scopes=ADMIN)))
    assert ok.status_code == 200
    assert ok.json() == {"sub": "alice"}
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == CHALLENGE_MISSING
    assert missing.json()["error"] == "unauthorized"
    assert invalid.status_code == 401
    assert invalid.headers["www-authenticate"] == challenge(
        "invalid_token", "The access token is invalid"
    )
    assert invalid.json() == {"error": "invalid_token", "detail": "The access token is invalid"}
    for part in forged.split("."):
        assert part not in invalid.text
    assert bound.status_code == 401
    assert scope.status_code == 403
    assert scope.headers["www-authenticate"] == challenge(
        "insufficient_scope", "The access token lacks a required scope", "admin read"
    )
    assert admin.json() == {"sub": "alice"}


@pytest.mark.asyncio
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(
    ("name", "headers"), MALFORMED_HEADERS, ids=[c[0] for c in MALFORMED_HEADERS]
)
async def test_malformed_headers_are_400(
    framework: str, verifier: HMACVerifier, name: str, headers: list[tuple[str, str]]
) -> None:
    async with client(build(framework, verifier)) as http:
        response = await http.get("/api/me", headers=headers)
    assert response.status_code == 400
    what = "too large" if name == "oversized" else "malformed"
    assert response.headers["www-authenticate"] == challenge(
        "invalid_request", f"The Authorization header is {what}"
    )
    assert verifier.seen == []


@pytest.mark.asyncio
async def test_an_http_endpoint_method_is_guarded(verifier: HMACVerifier) -> None:
    async with client(starlette_app(verifier)) as http:
        refused = await http.post("/api/posts", headers=auth(make_token()))
        allowed = await http.post("/api/posts", headers=auth(make_token(scopes=["posts:write"])))
    assert refused.status_code == 403
    assert 'scope="posts:write"' in refused.headers["www-authenticate"]
    assert allowed.json() == {"ok": True}


@pytest.mark.asyncio
async def test_a_websocket_endpoint_is_refused_before_accept(verifier: HMACVerifier) -> None:
    app = starlette_app(verifier)
    token = make_token().encode()
    accepted = await handshake(app, [(b"authorization", b"Bearer " + token)], extension=False)
    assert accepted[0]["type"] == "websocket.accept"
    assert accepted[1]["text"] == '{"sub":"alice"}'
    closed = await handshake(app, [], extension=False)
    assert closed == [{"type": "websocket.close", "code": 1008, "reason": ""}]
    denied = await handshake(app, [], extension=True)
    assert denied[0]["type"] == "websocket.http.response.start"
    assert denied[0]["status"] == 401
    assert (b"www-authenticate", CHALLENGE_MISSING.encode()) in denied[0]["headers"]


@pytest.mark.asyncio
async def test_requires_token_without_verifier_or_middleware_is_a_setup_error() -> None:
    async with client(starlette_app(None)) as http:
        with pytest.raises(ConfigurationError, match="without a verifier"):
            await http.get("/api/me", headers=auth(make_token()))


@pytest.mark.asyncio
@pytest.mark.redis
@pytest.mark.parametrize("framework", ["starlette", "litestar", "quart"])
async def test_a_store_outage_is_503(
    start_redis_server: Callable[..., RedisServer], framework: str
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    token = make_token()
    try:
        async with client(build(framework, HMACVerifier(store))) as http:
            assert (await http.get("/api/me", headers=auth(token))).status_code == 200
            server.stop()
            response = await http.get("/api/me", headers={**auth(token), **JSON})
    finally:
        await store.aclose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"] == "token_store_unavailable"
    assert token.split(".")[1] not in response.text


@pytest.mark.asyncio
async def test_requires_token_audits_a_malformed_header(verifier: HMACVerifier) -> None:
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(NOW), sink)

    @requires_token(verifier=verifier, auditor=auditor)
    async def me(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({})

    async with client(Starlette(routes=[Route("/me", me)])) as http:
        response = await http.get("/me", headers={"Authorization": "Bearer a b"})
    assert response.status_code == 400
    assert sink.names() == ["input_validation_fail"]
    assert sink.events[0].to_dict()["details"] == {"reason": "malformed_header", "path": "/me"}
