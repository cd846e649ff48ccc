"""Adversarial review of the bearer HTTP layer: requests that used to slip past a check.

Real Starlette and FastAPI apps through httpx, tests/bearer_support.py's HMAC verifier over
real memory stores (it stands in for bastion's token service until that is merged).
"""

# No ``from __future__ import annotations``: FastAPI evaluates the endpoints' annotations.

from typing import Any

import httpx
import pytest
from tests.bearer_support import NOW, HMACVerifier, challenge, make_token
from tests.test_bearer_asgi import make_app

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
