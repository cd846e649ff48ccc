"""``BearerMiddleware`` (ASGI) around a real Starlette app: the exact refusals of RFC 6750.

The verifier is tests/bearer_support.py's HMAC verifier over a real store (see its docstring:
it stands in for bastion's token service until that is merged).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from tests.bearer_support import (
    CHALLENGE_MISSING,
    MALFORMED_HEADERS,
    NOW,
    REALM,
    BrokenVerifier,
    HMACVerifier,
    auth,
    challenge,
    handshake,
    make_token,
)

from bastion.asgi.bearer import PRINCIPAL_KEY, BearerMiddleware, principal
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.client import TrustedProxies
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.tokens.bearer import BearerChallenge
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request
    from starlette.websockets import WebSocket

    from bastion.testing.redis_server import RedisServer

JSON = {"Accept": "application/json"}


async def me(request: Request) -> JSONResponse:
    found = principal(request)
    return JSONResponse({"sub": None if found is None else found.subject})


async def echo_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    found = principal(websocket)
    await websocket.send_json({"sub": None if found is None else found.subject})
    await websocket.close()


def make_app(verifier: HMACVerifier, **options: Any) -> BearerMiddleware:
    app = Starlette(
        routes=[
            Route("/api/me", me),
            Route("/api/admin/stats", me),
            Route("/public", me),
            Route("/health", lambda _r: JSONResponse({"ok": True})),
            WebSocketRoute("/api/ws", echo_ws),
        ]
    )
    options.setdefault("protected", ["/api/*"])
    options.setdefault("optional", ["/public"])
    options.setdefault("scopes", {"/api/admin/*": ("admin", "read")})
    options.setdefault("challenge", BearerChallenge(realm=REALM))
    return BearerMiddleware(app, verifier, **options)


@pytest.fixture
def verifier() -> HMACVerifier:
    return HMACVerifier(MemoryStore())


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.test")


@pytest.mark.asyncio
async def test_a_valid_token_reaches_the_app_with_its_principal(verifier: HMACVerifier) -> None:
    async with client(make_app(verifier)) as http:
        response = await http.get("/api/me", headers=auth(make_token()))
    assert response.status_code == 200
    assert response.json() == {"sub": "alice"}
    seen = verifier.seen[-1]
    assert (seen.method, seen.url) == ("GET", "https://api.test/api/me")


@pytest.mark.asyncio
async def test_no_header_is_401_with_a_bare_challenge(verifier: HMACVerifier) -> None:
    async with client(make_app(verifier)) as http:
        response = await http.get("/api/me", headers=JSON)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE_MISSING
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "error": "unauthorized",
        "detail": "Authentication required: send an access token",
    }
    assert verifier.seen == []  # refused before the verifier


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "headers"), MALFORMED_HEADERS, ids=[c[0] for c in MALFORMED_HEADERS]
)
async def test_a_malformed_header_is_400_invalid_request(
    verifier: HMACVerifier, name: str, headers: list[tuple[str, str]]
) -> None:
    async with client(make_app(verifier)) as http:
        response = await http.get("/api/me", headers=[*headers, ("Accept", "application/json")])
    assert response.status_code == 400
    description = (
        "The Authorization header is too large"
        if name == "oversized"
        else "The Authorization header is malformed"
    )
    assert response.headers["www-authenticate"] == challenge("invalid_request", description)
    assert response.json() == {"error": "invalid_request", "detail": description}
    assert verifier.seen == []
    for _, value in headers:
        token = value.partition(" ")[2]
        if not token:
            continue
        assert token[:20] not in response.text
        assert token[:20] not in response.headers["www-authenticate"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "token",
    [
        make_token(key=b"x" * 32),  # forged
        make_token(expires_at=NOW - 1),  # expired
        "t1.garbage.mac",
    ],
    ids=["forged", "expired", "garbage"],
)
async def test_an_invalid_token_is_401_invalid_token(verifier: HMACVerifier, token: str) -> None:
    async with client(make_app(verifier)) as http:
        response = await http.get("/api/me", headers={**auth(token), "Accept": "text/html"})
    assert response.status_code == 401
    header = response.headers["www-authenticate"]
    assert header.startswith(f'Bearer realm="{REALM}", error="invalid_token", error_description=')
    assert response.headers["content-type"].startswith("text/plain")
    for part in token.split("."):
        assert part not in response.text
        assert part not in header


@pytest.mark.asyncio
async def test_the_expired_description_is_fixed_text(verifier: HMACVerifier) -> None:
    async with client(make_app(verifier)) as http:
        response = await http.get("/api/me", headers=auth(make_token(expires_at=NOW)))
    assert response.headers["www-authenticate"] == challenge(
        "invalid_token", "The access token expired"
    )


@pytest.mark.asyncio
async def test_a_revoked_token_is_refused(verifier: HMACVerifier) -> None:
    await verifier.store.set("deny:t-9", b"1")
    async with client(make_app(verifier)) as http:
        response = await http.get("/api/me", headers=auth(make_token(jti="t-9")))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge(
        "invalid_token", "The access token was revoked"
    )


@pytest.mark.asyncio
async def test_a_missing_scope_is_403_with_the_scopes_listed(verifier: HMACVerifier) -> None:
    async with client(make_app(verifier)) as http:
        refused = await http.get("/api/admin/stats", headers=auth(make_token(scopes=["read"])))
        allowed = await http.get(
            "/api/admin/stats", headers=auth(make_token(scopes=["read", "admin"]))
        )
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == challenge(
        "insufficient_scope", "The access token lacks a required scope", "admin read"
    )
    assert refused.json()["error"] == "insufficient_scope"
    assert allowed.status_code == 200


@pytest.mark.asyncio
async def test_a_scope_rule_protects_its_path_even_outside_protected(
    verifier: HMACVerifier,
) -> None:
    async with client(make_app(verifier, protected=[])) as http:
        response = await http.get("/api/admin/stats")
    assert response.status_code == 401


@pytest.mark.asyncio
async def test_a_dpop_bound_token_sent_as_bearer_is_401(verifier: HMACVerifier) -> None:
    token = make_token(cnf_jkt="jkt-1")
    app = make_app(verifier, challenge=BearerChallenge(realm=REALM, dpop_algorithms=("EdDSA",)))
    async with client(app) as http:
        as_bearer = await http.get("/api/me", headers=auth(token))
        as_dpop = await http.get("/api/me", headers={**auth(token, "DPoP"), "DPoP": "proof:jkt-1"})
        wrong_proof = await http.get(
            "/api/me", headers={**auth(token, "dpop"), "DPoP": "proof:other"}
        )
        two_proofs = await http.get(
            "/api/me", headers=[*auth(token, "DPoP").items(), ("DPoP", "a"), ("DPoP", "b")]
        )
        bare = await http.get("/api/me")
    assert as_bearer.status_code == 401
    assert as_bearer.headers["www-authenticate"] == (
        f'Bearer realm="{REALM}", error="invalid_token", error_description="The access token is '
        f'bound to a key: use the DPoP scheme with a DPoP proof", DPoP realm="{REALM}", '
        'algs="EdDSA"'
    )
    assert as_dpop.status_code == 200
    assert wrong_proof.status_code == 401
    assert wrong_proof.headers["www-authenticate"] == (
        f'DPoP realm="{REALM}", error="invalid_dpop_proof", error_description="The DPoP proof is '
        f'invalid", algs="EdDSA", Bearer realm="{REALM}"'
    )
    assert two_proofs.status_code == 401
    assert 'error="invalid_dpop_proof"' in two_proofs.headers["www-authenticate"]
    assert (
        bare.headers["www-authenticate"]
        == f'Bearer realm="{REALM}", DPoP realm="{REALM}", algs="EdDSA"'
    )


@pytest.mark.asyncio
async def test_the_dpop_url_ignores_forwarding_headers_of_untrusted_peers(
    verifier: HMACVerifier,
) -> None:
    forwarded = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "evil.test"}
    async with client(make_app(verifier)) as http:
        await http.get("/api/me?x=1", headers={**auth(make_token()), **forwarded})
    assert verifier.seen[-1].url == "https://api.test/api/me"
    trusted = make_app(verifier, proxies=TrustedProxies(["127.0.0.1"]))
    async with client(trusted) as http:
        await http.get("/api/caf%C3%A9", headers={**auth(make_token()), **forwarded})
    assert verifier.seen[-1].url == "http://evil.test/api/caf%C3%A9"


@pytest.mark.asyncio
async def test_optional_paths_attach_a_valid_token_and_refuse_an_invalid_one(
    verifier: HMACVerifier,
) -> None:
    async with client(make_app(verifier)) as http:
        anonymous = await http.get("/public")
        signed_in = await http.get("/public", headers=auth(make_token()))
        invalid = await http.get("/public", headers=auth(make_token(expires_at=NOW - 5)))
        malformed = await http.get("/public", headers={"Authorization": "Bearer a b"})
        other_scheme = await http.get("/public", headers={"Authorization": "Basic YTpi"})
        untouched = await http.get("/health", headers={"Authorization": "Bearer a b"})
    assert anonymous.json() == {"sub": None}
    assert signed_in.json() == {"sub": "alice"}
    assert invalid.status_code == 401
    assert malformed.status_code == 400
    assert other_scheme.json() == {"sub": None}
    assert untouched.json() == {"ok": True}


@pytest.mark.asyncio
async def test_principal_without_the_middleware_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="no BearerMiddleware"):
        principal({"type": "http", "state": {}})
    assert principal({"state": {PRINCIPAL_KEY: None}}) is None


@pytest.mark.asyncio
async def test_path_tricks_stay_protected(verifier: HMACVerifier) -> None:
    async with client(make_app(verifier)) as http:
        for path in ("/API/me", "/api/me/", "/api//me", "/api/admin/../me"):
            response = await http.get(path)
            assert response.status_code == 401, path


@pytest.mark.asyncio
async def test_a_verifier_bug_propagates(verifier: HMACVerifier) -> None:
    app = make_app(BrokenVerifier(MemoryStore()))
    async with client(app) as http:
        with pytest.raises(RuntimeError, match="verifier bug"):
            await http.get("/api/me", headers=auth(make_token()))


def test_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="protected"):
        BearerMiddleware(me, HMACVerifier(MemoryStore()), protected=["api/*"])
    with pytest.raises(ConfigurationError, match="scopes"):
        BearerMiddleware(me, HMACVerifier(MemoryStore()), scopes={"/a": ["has space"]})
    with pytest.raises(ConfigurationError, match="max_header_bytes"):
        BearerMiddleware(me, HMACVerifier(MemoryStore()), max_header_bytes=0)
    with pytest.raises(ConfigurationError, match="realm"):
        BearerChallenge(realm="a\nb")
    with pytest.raises(ConfigurationError, match="dpop_algorithms"):
        BearerChallenge(dpop_algorithms=("none",))


def test_the_realm_is_quoted_and_escaped() -> None:
    from bastion.core.tokens.reasons import TokenReason  # noqa: PLC0415

    header = BearerChallenge(realm='a "b" \\c').header(TokenReason.MISSING)
    assert header == 'Bearer realm="a \\"b\\" \\\\c"'


@pytest.mark.asyncio
@pytest.mark.redis
async def test_a_store_outage_is_503_with_retry_after(
    start_redis_server: Callable[..., RedisServer],
) -> None:
    server = start_redis_server()
    store = RedisStore.from_url(server.url, socket_timeout=1.0, connect_timeout=1.0)
    token = make_token()
    try:
        async with client(make_app(HMACVerifier(store))) as http:
            assert (await http.get("/api/me", headers=auth(token))).status_code == 200
            server.stop()
            response = await http.get("/api/me", headers={**auth(token), **JSON})
    finally:
        await store.aclose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "www-authenticate" not in response.headers
    assert response.json()["error"] == "token_store_unavailable"
    assert token.split(".")[1] not in response.text


# -- WebSocket handshakes, driven as raw ASGI --------------------------------------------------


@pytest.mark.asyncio
async def test_a_websocket_without_a_token_is_refused_before_accept(verifier: HMACVerifier) -> None:
    app = make_app(verifier)
    closed = await handshake(app, [], extension=False)
    assert closed == [{"type": "websocket.close", "code": 1008, "reason": ""}]
    denied = await handshake(app, [], extension=True)
    assert denied[0]["type"] == "websocket.http.response.start"
    assert denied[0]["status"] == 401
    assert (b"www-authenticate", CHALLENGE_MISSING.encode()) in denied[0]["headers"]


@pytest.mark.asyncio
async def test_a_websocket_with_a_token_is_accepted(verifier: HMACVerifier) -> None:
    token = make_token().encode()
    sent = await handshake(
        make_app(verifier), [(b"authorization", b"Bearer " + token)], extension=False
    )
    assert sent[0]["type"] == "websocket.accept"
    assert json.loads(sent[1]["text"]) == {"sub": "alice"}
    assert verifier.seen[-1].method == "GET"
    assert verifier.seen[-1].url == "https://api.test/api/ws"


@pytest.mark.asyncio
async def test_refusals_the_middleware_decides_are_audited_without_the_token(
    verifier: HMACVerifier,
) -> None:
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(NOW), sink)
    token = make_token(scopes=["read"], jti="t-77")
    async with client(make_app(verifier, auditor=auditor)) as http:
        await http.get("/api/me")  # no credentials: not an event
        await http.get("/api/me", headers=auth(make_token(key=b"x" * 32)))  # the verifier's
        await http.get("/api/me", headers={"Authorization": "Bearer a b"})
        await http.get("/api/admin/stats", headers=auth(token))
    assert sink.names() == ["input_validation_fail", "authz_fail"]
    malformed, scope = (event.to_dict() for event in sink.events)
    assert malformed["details"] == {"reason": "malformed_header", "path": "/api/me"}
    assert scope["details"] == {
        "reason": "insufficient_scope",
        "path": "/api/admin/stats",
        "scopes": "admin read",
        "token_id": "t-77",
    }
    assert scope["user"] is not None
    for event in sink.events:
        text = json.dumps(event.to_dict())
        for part in token.split("."):
            assert part not in text
