"""FastAPI's ``BearerUser`` and ``RequireScopes``: refusals, the OpenAPI document, the middleware.

The verifier is tests/bearer_support.py's HMAC verifier over a real store (it stands in for
bastion's token service until that is merged).
"""

# No ``from __future__ import annotations``: FastAPI evaluates the endpoints' annotations,
# which name the local ``bearer``.

from typing import TYPE_CHECKING, Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, WebSocket
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
from bastion.core.tokens.principal import Principal
from bastion.errors import ConfigurationError
from bastion.fastapi import BearerUser, RequireScopes
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.testing.redis_server import RedisServer

CHALLENGE = BearerChallenge(realm=REALM)


def make_app(verifier: HMACVerifier | None) -> FastAPI:
    bearer = BearerUser(verifier, challenge=CHALLENGE)
    app = FastAPI()

    @app.get("/me")
    async def me(user: Annotated[Principal, Depends(bearer)]) -> dict[str, Any]:
        return {"sub": user.subject}

    @app.get("/admin")
    async def admin(
        user: Annotated[Principal, RequireScopes("admin", "read", user=bearer)],
    ) -> dict[str, Any]:
        return {"sub": user.subject}

    @app.post("/posts", dependencies=[RequireScopes("posts:write", user=bearer)])
    async def write() -> dict[str, Any]:
        return {"ok": True}

    @app.websocket("/api/ws")
    async def socket(websocket: WebSocket, user: Annotated[Principal, Depends(bearer)]) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": user.subject})
        await websocket.close()

    @app.get("/open")
    async def open_route() -> dict[str, Any]:
        return {"ok": True}

    return app


@pytest.fixture
def verifier() -> HMACVerifier:
    return HMACVerifier(MemoryStore())


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.test")


def test_the_openapi_document_names_the_scheme_and_the_scopes(verifier: HMACVerifier) -> None:
    document = make_app(verifier).openapi()
    assert document["components"]["securitySchemes"] == {
        "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    paths = document["paths"]
    assert paths["/me"]["get"]["security"] == [{"BearerAuth": []}]
    assert paths["/admin"]["get"]["security"] == [{"BearerAuth": ["admin", "read"]}]
    assert paths["/posts"]["post"]["security"] == [{"BearerAuth": ["posts:write"]}]
    assert "security" not in paths["/open"]["get"]
    # the dependency's own parameters (connection, security_scopes) are not request parameters
    assert "parameters" not in paths["/me"]["get"]


@pytest.mark.asyncio
async def test_a_valid_token_is_the_principal(verifier: HMACVerifier) -> None:
    async with client(make_app(verifier)) as http:
        me = await http.get("/me", headers=auth(make_token()))
        admin = await http.get("/admin", headers=auth(make_token(scopes=["admin", "read"])))
    assert me.json() == {"sub": "alice"}
    assert admin.json() == {"sub": "alice"}
    assert verifier.seen[-1].url == "https://api.test/admin"


@pytest.mark.asyncio
async def test_no_token_is_401_with_a_bare_challenge(verifier: HMACVerifier) -> None:
    async with client(make_app(verifier)) as http:
        response = await http.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE_MISSING
    assert response.json() == {"detail": "Authentication required: send an access token"}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "headers"), MALFORMED_HEADERS, ids=[c[0] for c in MALFORMED_HEADERS]
)
async def test_a_malformed_header_is_400(
    verifier: HMACVerifier, name: str, headers: list[tuple[str, str]]
) -> None:
    async with client(make_app(verifier)) as http:
        response = await http.get("/me", headers=headers)
    assert response.status_code == 400
    what = "too large" if name == "oversized" else "malformed"
    assert response.headers["www-authenticate"] == challenge(
        "invalid_request", f"The Authorization header is {what}"
    )
    assert verifier.seen == []


@pytest.mark.asyncio
async def test_invalid_tokens_and_missing_scopes(verifier: HMACVerifier) -> None:
    forged = make_token(key=b"q" * 32)
    bound = make_token(cnf_jkt="k")
    async with client(make_app(verifier)) as http:
        invalid = await http.get("/me", headers=auth(forged))
        as_bearer = await http.get("/me", headers=auth(bound))
        scope = await http.post("/posts", headers=auth(make_token(scopes=["read"])))
    assert invalid.status_code == 401
    assert invalid.headers["www-authenticate"] == challenge(
        "invalid_token", "The access token is invalid"
    )
    for part in forged.split("."):
        assert part not in invalid.text
    assert as_bearer.status_code == 401
    assert scope.status_code == 403
    assert scope.headers["www-authenticate"] == challenge(
        "insufficient_scope", "The access token lacks a required scope", "posts:write"
    )


@pytest.mark.asyncio
async def test_behind_the_middleware_the_principal_is_reused(verifier: HMACVerifier) -> None:
    app = BearerMiddleware(
        make_app(None), verifier, protected=["/me", "/admin"], optional=[], challenge=CHALLENGE
    )
    async with client(app) as http:
        me = await http.get("/me", headers=auth(make_token()))
        scope = await http.get("/admin", headers=auth(make_token()))
        refused = await http.get("/me", headers={"Accept": "application/json"})
    assert me.json() == {"sub": "alice"}
    assert len(verifier.seen) == 2  # once per request, by the middleware
    assert scope.status_code == 403
    assert 'scope="admin read"' in scope.headers["www-authenticate"]
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"  # the middleware's body


@pytest.mark.asyncio
async def test_without_verifier_or_middleware_it_is_a_setup_error() -> None:
    async with client(make_app(None)) as http:
        with pytest.raises(ConfigurationError, match="without a verifier"):
            await http.get("/me", headers=auth(make_token()))


def test_bad_scopes_are_refused_at_definition() -> None:
    with pytest.raises(ConfigurationError, match="scope"):
        RequireScopes('a"b')


@pytest.mark.asyncio
@pytest.mark.redis
async def test_a_store_outage_is_503(start_redis_server: "Callable[..., RedisServer]") -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    token = make_token()
    try:
        async with client(make_app(HMACVerifier(store))) as http:
            assert (await http.get("/me", headers=auth(token))).status_code == 200
            server.stop()
            response = await http.get("/me", headers=auth(token))
    finally:
        await store.aclose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "www-authenticate" not in response.headers
    assert token.split(".")[1] not in response.text


@pytest.mark.asyncio
async def test_a_websocket_dependency_refuses_before_accept(verifier: HMACVerifier) -> None:
    app = make_app(verifier)
    token = make_token().encode()
    accepted = await handshake(app, [(b"authorization", b"Bearer " + token)], extension=False)
    assert accepted[0]["type"] == "websocket.accept"
    closed = await handshake(app, [], extension=False)
    assert closed[0]["type"] == "websocket.close"
    assert closed[0]["code"] == 1008


@pytest.mark.asyncio
async def test_a_missing_scope_is_audited(verifier: HMACVerifier) -> None:
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(NOW), sink)
    bearer = BearerUser(verifier, challenge=CHALLENGE, auditor=auditor)
    app = FastAPI()

    @app.get("/admin", dependencies=[RequireScopes("admin", user=bearer)])
    async def admin() -> dict[str, Any]:
        return {}

    async with client(app) as http:
        response = await http.get("/admin", headers=auth(make_token(jti="t-3")))
    assert response.status_code == 403
    assert sink.names() == ["authz_fail"]
    assert sink.events[0].to_dict()["details"] == {
        "reason": "insufficient_scope",
        "path": "/admin",
        "scopes": "admin",
        "token_id": "t-3",
    }
