"""Adversarial review of the bearer HTTP layer: requests that used to slip past a check.

Real Starlette and FastAPI apps through httpx, tests/bearer_support.py's HMAC verifier over
real memory stores (it stands in for bastion's token service until that is merged).
"""

# No ``from __future__ import annotations``: FastAPI evaluates the endpoints' annotations.

from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.bearer_support import NOW, REALM, HMACVerifier, challenge, make_token
from tests.test_bearer_asgi import make_app

from bastion.core.tokens.bearer import BearerChallenge
from bastion.core.tokens.principal import Principal
from bastion.fastapi import BearerUser
from bastion.starlette import requires_token
from bastion.stores.memory import MemoryStore

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
