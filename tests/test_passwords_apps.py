"""Login examples as real apps: FastAPI (policy, hashing, throttling, API keys, SQLite store)
and Flask (policy and hashing; the WSGI side of the throttle waits for the sync store driver).

These are the README's examples, kept honest by running them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import httpx
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from flask import Flask, request

from bastion.apikeys import ApiKeyManager, ApiKeyResult, api_key_from_headers
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.engine.throttle import LoginOutcome, LoginThrottle
from bastion.errors import PasswordRejected
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher, default_policy
from bastion.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from bastion.core.passwords import PasswordPolicy

GOOD = "tangerine-ocelot-violin-harbour"


def require_scope(scope: str) -> Callable[..., Awaitable[ApiKeyResult]]:
    """A FastAPI dependency: the request's API key must be valid and grant ``scope``."""

    async def dependency(
        request: Request,
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> ApiKeyResult:
        api_keys: ApiKeyManager = request.app.state.api_keys
        token = api_key_from_headers(x_api_key=x_api_key, authorization=authorization)
        result = await api_keys.verify(token, required_scope=scope)
        if not result.ok:
            raise HTTPException(result.http_status, detail=result.status.value)
        return result

    return dependency


def make_fastapi_app(
    store: SQLiteStore, keyring: KeyRing, clock: FrozenClock, policy: PasswordPolicy
) -> FastAPI:
    hasher = PasswordHasher(TEST_ONLY_PROFILE)  # tests only: use PasswordHasher() in production
    throttle = LoginThrottle(store, keyring, clock=clock)
    api_keys = ApiKeyManager(store, keyring, clock=clock)
    users: dict[str, str] = {}  # user name -> password hash: the app's own user table
    app = FastAPI()
    app.state.api_keys = api_keys

    @app.exception_handler(PasswordRejected)
    async def rejected(request: Request, error: PasswordRejected) -> JSONResponse:
        return JSONResponse(
            {"error": "password_rejected", "reasons": list(error.reasons)}, status_code=400
        )

    @app.post("/signup")
    async def signup(
        username: Annotated[str, Form()], password: Annotated[str, Form()]
    ) -> JSONResponse:
        result = policy.check(password, user_inputs=(username,))
        if not result.ok:
            return JSONResponse(
                {"errors": list(result.messages), "codes": list(result.codes)}, status_code=400
            )
        users[username.casefold()] = await hasher.ahash(password)
        return JSONResponse({"created": username}, status_code=201)

    @app.post("/login")
    async def login(
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
        x_client_ip: Annotated[str, Header()] = "127.0.0.1",  # stands in for the peer address
    ) -> JSONResponse:
        stored = users.get(username.casefold())

        async def verify() -> bool:
            outcome = await hasher.averify_and_update(stored, password)  # None: equal cost
            if outcome.new_hash is not None:
                users[username.casefold()] = outcome.new_hash
            return outcome.valid

        attempt = await throttle.attempt(username, x_client_ip, verify)
        if attempt.outcome is LoginOutcome.THROTTLED:
            return JSONResponse(
                {"error": "too_many_attempts"},
                status_code=429,
                headers={"Retry-After": attempt.decision.retry_after_header},
            )
        if not attempt.ok:
            return JSONResponse({"error": "invalid_credentials"}, status_code=401)
        return JSONResponse({"user": username})  # then: session.login(...) rotates the ID

    @app.get("/posts")
    async def list_posts(
        key: Annotated[ApiKeyResult, Depends(require_scope("posts:read"))],
    ) -> dict[str, object]:
        assert key.record is not None
        return {"owner": key.record.owner, "posts": []}

    @app.post("/posts")
    async def create_post(
        key: Annotated[ApiKeyResult, Depends(require_scope("posts:write"))],
    ) -> JSONResponse:
        return JSONResponse({"created": True}, status_code=201)

    return app


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return default_policy(site_words=("bastion",))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest_asyncio.fixture
async def store(tmp_path: Path, clock: FrozenClock) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "app.db", clock=clock)
    yield opened
    await opened.aclose()


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest_asyncio.fixture
async def client(
    store: SQLiteStore, keyring: KeyRing, clock: FrozenClock, policy: PasswordPolicy
) -> AsyncIterator[httpx.AsyncClient]:
    app = make_fastapi_app(store, keyring, clock, policy)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        http.app = app  # type: ignore[attr-defined]
        yield http


@pytest.mark.asyncio
async def test_fastapi_signup_refuses_weak_passwords_with_reasons(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/signup", data={"username": "alice", "password": "password"})
    assert response.status_code == 400
    body = response.json()
    assert body["codes"] == ["too_short", "blocklisted"]
    assert body["errors"][0] == "Use at least 15 characters."
    response = await client.post(
        "/signup", data={"username": "alice", "password": "alice-and-her-long-password"}
    )
    assert response.status_code == 400
    assert response.json()["codes"] == ["context_word"]
    response = await client.post("/signup", data={"username": "alice", "password": GOOD})
    assert response.status_code == 201


@pytest.mark.asyncio
async def test_fastapi_login_throttles_the_attacker_not_the_victim(
    client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    await client.post("/signup", data={"username": "alice", "password": GOOD})
    attacker = {"x-client-ip": "198.51.100.7"}
    for _ in range(6):
        response = await client.post(
            "/login", data={"username": "ALICE", "password": "guess"}, headers=attacker
        )
        assert response.status_code == 401
        assert response.json() == {"error": "invalid_credentials"}
    response = await client.post(
        "/login", data={"username": "alice", "password": GOOD}, headers=attacker
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json() == {"error": "too_many_attempts"}
    victim = {"x-client-ip": "203.0.113.20"}
    response = await client.post(
        "/login", data={"username": "alice", "password": GOOD}, headers=victim
    )
    assert response.status_code == 200
    assert response.json() == {"user": "alice"}
    unknown = await client.post("/login", data={"username": "nobody", "password": GOOD})
    assert unknown.status_code == 401
    huge = await client.post("/login", data={"username": "alice", "password": "x" * 1_000_000})
    assert huge.status_code == 400
    assert huge.json() == {"error": "password_rejected", "reasons": ["too_long"]}


@pytest.mark.asyncio
async def test_fastapi_api_keys_401_and_403(client: httpx.AsyncClient, clock: FrozenClock) -> None:
    api_keys: ApiKeyManager = client.app.state.api_keys  # type: ignore[attr-defined]
    reader = await api_keys.create("alice", scopes=["posts:read"], expires_in=3600)
    response = await client.get("/posts", headers={"x-api-key": reader.token})
    assert response.status_code == 200
    assert response.json() == {"owner": "alice", "posts": []}
    bearer = await client.get("/posts", headers={"authorization": f"Bearer {reader.token}"})
    assert bearer.status_code == 200
    forbidden = await client.post("/posts", headers={"x-api-key": reader.token})
    assert forbidden.status_code == 403
    assert forbidden.json() == {"detail": "insufficient_scope"}
    garbled = await client.get("/posts", headers={"x-api-key": reader.token[:-1] + "0"})
    assert garbled.status_code == 401
    assert garbled.json() == {"detail": "malformed"}
    missing = await client.get("/posts")
    assert missing.status_code == 401
    assert missing.json() == {"detail": "missing"}
    clock.advance(3600)
    expired = await client.get("/posts", headers={"x-api-key": reader.token})
    assert expired.status_code == 401
    assert expired.json() == {"detail": "expired"}
    writer = await api_keys.create("bob", scopes=["posts:*"])
    assert await api_keys.revoke(writer.record.key_id)
    revoked = await client.post("/posts", headers={"x-api-key": writer.token})
    assert revoked.status_code == 401
    assert revoked.json() == {"detail": "revoked"}


def make_flask_app(policy: PasswordPolicy) -> Flask:
    hasher = PasswordHasher(TEST_ONLY_PROFILE)  # tests only: use PasswordHasher() in production
    users: dict[str, str] = {}
    app = Flask(__name__)

    @app.post("/signup")
    def signup() -> tuple[dict[str, object], int]:
        username, password = request.form["username"], request.form["password"]
        result = policy.check(password, user_inputs=(username,))
        if not result.ok:
            return {"errors": list(result.messages)}, 400
        users[username.casefold()] = hasher.hash(password)
        return {"created": username}, 201

    @app.post("/login")
    def login() -> tuple[dict[str, object], int]:
        username, password = request.form["username"], request.form["password"]
        outcome = hasher.verify_and_update(users.get(username.casefold()), password)
        if not outcome.valid:
            return {"error": "invalid_credentials"}, 401
        if outcome.new_hash is not None:
            users[username.casefold()] = outcome.new_hash
        return {"user": username}, 200

    @app.errorhandler(PasswordRejected)
    def rejected(error: PasswordRejected) -> tuple[dict[str, object], int]:
        return {"error": "password_rejected", "reasons": list(error.reasons)}, 400

    return app


def test_flask_signup_and_login(policy: PasswordPolicy) -> None:
    client = make_flask_app(policy).test_client()
    weak = client.post("/signup", data={"username": "bob", "password": "qwertyuiop"})
    assert weak.status_code == 400
    assert weak.get_json()["errors"][0] == "Use at least 15 characters."
    assert client.post("/signup", data={"username": "bob", "password": GOOD}).status_code == 201
    ok = client.post("/login", data={"username": "Bob", "password": GOOD})  # case-blind names
    assert ok.status_code == 200
    bad = client.post("/login", data={"username": "bob", "password": GOOD + "x"})
    assert bad.status_code == 401
    assert bad.get_json() == {"error": "invalid_credentials"}
    huge = client.post("/login", data={"username": "bob", "password": "x" * 1_000_000})
    assert huge.status_code == 400
    assert huge.get_json() == {"error": "password_rejected", "reasons": ["too_long"]}
