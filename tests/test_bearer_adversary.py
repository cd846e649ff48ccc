"""Adversarial review of the bearer HTTP layer: requests that used to slip past a check.

Real Starlette and FastAPI apps through httpx, tests/bearer_support.py's HMAC verifier over
real memory stores (it stands in for bastion's token service until that is merged).
"""

# No ``from __future__ import annotations``: FastAPI evaluates the endpoints' annotations.

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.bearer_support import NOW, REALM, HMACVerifier, challenge, make_token
from tests.test_bearer_asgi import make_app
from tests.test_tokens_dpop import make_proof

import bastion.flask
from bastion.asgi.bearer import BearerMiddleware, principal
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.tokens.bearer import BearerChallenge, parse_authorization
from bastion.core.tokens.dpop import DPoPVerifier, access_token_hash
from bastion.core.tokens.dpop_nonce import DPoPNonces
from bastion.core.tokens.principal import BearerRequest, Principal
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.fastapi import BearerUser
from bastion.starlette import requires_token
from bastion.stores.memory import MemoryStore
from bastion.wsgi.bearer import BearerMiddleware as WSGIBearerMiddleware

JSON = {"Accept": "application/json"}


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://api.test")


@pytest.mark.asyncio
@pytest.mark.parametrize("separator", ["\t", "\x0b", ",", "\t "])
async def test_an_optional_path_refuses_a_bearer_token_after_other_whitespace(
    separator: str,
) -> None:
    # "Bearer<TAB><expired token>" was read as another scheme and passed as anonymous, so an
    # expired or revoked token on an optional path went unrefused (a plain space is refused).
    verifier = HMACVerifier(MemoryStore())
    expired = make_token(expires_at=NOW - 5)
    async with client(make_app(verifier)) as http:
        response = await http.get(
            "/public", headers={**JSON, "Authorization": f"Bearer{separator}{expired}"}
        )
        other = await http.get("/public", headers={"Authorization": "Basic\tYTpi"})
    assert response.status_code == 400
    assert response.headers["www-authenticate"] == challenge(
        "invalid_request", "The Authorization header is malformed"
    )
    assert response.json() == {
        "error": "invalid_request",
        "detail": "The Authorization header is malformed",
    }
    assert expired.split(".")[1] not in response.text
    assert other.json() == {"sub": None}  # another scheme is still the app's business


def _revoking(jti: str) -> HMACVerifier:
    """A verifier whose deny-list (a real store) holds ``jti``."""
    store = MemoryStore()
    store.sync.set("deny:" + jti, b"1")
    return HMACVerifier(store)


@pytest.mark.asyncio
async def test_a_fastapi_dependency_does_not_trust_another_verifiers_principal() -> None:
    # Two BearerUser dependencies with different verifiers on one route: the second reused the
    # principal the first had cached in the scope, so its own verifier (here: one that has the
    # token revoked) was never asked.
    lenient = BearerUser(HMACVerifier(MemoryStore()), challenge=BearerChallenge(realm=REALM))
    strict = BearerUser(_revoking("t-1"), challenge=BearerChallenge(realm=REALM))
    app = FastAPI()

    @app.get("/both", dependencies=[Depends(lenient)])
    async def both(user: Annotated[Principal, Depends(strict)]) -> dict[str, Any]:
        return {"sub": user.subject}

    @app.get("/same", dependencies=[Depends(lenient)])
    async def same(user: Annotated[Principal, Depends(lenient)]) -> dict[str, Any]:
        return {"sub": user.subject}

    async with client(app) as http:
        refused = await http.get("/both", headers={"Authorization": f"Bearer {make_token()}"})
        reused = await http.get("/same", headers={"Authorization": f"Bearer {make_token()}"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == challenge(
        "invalid_token", "The access token was revoked"
    )
    assert refused.json() == {"detail": "The access token was revoked"}
    assert reused.json() == {"sub": "alice"}
    assert len(lenient.verifier.seen) == 2  # type: ignore[union-attr]  # once per request


@pytest.mark.asyncio
async def test_a_starlette_decorator_does_not_trust_another_verifiers_principal() -> None:
    lenient = HMACVerifier(MemoryStore())
    strict = _revoking("t-1")

    @requires_token(verifier=lenient, challenge=BearerChallenge(realm=REALM))
    @requires_token(verifier=strict, challenge=BearerChallenge(realm=REALM))
    async def stats(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/stats", stats)])
    async with client(app) as http:
        response = await http.get(
            "/stats", headers={**JSON, "Authorization": f"Bearer {make_token()}"}
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge(
        "invalid_token", "The access token was revoked"
    )
    assert response.json() == {"error": "invalid_token", "detail": "The access token was revoked"}


class NonceVerifier(HMACVerifier):
    """The HMAC verifier, whose tokens must come with a real DPoP proof (``DPoPVerifier`` with
    server nonces) under the ``DPoP`` scheme."""

    def __init__(self, dpop: DPoPVerifier) -> None:
        super().__init__(MemoryStore())
        self.dpop = dpop

    def _claims(self, request: BearerRequest) -> tuple[dict[str, object], str]:
        credentials = parse_authorization(request.authorization)
        if credentials is None:
            raise TokenRejected(TokenReason.MISSING)
        plain = BearerRequest(f"Bearer {credentials.token}", None, request.method, request.url)
        claims, jti = super()._claims(plain)
        if credentials.scheme != "dpop" or request.dpop is None:
            raise TokenRejected(TokenReason.DPOP_REQUIRED)
        self.dpop.verify(
            request.dpop, method=request.method, url=request.url, access_token=credentials.token
        )
        return claims, jti


def _nonce_apps() -> tuple[DPoPNonces, list[tuple[str, Any]]]:
    """The same nonce-requiring verifier behind the ASGI middleware, a FastAPI dependency, a
    Starlette decorator, the WSGI middleware and a Flask decorator."""
    nonces = DPoPNonces(KeyRing(SecretKey.generate()), clock=FrozenClock(NOW))
    verifier = NonceVerifier(DPoPVerifier(nonces=nonces, clock=FrozenClock(NOW)))
    challenge = BearerChallenge(realm=REALM, dpop_algorithms=("ES256",), nonces=nonces)

    async def me(request: Request) -> JSONResponse:
        found = principal(request)
        return JSONResponse({"sub": None if found is None else found.subject})

    middleware = BearerMiddleware(
        Starlette(routes=[Route("/api/me", me)]), verifier, challenge=challenge
    )
    bearer = BearerUser(verifier, challenge=challenge)
    fastapi_app = FastAPI()

    @fastapi_app.get("/api/me")
    async def fastapi_me(user: Annotated[Principal, Depends(bearer)]) -> dict[str, Any]:
        return {"sub": user.subject}

    @requires_token(verifier=verifier, challenge=challenge)
    async def decorated(request: Request) -> JSONResponse:
        return JSONResponse({"sub": "alice"})

    def wsgi_me(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"sub": "alice"}']

    flask_app = Flask(__name__)
    bastion.flask.init_bearer(flask_app, verifier, challenge=challenge)

    @flask_app.get("/api/me")
    @bastion.flask.bearer_required()
    def flask_me() -> dict[str, Any]:
        return {"sub": "alice"}

    return nonces, [
        ("asgi", middleware),
        ("fastapi", fastapi_app),
        ("starlette", Starlette(routes=[Route("/api/me", decorated)])),
        ("wsgi", WSGIBearerMiddleware(wsgi_me, verifier, challenge=challenge)),
        ("flask", flask_app),
    ]


def _proof(token: str, nonce: str | None = None) -> str:
    claims: dict[str, Any] = {"htu": "https://api.test/api/me", "iat": NOW}
    claims["ath"] = access_token_hash(token)
    if nonce is not None:
        claims["nonce"] = nonce
    return make_proof(**claims)


async def _get(kind: str, app: Any, headers: dict[str, str]) -> httpx.Response:
    """GET /api/me on ``app`` (ASGI through an async client, WSGI through a sync one)."""
    if kind in {"wsgi", "flask"}:
        transport = httpx.WSGITransport(app=app)
        with httpx.Client(transport=transport, base_url="https://api.test") as http:
            return http.get("/api/me", headers=headers)  # noqa: ASYNC212 (a WSGI app is sync)
    async with client(app) as http:
        return await http.get("/api/me", headers=headers)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["asgi", "fastapi", "starlette", "wsgi", "flask"])
async def test_a_use_dpop_nonce_refusal_sends_the_nonce_so_the_client_can_retry(
    kind: str,
) -> None:
    # RFC 9449 section 9: a 401 use_dpop_nonce carries the nonce in a DPoP-Nonce header.
    # Without it, a verifier that requires server nonces refused every request for good: no
    # client could ever learn the nonce to put in its proof.
    nonces, apps = _nonce_apps()
    app = dict(apps)[kind]
    token = make_token()
    first = await _get(kind, app, {"Authorization": f"DPoP {token}", "DPoP": _proof(token)})
    nonce = first.headers.get("dpop-nonce")
    retry = await _get(kind, app, {"Authorization": f"DPoP {token}", "DPoP": _proof(token, nonce)})
    plain = await _get(kind, app, {})
    assert first.status_code == 401
    assert first.headers["www-authenticate"] == (
        f'DPoP realm="{REALM}", error="use_dpop_nonce", '
        'error_description="The DPoP proof must carry the nonce sent in the DPoP-Nonce '
        'header", algs="ES256", '
        f'Bearer realm="{REALM}"'
    )
    assert nonce == nonces.current()
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"sub": "alice"}
    assert plain.status_code == 401
    assert "dpop-nonce" not in plain.headers  # only a use_dpop_nonce refusal needs it


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["api.test/api", "api.test/api?", "api.test\\api"])
async def test_a_host_header_cannot_move_a_proofs_url_onto_another_path(host: str) -> None:
    # The request URL was "scheme://" + Host + path, with the Host as sent: a Host of
    # "api.test/api" made GET /me read as https://api.test/api/me, so a proof made for
    # /api/me was accepted at /me. A Host with '/', '?', '#', '@' or '\\' forms no URL now.
    verifier = NonceVerifier(DPoPVerifier(clock=FrozenClock(NOW)))

    async def me(request: Request) -> JSONResponse:
        found = principal(request)
        return JSONResponse({"sub": None if found is None else found.subject})

    app = BearerMiddleware(
        Starlette(routes=[Route("/me", me), Route("/api/me", me)]),
        verifier,
        challenge=BearerChallenge(realm=REALM, dpop_algorithms=("ES256",)),
    )
    token = make_token()
    async with client(app) as http:
        moved = await http.get(
            "/me",
            headers={**JSON, "Host": host, "Authorization": f"DPoP {token}", "DPoP": _proof(token)},
        )
        honest = await http.get(
            "/api/me", headers={"Authorization": f"DPoP {token}", "DPoP": _proof(token)}
        )
    assert moved.status_code == 401
    assert moved.headers["www-authenticate"] == (
        f'DPoP realm="{REALM}", error="invalid_dpop_proof", '
        'error_description="The DPoP proof is invalid", algs="ES256", '
        f'Bearer realm="{REALM}"'
    )
    assert moved.json() == {"error": "invalid_dpop_proof", "detail": "The DPoP proof is invalid"}
    assert honest.json() == {"sub": "alice"}
