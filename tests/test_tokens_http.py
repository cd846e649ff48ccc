"""The token service behind the front door, at the HTTP level, on real stores and real apps.

``Bastion(tokens=TokenPolicy(...))`` with ``protect()`` under Starlette, FastAPI and Flask:
every request carries a real access token from :class:`bastion.tokens.service.Tokens`, and each
attack asserts the exact status, ``WWW-Authenticate`` error and that no token leaks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import bastion
import bastion.asgi
import bastion.flask
from bastion import Bastion, JWTKey, JWTKeySet, KeyRing, TokenPolicy
from bastion.core.clock import FrozenClock
from bastion.core.tokens.principal import Principal
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import ConfigurationError
from bastion.fastapi import BearerUser, RequireScopes
from bastion.starlette import principal

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.core.tokens.principal import Principal
    from bastion.runtime import Runtime
    from bastion.stores.base import Store

ISSUER = "https://api.example"
NOW = 1_700_000_000.0
RING = KeyRing.from_secrets(["k" * 43])
BASE = "https://api.example"


def policy(**changes: Any) -> TokenPolicy:
    keys = JWTKeySet(JWTKey.generate("EdDSA", kid="k1"))
    options: dict[str, Any] = {"issuer": ISSUER, "keys": keys, "protect": ("/api/*",)}
    options.update(changes)
    return TokenPolicy(**options)


def config(store: Store | str, clock: FrozenClock, **changes: Any) -> Bastion:
    return Bastion(
        store=store,
        keyring=RING,
        clock=clock,
        csrf=None,
        headers="api",
        tokens=policy(**changes),
        environment="development",
    )


def starlette_app(runtime: Runtime) -> Any:
    async def me(request: Request) -> JSONResponse:
        found = principal(request)
        assert found is not None
        return JSONResponse({"sub": found.subject, "scopes": sorted(found.scopes)})

    async def write(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def public(request: Request) -> JSONResponse:
        return JSONResponse({"public": True})

    app = Starlette(
        routes=[
            Route("/api/me", me),
            Route("/api/write", write, methods=["POST"]),
            Route("/public", public),
        ]
    )
    return bastion.asgi.protect(app, runtime)


def bearer(token: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


def error_of(response: httpx.Response) -> str | None:
    header = response.headers.get("www-authenticate", "")
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name.endswith("error"):
            return value.strip('"')
    return None


async def client(runtime: Runtime) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=starlette_app(runtime)), base_url=BASE
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.mark.asyncio
async def test_an_issued_token_reaches_the_app_on_every_store(
    any_store: Store, clock: FrozenClock
) -> None:
    runtime = config(any_store, clock).build()
    pair = await runtime.tokens.issue("alice", scopes=("read",))
    async with await client(runtime) as http:
        answer = await http.get("/api/me", headers=bearer(pair.access_token))
        assert answer.status_code == 200
        assert answer.json() == {"sub": "alice", "scopes": ["read"]}
        missing = await http.get("/api/me")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        assert (await http.get("/public")).status_code == 200


@pytest.mark.asyncio
async def test_refusals_name_the_rfc_6750_error_and_leak_nothing(clock: FrozenClock) -> None:
    runtime = config("memory://", clock).build()
    tokens = runtime.tokens
    pair = await tokens.issue("alice")
    pending = tokens.issue_pending("alice")
    header, payload, signature = pair.access_token.split(".")
    forged_payload = (
        base64.urlsafe_b64encode(
            json.dumps(
                {**json.loads(base64.urlsafe_b64decode(payload + "==")), "sub": "admin"}
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    cases = {
        "two tokens": ("Bearer a b", 400, "invalid_request"),
        "oversized": ("Bearer " + "a" * 9000, 400, "invalid_request"),
        "garbage": ("Bearer not.a.token", 401, "invalid_token"),
        "forged claims": (f"Bearer {header}.{forged_payload}.{signature}", 401, "invalid_token"),
        "pending as access": (f"Bearer {pending}", 401, "invalid_token"),
        "refresh as access": (f"Bearer {pair.refresh_token}", 401, "invalid_token"),
        "bound scheme": (f"DPoP {pair.access_token}", 401, "invalid_token"),
    }
    async with await client(runtime) as http:
        for name, (value, status, error) in cases.items():
            answer = await http.get("/api/me", headers={"Authorization": value})
            assert (name, answer.status_code, error_of(answer)) == (name, status, error)
            assert pair.access_token not in answer.text
            assert pair.access_token not in str(answer.headers)


@pytest.mark.asyncio
async def test_expiry_at_the_leeway_edges(clock: FrozenClock) -> None:
    runtime = config("memory://", clock, access_lifetime=60, leeway=5).build()
    pair = await runtime.tokens.issue("alice")
    async with await client(runtime) as http:
        clock.advance(60 + 5 - 1)  # valid while now < exp + leeway (RFC 7519 4.1.4)
        assert (await http.get("/api/me", headers=bearer(pair.access_token))).status_code == 200
        clock.advance(1)
        late = await http.get("/api/me", headers=bearer(pair.access_token))
        assert (late.status_code, error_of(late)) == (401, "invalid_token")


@pytest.mark.asyncio
async def test_revoking_a_token_and_its_re_encoding(any_store: Store, clock: FrozenClock) -> None:
    runtime = config(any_store, clock).build()
    tokens = runtime.tokens
    pair = await tokens.issue("alice")
    assert await tokens.revoke(pair.access_token)
    # The same claims signed again (another encoding, same iss and jti) are refused too.
    claims = await _claims_of(runtime, pair.access_token)
    reordered = dict(reversed(list(claims.raw.items())))
    again = tokens._codec.encode(reordered, typ="at+jwt")
    assert again != pair.access_token
    async with await client(runtime) as http:
        for token in (pair.access_token, again):
            answer = await http.get("/api/me", headers=bearer(token))
            assert (answer.status_code, error_of(answer)) == (401, "invalid_token")


async def _claims_of(runtime: Runtime, token: str) -> Any:
    return runtime.tokens._codec.decode(
        token, typ="at+jwt", audience=runtime.tokens.policy.access_audience
    )


@pytest.mark.asyncio
async def test_log_out_everywhere_ends_access_tokens_and_refresh_families(
    any_store: Store, clock: FrozenClock
) -> None:
    runtime = config(any_store, clock).build()
    tokens = runtime.tokens
    pair = await tokens.issue("alice")
    other = await tokens.issue("bob")
    clock.advance(1)
    await tokens.revoke_all("alice")
    async with await client(runtime) as http:
        assert (await http.get("/api/me", headers=bearer(pair.access_token))).status_code == 401
        assert (await http.get("/api/me", headers=bearer(other.access_token))).status_code == 200
    assert pair.refresh_token is not None
    with pytest.raises(TokenRejected) as refused:
        await tokens.refresh(pair.refresh_token)
    assert refused.value.reason is TokenReason.REVOKED
    # A login checked before the revocation and issued after it does not live either.
    with pytest.raises(TokenRejected) as late:
        await tokens.issue("alice", authenticated_at=NOW)
    assert late.value.reason is TokenReason.REVOKED
    fresh = await tokens.issue("alice", authenticated_at=clock.now())
    async with await client(runtime) as http:
        assert (await http.get("/api/me", headers=bearer(fresh.access_token))).status_code == 200


@pytest.mark.asyncio
async def test_the_session_engines_revoke_all_ends_tokens_too(clock: FrozenClock) -> None:
    runtime = config("memory://", clock).build()
    pair = await runtime.tokens.issue("alice")
    clock.advance(1)
    assert runtime.sessions is not None
    await runtime.sessions.revoke_all("alice")
    async with await client(runtime) as http:
        assert (await http.get("/api/me", headers=bearer(pair.access_token))).status_code == 401


@pytest.mark.asyncio
async def test_refresh_rotates_and_reuse_revokes_the_family(
    any_store: Store, clock: FrozenClock
) -> None:
    runtime = config(any_store, clock).build()
    tokens = runtime.tokens
    first = await tokens.issue("alice", scopes=("read",))
    assert first.refresh_token is not None
    second = await tokens.refresh(first.refresh_token)
    assert second.refresh_token not in {None, first.refresh_token}
    assert second.scope == "read"
    clock.advance(60)  # past the grace window
    with pytest.raises(TokenRejected) as reused:
        await tokens.refresh(first.refresh_token)
    assert reused.value.reason is TokenReason.REUSED
    assert second.refresh_token is not None
    with pytest.raises(TokenRejected):
        await tokens.refresh(second.refresh_token)


def _dpop_proof(
    key: OKPKey, method: str, url: str, *, access: str | None = None, iat: float = NOW
) -> str:
    """A DPoP proof signed by ``key`` (joserfc's EdDSA model, used directly)."""
    claims: dict[str, object] = {"htm": method, "htu": url, "iat": int(iat)}
    claims["jti"] = str(time.time_ns())
    if access is not None:
        digest = hashlib.sha256(access.encode("ascii")).digest()
        claims["ath"] = _b64(digest)
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": dict(key.as_dict(private=False))}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = JWSRegistry.algorithms["EdDSA"].sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.mark.asyncio
async def test_dpop_bound_tokens_need_a_fresh_proof_of_the_same_key(clock: FrozenClock) -> None:
    runtime = config("memory://", clock, dpop="allowed").build()
    tokens = runtime.tokens
    key, other = OKPKey.generate_key("Ed25519"), OKPKey.generate_key("Ed25519")
    jkt = await tokens.verify_proof(
        _dpop_proof(key, "POST", f"{BASE}/token"), method="POST", url=f"{BASE}/token"
    )
    assert jkt is not None
    pair = await tokens.issue("alice", dpop_jkt=jkt)
    assert pair.token_type == "DPoP"
    access = pair.access_token
    url = f"{BASE}/api/me"
    async with await client(runtime) as http:
        as_bearer = await http.get("/api/me", headers=bearer(access))
        assert (as_bearer.status_code, error_of(as_bearer)) == (401, "invalid_token")
        proof = _dpop_proof(key, "GET", url, access=access)
        good = await http.get("/api/me", headers={**bearer(access, "DPoP"), "DPoP": proof})
        assert good.status_code == 200
        replay = await http.get("/api/me", headers={**bearer(access, "DPoP"), "DPoP": proof})
        assert (replay.status_code, error_of(replay)) == (401, "invalid_dpop_proof")
        stolen = _dpop_proof(other, "GET", url, access=access)
        wrong_key = await http.get("/api/me", headers={**bearer(access, "DPoP"), "DPoP": stolen})
        assert (wrong_key.status_code, error_of(wrong_key)) == (401, "invalid_dpop_proof")
        wrong_method = _dpop_proof(key, "POST", url, access=access)
        moved = await http.get("/api/me", headers={**bearer(access, "DPoP"), "DPoP": wrong_method})
        assert (moved.status_code, error_of(moved)) == (401, "invalid_dpop_proof")
    # The refresh family is bound too: rotating it needs a proof of the same key.
    assert pair.refresh_token is not None
    with pytest.raises(TokenRejected) as unbound:
        await tokens.refresh(pair.refresh_token)
    assert unbound.value.reason is TokenReason.DPOP_MISMATCH
    again = await tokens.refresh(pair.refresh_token, dpop_jkt=jkt)
    assert again.token_type == "DPoP"


def test_production_refuses_a_generated_signing_key() -> None:
    unsafe = Bastion(
        store="memory://", keyring=RING, tokens=TokenPolicy(issuer=ISSUER), environment="production"
    )
    with pytest.raises(ConfigurationError, match=r"tokens\.keys|TokenPolicy"):
        unsafe.build()


def test_tokens_need_a_store_and_a_policy() -> None:
    with pytest.raises(ConfigurationError, match="tokens= was given without store="):
        Bastion(tokens=TokenPolicy(issuer=ISSUER))
    with pytest.raises(ConfigurationError, match=r"runtime\.tokens needs"):
        _ = Bastion(store="memory://", keyring=RING).build().tokens


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"issuer": ""}, "tokens.issuer"),
        ({"issuer": "a b"}, "tokens.issuer"),
        ({"issuer": ISSUER, "access_lifetime": 0}, "tokens.access_lifetime"),
        ({"issuer": ISSUER, "leeway": 301}, "tokens.leeway"),
        ({"issuer": ISSUER, "max_bytes": 10**6}, "tokens.max_bytes"),
        ({"issuer": ISSUER, "dpop": "sometimes"}, "tokens.dpop"),
        ({"issuer": ISSUER, "protect": ("api",)}, "tokens.protect"),
        ({"issuer": ISSUER, "realm": 'a"b'}, "tokens.realm"),
        ({"issuer": ISSUER, "keys": "secret"}, "tokens.keys"),
    ],
)
def test_a_bad_policy_names_its_setting(options: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        TokenPolicy(**options)
    assert error.value.setting == setting


@pytest.mark.asyncio
async def test_fastapi_dependencies_on_the_real_service(clock: FrozenClock) -> None:
    runtime = config("memory://", clock, protect=()).build()
    user = BearerUser(runtime.tokens)
    app = FastAPI()

    @app.get("/me")
    async def me(found: Principal = Depends(user)) -> dict[str, str]:  # noqa: B008
        return {"sub": found.subject}

    @app.get("/admin")
    async def admin(found: Principal = RequireScopes("admin", user=user)) -> dict[str, str]:  # noqa: B008
        return {"sub": found.subject}

    plain = await runtime.tokens.issue("alice", scopes=("read",))
    boss = await runtime.tokens.issue("root", scopes=("admin",))
    transport = httpx.ASGITransport(app=bastion.asgi.protect(app, runtime))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        assert (await http.get("/me", headers=bearer(plain.access_token))).json() == {
            "sub": "alice"
        }
        denied = await http.get("/admin", headers=bearer(plain.access_token))
        assert (denied.status_code, error_of(denied)) == (403, "insufficient_scope")
        assert (await http.get("/admin", headers=bearer(boss.access_token))).status_code == 200
        assert (await http.get("/me")).status_code == 401
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes == {"BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


def test_flask_protect_with_tokens_uses_the_sync_side(tmp_path: Any) -> None:
    clock = FrozenClock(NOW)
    app = flask.Flask(__name__)

    @app.get("/api/me")
    def me() -> dict[str, object]:
        found = bastion.flask.principal()
        assert found is not None
        return {"sub": found.subject}

    runtime = bastion.flask.protect(
        app,
        Bastion(
            store=f"sqlite:///{tmp_path / 'tokens.db'}",
            keyring=RING,
            clock=clock,
            tokens=policy(),
            environment="development",
        ),
    )
    pair = runtime.tokens.issue_sync("alice")
    http = app.test_client()
    answer = http.get("/api/me", headers=bearer(pair.access_token))
    assert (answer.status_code, answer.json) == (200, {"sub": "alice"})
    assert runtime.tokens.revoke_sync(pair.access_token)
    refused = http.get("/api/me", headers=bearer(pair.access_token))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert pair.refresh_token is not None
    rotated = runtime.tokens.refresh_sync(pair.refresh_token)
    assert http.get("/api/me", headers=bearer(rotated.access_token)).status_code == 200
    runtime.close()


@pytest.mark.asyncio
async def test_a_store_outage_is_a_503_not_a_401(
    start_redis_server: Any, clock: FrozenClock
) -> None:
    server = start_redis_server()
    runtime = config(server.url, clock).build()
    pair = await runtime.tokens.issue("alice")
    server.stop()
    async with await client(runtime) as http:
        answer = await http.get("/api/me", headers=bearer(pair.access_token))
        assert answer.status_code == 503
        assert "retry-after" in answer.headers
        assert "www-authenticate" not in answer.headers
    await runtime.aclose()


@pytest.mark.asyncio
async def test_the_guide_api_on_the_store(clock: FrozenClock) -> None:
    runtime = config("memory://", clock).build()
    tokens = runtime.tokens.guide
    access = await tokens.create_access_token("alice", scopes=("read",))
    refresh = await tokens.create_refresh_token("alice")
    claims = await tokens.verify_token(access, "access")
    family = await tokens.verify_token(refresh, "refresh")
    assert getattr(claims, "subject", None) == getattr(family, "user_id", None) == "alice"
    with pytest.raises(TokenRejected) as wrong:
        await tokens.verify_token(access, "refresh")
    assert wrong.value.reason is TokenReason.MALFORMED
    with pytest.raises(TokenRejected) as kind:
        await tokens.verify_token(access, "2fa_pending")
    assert kind.value.reason in {TokenReason.WRONG_TYPE, TokenReason.WRONG_AUDIENCE}
    jti = getattr(claims, "token_id", "")
    assert not await tokens.is_token_revoked(jti, subject="alice")
    await tokens.revoke_token(jti, subject="alice")
    assert await tokens.is_token_revoked(jti, subject="alice")
    with pytest.raises(TokenRejected) as revoked:
        await tokens.verify_token(access, "access")
    assert revoked.value.reason is TokenReason.REVOKED


@pytest.mark.asyncio
async def test_a_pending_token_is_spent_once(clock: FrozenClock) -> None:
    runtime = config("memory://", clock).build()
    pending = runtime.tokens.issue_pending("alice")
    assert await runtime.tokens.complete_pending(pending) == "alice"
    with pytest.raises(TokenRejected) as again:
        await runtime.tokens.complete_pending(pending)
    assert again.value.reason is TokenReason.REVOKED
    pair = await runtime.tokens.issue("alice")
    with pytest.raises(TokenRejected) as swapped:
        await runtime.tokens.complete_pending(pair.access_token)
    assert swapped.value.reason in {TokenReason.WRONG_TYPE, TokenReason.WRONG_AUDIENCE}


def test_from_env_reads_the_issuer_and_a_private_jwks(tmp_path: Any) -> None:
    signing, older = JWTKey.generate("EdDSA", kid="new"), JWTKey.generate("ES256", kid="old")
    document = {"keys": [_private_jwk(signing), _private_jwk(older)]}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(document))
    environ = {
        "BASTION_STORE": "memory://",
        "BASTION_SECRET_KEY": "s" * 43,
        "BASTION_TOKEN_ISSUER": ISSUER,
        "BASTION_TOKEN_KEYS_FILE": str(path),
    }
    found = Bastion.from_env(environ)
    assert found.tokens is not None
    assert found.tokens.issuer == ISSUER
    keys = found.tokens.keys
    assert keys is not None
    assert keys.signing is not None
    assert keys.signing.kid == "new"
    assert "old" in keys
    with pytest.raises(ConfigurationError) as missing:
        Bastion.from_env({**environ, "BASTION_TOKEN_KEYS_FILE": "", "ENV": "production"})
    assert missing.value.setting == "BASTION_TOKEN_KEYS"
    public_only = {"keys": [signing.public_jwk()]}
    path.write_text(json.dumps(public_only))
    with pytest.raises(ConfigurationError, match="first key signs"):
        Bastion.from_env(environ)


def _private_jwk(key: JWTKey) -> dict[str, object]:
    jwk = dict(key.key.as_dict(private=True))
    jwk.update(kid=key.kid, alg=key.alg)
    return jwk


@pytest.mark.asyncio
async def test_csrf_passes_a_verified_token_without_cookies_and_nothing_else(
    clock: FrozenClock,
) -> None:
    runtime = Bastion(
        store="memory://",
        keyring=RING,
        clock=clock,
        headers="api",
        tokens=policy(),
        csrf=bastion.CSRFConfig(cookieless=("/token/*",)),
        environment="development",
    ).build()
    pair = await runtime.tokens.issue("alice")

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/api/write", ok, methods=["POST"]),
            Route("/token", ok, methods=["POST"]),
            Route("/token/{rest:path}", ok, methods=["POST"]),
            Route("/other", ok, methods=["POST"]),
        ]
    )
    transport = httpx.ASGITransport(app=bastion.asgi.protect(app, runtime))
    cross = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        token = bearer(pair.access_token)
        assert (await http.post("/api/write", headers=token)).status_code == 200
        # A verified token with cookies: the browser's request, every CSRF check applies.
        with_cookie = {**token, **cross, "Cookie": "a=b"}
        refused = await http.post("/api/write", headers=with_cookie)
        assert (refused.status_code, refused.json()["reason"]) == (403, "cross_site")
        # A bad token never reaches CSRF: the bearer layer answers first.
        assert (await http.post("/api/write", headers=bearer("x.y.z"))).status_code == 401
        # The cookieless endpoint: no cookie passes, a cookie gets the checks.
        assert (await http.post("/token")).status_code == 200
        assert (await http.post("/token/refresh")).status_code == 200
        forged = await http.post("/token", headers={**cross, "Cookie": "session=victim"})
        assert (forged.status_code, forged.json()["reason"]) == (403, "cross_site")
        # Elsewhere a request without cookies still needs a token.
        other = await http.post("/other")
        assert (other.status_code, other.json()["reason"]) == (403, "token_missing")


@pytest.mark.asyncio
@pytest.mark.parametrize("framework", ["litestar", "quart"])
async def test_litestar_and_quart_under_protect_with_real_tokens(
    framework: str, clock: FrozenClock
) -> None:
    from tests.test_bearer_frameworks import litestar_app, quart_app  # noqa: PLC0415

    runtime = config("memory://", clock).build()
    inner = litestar_app() if framework == "litestar" else quart_app()
    if framework == "quart":
        inner.asgi_app = bastion.asgi.protect(inner.asgi_app, runtime)  # type: ignore[union-attr]
        wrapped: Any = inner
    else:
        wrapped = bastion.asgi.protect(inner, runtime)
    pair = await runtime.tokens.issue("alice")
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        answer = await http.get("/api/me", headers=bearer(pair.access_token))
        assert (answer.status_code, answer.json()) == (200, {"sub": "alice"})
        await runtime.tokens.revoke(pair.access_token)
        refused = await http.get("/api/me", headers=bearer(pair.access_token))
        assert (refused.status_code, error_of(refused)) == (401, "invalid_token")
        assert (await http.get("/api/me")).status_code == 401


@pytest.mark.asyncio
async def test_parallel_refreshes_of_one_token_get_one_successor(
    any_store: Store, clock: FrozenClock
) -> None:
    import asyncio  # noqa: PLC0415

    runtime = config(any_store, clock).build()
    tokens = runtime.tokens
    pair = await tokens.issue("alice", scopes=("read",))
    assert pair.refresh_token is not None
    token = pair.refresh_token
    results = await asyncio.wait_for(
        asyncio.gather(*(tokens.refresh(token) for _ in range(8)), return_exceptions=True), 30
    )
    successors = {r.refresh_token for r in results if not isinstance(r, BaseException)}
    assert len(successors) == 1, results  # every caller within the grace window gets the same
    assert all(not isinstance(r, BaseException) for r in results), results
    (successor,) = successors
    assert successor is not None
    # The successor works once more; the original, past the grace window, revokes the family.
    newer = await tokens.refresh(successor)
    clock.advance(60)
    with pytest.raises(TokenRejected) as reused:
        await tokens.refresh(token)
    assert reused.value.reason in {TokenReason.REUSED, TokenReason.REVOKED}
    assert newer.refresh_token is not None
    with pytest.raises(TokenRejected):
        await tokens.refresh(newer.refresh_token)
    await runtime.aclose()
