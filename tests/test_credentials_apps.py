"""The README's login examples as real apps, one FastAPI (async) and one Flask (WSGI, sync
store side, no event loop), each on a real SQLite file and on Redis.

Both apps offer the same routes:

``POST /signup``  the NIST policy check, then Argon2id hashing (400 with reasons when refused)
``POST /login``   the login throttle around ``verify_and_update`` (401 wrong, 429 throttled
                  with ``Retry-After``, 400 for a password over the length cap)
``GET /posts``    needs an API key with ``posts:read``; ``POST /posts`` needs ``posts:write``
``GET /keys``     needs ``keys:read``: lists the key owner's keys (the per-owner index)

Every attack case from the credentials issue asserts the exact status and body.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import unicodedata
from typing import TYPE_CHECKING, Annotated, Any

import argon2
import httpx
import pytest
import pytest_asyncio
from fastapi import Depends, FastAPI, Form, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from flask import Flask, g, request

from bastion.apikeys import APIKeyStatus, api_key_from_headers
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.throttle import normalize_username
from bastion.engine.apikeys import APIKeyManager, APIKeyResult
from bastion.engine.throttle import LoginOutcome, LoginThrottle
from bastion.errors import PasswordRejected
from bastion.passwords import PasswordHasher, default_policy
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
    from pathlib import Path

    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from bastion.core.passwords import PasswordPolicy
    from bastion.stores.base import Store

GOOD = "tangerine-ocelot-violin-harbour"
ACCENTED = "crème-brûlée-ocelot-violin"  # NFC here; typed as NFD on another keyboard
ATTACKER = "198.51.100.7"
VICTIM_IP = "203.0.113.20"
UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="api"'}


class CountingArgon2(argon2.PasswordHasher):
    """The real argon2-cffi hasher at test-only parameters, counting verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1, hash_len=16, salt_len=16)
        self.verifies = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002
        with self._lock:
            self.verifies += 1
        return super().verify(hash, password)


# --- the FastAPI app (README example) ---------------------------------------------------------


def require_scope(scope: str) -> Callable[..., Awaitable[APIKeyResult]]:
    """A FastAPI dependency: the request's API key must be valid and grant ``scope``."""

    async def dependency(
        request: Request,
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> APIKeyResult:
        api_keys: APIKeyManager = request.app.state.api_keys
        token = api_key_from_headers(x_api_key=x_api_key, authorization=authorization)
        client_ip = request.client.host if request.client else None
        result = await api_keys.verify(token, required_scope=scope, client_ip=client_ip)
        if not result.ok:
            headers = UNAUTHORIZED if result.http_status == 401 else None
            raise HTTPException(result.http_status, detail=result.status.value, headers=headers)
        return result

    return dependency


def make_fastapi_app(
    store: Store, keyring: KeyRing, hasher: PasswordHasher, policy: PasswordPolicy, clock: Any
) -> FastAPI:
    throttle = LoginThrottle(store, keyring, clock=clock)
    api_keys = APIKeyManager(store, keyring, clock=clock)
    users: dict[str, str] = {}  # normalised user name -> password hash: the app's user table
    app = FastAPI()
    app.state.api_keys = api_keys
    app.state.users = users

    @app.exception_handler(PasswordRejected)
    async def rejected(request: Request, error: PasswordRejected) -> JSONResponse:
        return JSONResponse({"error": "password_rejected", "reasons": list(error.reasons)}, 400)

    @app.post("/signup")
    async def signup(
        username: Annotated[str, Form()], password: Annotated[str, Form()]
    ) -> JSONResponse:
        result = policy.check(password, user_inputs=(username,))
        if not result.ok:
            return JSONResponse({"errors": list(result.messages), "codes": list(result.codes)}, 400)
        users[normalize_username(username)] = await hasher.ahash(password)
        return JSONResponse({"created": username}, status_code=201)

    @app.post("/login")
    async def login(
        request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()]
    ) -> JSONResponse:
        name = normalize_username(username)
        client_ip = request.client.host if request.client else ""

        async def verify() -> bool:
            # An unknown user (None) costs one verification too: no timing oracle.
            outcome = await hasher.averify_and_update(users.get(name), password)
            if outcome.new_hash is not None:
                users[name] = outcome.new_hash  # parameters changed: store the new hash
            return outcome.valid

        attempt = await throttle.attempt(username, client_ip, verify)
        if attempt.outcome is LoginOutcome.THROTTLED:
            retry = {"Retry-After": attempt.decision.retry_after_header}
            return JSONResponse({"error": "too_many_attempts"}, 429, headers=retry)
        if not attempt.ok:
            return JSONResponse({"error": "invalid_credentials"}, 401)
        return JSONResponse({"user": name})  # then: session login (rotates the session ID)

    @app.get("/posts")
    async def list_posts(
        key: Annotated[APIKeyResult, Depends(require_scope("posts:read"))],
    ) -> dict[str, object]:
        return {"owner": key.record.owner if key.record else None, "posts": []}

    @app.post("/posts", status_code=201)
    async def create_post(
        key: Annotated[APIKeyResult, Depends(require_scope("posts:write"))],
    ) -> dict[str, object]:
        return {"created": True}

    @app.get("/keys")
    async def list_keys(
        key: Annotated[APIKeyResult, Depends(require_scope("keys:read"))],
    ) -> dict[str, object]:
        owner = key.record.owner if key.record else ""
        return {"keys": [record.name for record in await api_keys.list_keys(owner)]}

    return app


# --- the Flask app (README example) -----------------------------------------------------------


def make_flask_app(
    store: Store, keyring: KeyRing, hasher: PasswordHasher, policy: PasswordPolicy, clock: Any
) -> Flask:
    throttle = LoginThrottle(store, keyring, clock=clock)  # *_sync methods: no event loop
    api_keys = APIKeyManager(store, keyring, clock=clock)
    users: dict[str, str] = {}
    app = Flask(__name__)
    app.extensions["api_keys"] = api_keys
    app.extensions["users"] = users

    def require_scope(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                token = api_key_from_headers(
                    x_api_key=request.headers.get("X-API-Key"),
                    authorization=request.headers.get("Authorization"),
                )
                result = api_keys.verify_sync(
                    token, required_scope=scope, client_ip=request.remote_addr
                )
                if not result.ok:
                    headers = UNAUTHORIZED if result.http_status == 401 else {}
                    return {"detail": result.status.value}, result.http_status, headers
                g.api_key = result.record
                return view(*args, **kwargs)

            return wrapper

        return decorator

    @app.errorhandler(PasswordRejected)
    def rejected(error: PasswordRejected) -> tuple[dict[str, object], int]:
        return {"error": "password_rejected", "reasons": list(error.reasons)}, 400

    @app.post("/signup")
    def signup() -> tuple[dict[str, object], int]:
        username, password = request.form["username"], request.form["password"]
        result = policy.check(password, user_inputs=(username,))
        if not result.ok:
            return {"errors": list(result.messages), "codes": list(result.codes)}, 400
        users[normalize_username(username)] = hasher.hash(password)
        return {"created": username}, 201

    @app.post("/login")
    def login() -> tuple[dict[str, object], int, dict[str, str]]:
        username, password = request.form["username"], request.form["password"]
        name = normalize_username(username)

        def verify() -> bool:
            outcome = hasher.verify_and_update(users.get(name), password)
            if outcome.new_hash is not None:
                users[name] = outcome.new_hash
            return outcome.valid

        attempt = throttle.attempt_sync(username, request.remote_addr or "", verify)
        if attempt.outcome is LoginOutcome.THROTTLED:
            retry = {"Retry-After": attempt.decision.retry_after_header}
            return {"error": "too_many_attempts"}, 429, retry
        if not attempt.ok:
            return {"error": "invalid_credentials"}, 401, {}
        return {"user": name}, 200, {}

    @app.get("/posts")
    @require_scope("posts:read")
    def list_posts() -> dict[str, object]:
        return {"owner": g.api_key.owner, "posts": []}

    @app.post("/posts")
    @require_scope("posts:write")
    def create_post() -> tuple[dict[str, object], int]:
        return {"created": True}, 201

    @app.get("/keys")
    @require_scope("keys:read")
    def list_keys() -> dict[str, object]:
        return {"keys": [record.name for record in api_keys.list_keys_sync(g.api_key.owner)]}

    return app


# --- one driver per framework, so each scenario runs on both ----------------------------------


class Answer:
    """Status, JSON body and headers of a response from either framework."""

    def __init__(self, status: int, body: Any, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = {name.lower(): value for name, value in headers.items()}

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body!r})"


class AppDriver:
    """Sends requests from a given client address and creates API keys, for either app."""

    def __init__(
        self,
        kind: str,
        app: Any,
        api_keys: APIKeyManager,
        users: dict[str, str],
        flask_client: FlaskClient | None = None,
    ) -> None:
        self.kind = kind
        self.app = app
        self.api_keys = api_keys
        self.users = users
        self._flask = flask_client

    async def call(
        self,
        method: str,
        path: str,
        *,
        ip: str = "192.0.2.10",
        data: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        if self._flask is not None:
            response: TestResponse = self._flask.open(
                path, method=method, data=data, headers=headers, environ_base={"REMOTE_ADDR": ip}
            )
            return Answer(response.status_code, response.get_json(), dict(response.headers))
        transport = httpx.ASGITransport(app=self.app, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            answer = await http.request(method, path, data=data, headers=headers)
        return Answer(answer.status_code, answer.json(), dict(answer.headers))

    async def new_key(self, owner: str, **settings: Any) -> str:
        if self.kind == "flask":
            return self.api_keys.create_sync(owner, **settings).token
        return (await self.api_keys.create(owner, **settings)).token

    async def key_id(self, token: str) -> str:
        result = await self.api_keys.verify(token)
        if result.record is None:
            raise LookupError("unknown key")
        return result.record.key_id


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return default_policy(site_words=("bastion",))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
def counting() -> CountingArgon2:
    return CountingArgon2()


@pytest_asyncio.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FrozenClock
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened: Store = SQLiteStore(tmp_path / "app.db", clock=clock)
    else:
        opened = RedisStore.from_url(
            request.getfixturevalue("redis_url"),
            prefix=request.getfixturevalue("redis_prefix"),
            clock=clock,
        )
    yield opened
    opened.sync.close()  # type: ignore[attr-defined]
    await opened.aclose()


@pytest.fixture(params=["fastapi", "flask"])
def driver(
    request: pytest.FixtureRequest,
    store: Store,
    clock: FrozenClock,
    counting: CountingArgon2,
    policy: PasswordPolicy,
) -> Iterator[AppDriver]:
    keyring = KeyRing.generate()
    hasher = PasswordHasher.from_argon2(counting)
    if request.param == "flask":
        flask_app = make_flask_app(store, keyring, hasher, policy, clock)
        api_keys: APIKeyManager = flask_app.extensions["api_keys"]
        users: dict[str, str] = flask_app.extensions["users"]
        yield AppDriver("flask", flask_app, api_keys, users, flask_app.test_client())
    else:
        app = make_fastapi_app(store, keyring, hasher, policy, clock)
        yield AppDriver("fastapi", app, app.state.api_keys, app.state.users)


# --- scenarios --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_signup_refuses_weak_passwords_with_reasons(driver: AppDriver) -> None:
    weak = await driver.call("POST", "/signup", data={"username": "alice", "password": "password"})
    assert weak.status == 400
    assert weak.body["codes"] == ["too_short", "blocklisted"]
    assert weak.body["errors"][0] == "Use at least 15 characters."
    context = await driver.call(
        "POST", "/signup", data={"username": "alice", "password": "alice-and-her-long-password"}
    )
    assert (context.status, context.body["codes"]) == (400, ["context_word"])
    made = await driver.call("POST", "/signup", data={"username": "alice", "password": GOOD})
    assert (made.status, made.body) == (201, {"created": "alice"})


@pytest.mark.asyncio
async def test_a_one_megabyte_password_is_refused_before_hashing(
    driver: AppDriver, counting: CountingArgon2
) -> None:
    await driver.call("POST", "/signup", data={"username": "alice", "password": GOOD})
    before = counting.verifies
    huge = await driver.call(
        "POST", "/login", data={"username": "alice", "password": "x" * 1_000_000}
    )
    assert (huge.status, huge.body) == (
        400,
        {"error": "password_rejected", "reasons": ["too_long"]},
    )
    assert counting.verifies == before  # no hashing work at all


@pytest.mark.asyncio
async def test_two_unicode_forms_of_one_password_verify(driver: AppDriver) -> None:
    nfd = unicodedata.normalize("NFD", ACCENTED)
    assert nfd != ACCENTED
    await driver.call("POST", "/signup", data={"username": "zoé", "password": nfd})
    ok = await driver.call("POST", "/login", data={"username": "ZOÉ", "password": ACCENTED})
    assert (ok.status, ok.body) == (200, {"user": "zoé"})


@pytest.mark.asyncio
async def test_unknown_and_known_users_cost_one_verification_each(
    driver: AppDriver, counting: CountingArgon2
) -> None:
    await driver.call("POST", "/signup", data={"username": "alice", "password": GOOD})
    before = counting.verifies
    known = await driver.call("POST", "/login", data={"username": "alice", "password": "wrong"})
    assert (known.status, counting.verifies) == (401, before + 1)
    unknown = await driver.call("POST", "/login", data={"username": "nobody", "password": "x"})
    assert (unknown.status, unknown.body) == (401, {"error": "invalid_credentials"})
    assert counting.verifies == before + 2


@pytest.mark.asyncio
async def test_login_rehashes_outdated_parameters(driver: AppDriver) -> None:
    old = argon2.PasswordHasher(time_cost=2, memory_cost=8, parallelism=1, hash_len=16)
    driver.users["legacy"] = old.hash(GOOD)
    ok = await driver.call("POST", "/login", data={"username": "legacy", "password": GOOD})
    assert ok.status == 200
    assert driver.users["legacy"].startswith("$argon2id$v=19$m=8,t=1,p=1$")


@pytest.mark.asyncio
async def test_fifty_wrong_passwords_then_the_victim_logs_in_elsewhere(
    driver: AppDriver, clock: FrozenClock
) -> None:
    await driver.call("POST", "/signup", data={"username": "victim", "password": GOOD})
    wrong = {"username": "victim", "password": "not-the-password"}
    failures = 0
    while failures < 50:
        answer = await driver.call("POST", "/login", ip=ATTACKER, data=wrong)
        if answer.status == 429:
            assert answer.body == {"error": "too_many_attempts"}
            clock.advance(int(answer.headers["retry-after"]))
            continue
        assert (answer.status, answer.body) == (401, {"error": "invalid_credentials"})
        failures += 1
    right = {"username": "victim", "password": GOOD}
    attacker = await driver.call("POST", "/login", ip=ATTACKER, data=right)
    assert attacker.status == 429
    assert int(attacker.headers["retry-after"]) >= 1
    victim = await driver.call("POST", "/login", ip=VICTIM_IP, data=right)
    assert (victim.status, victim.body) == (200, {"user": "victim"})


@pytest.mark.asyncio
async def test_user_name_case_variants_share_one_counter(
    driver: AppDriver, clock: FrozenClock
) -> None:
    await driver.call("POST", "/signup", data={"username": "alice", "password": GOOD})
    for name in ("Alice", "ALICE", "alice", " alice", "aLiCe", "ALICE "):
        answer = await driver.call(
            "POST", "/login", ip=ATTACKER, data={"username": name, "password": "guess"}
        )
        assert answer.status == 401
    throttled = await driver.call(
        "POST", "/login", ip=ATTACKER, data={"username": "alice", "password": GOOD}
    )
    assert (throttled.status, throttled.body) == (429, {"error": "too_many_attempts"})
    assert throttled.headers["retry-after"] == "1"
    clock.advance(1)
    ok = await driver.call(
        "POST", "/login", ip=ATTACKER, data={"username": "alice", "password": GOOD}
    )
    assert ok.status == 200


@pytest.mark.asyncio
async def test_api_key_attack_cases(driver: AppDriver, clock: FrozenClock) -> None:
    reader = await driver.new_key("alice", scopes=["posts:read"], expires_in=3600)
    ok = await driver.call("GET", "/posts", headers={"X-API-Key": reader})
    assert (ok.status, ok.body) == (200, {"owner": "alice", "posts": []})
    bearer = await driver.call("GET", "/posts", headers={"Authorization": f"Bearer {reader}"})
    assert bearer.status == 200
    forbidden = await driver.call("POST", "/posts", headers={"X-API-Key": reader})
    assert (forbidden.status, forbidden.body) == (403, {"detail": "insufficient_scope"})
    garbled = reader[:-1] + ("A" if reader[-1] != "A" else "B")
    bad = await driver.call("GET", "/posts", headers={"X-API-Key": garbled})
    assert (bad.status, bad.body) == (401, {"detail": "malformed"})
    assert bad.headers["www-authenticate"] == 'Bearer realm="api"'
    assert driver.api_keys.counts[APIKeyStatus.MALFORMED] == 1  # refused before any lookup
    missing = await driver.call("GET", "/posts")
    assert (missing.status, missing.body) == (401, {"detail": "missing"})
    writer = await driver.new_key("bob", scopes=["posts:*"])
    wrote = await driver.call("POST", "/posts", headers={"X-API-Key": writer})
    assert (wrote.status, wrote.body) == (201, {"created": True})
    assert await driver.api_keys.revoke(await driver.key_id(writer))
    revoked = await driver.call("POST", "/posts", headers={"X-API-Key": writer})
    assert (revoked.status, revoked.body) == (401, {"detail": "revoked"})
    clock.advance(3600)
    expired = await driver.call("GET", "/posts", headers={"X-API-Key": reader})
    assert (expired.status, expired.body) == (401, {"detail": "expired"})


@pytest.mark.asyncio
async def test_api_key_owners_list_their_keys(driver: AppDriver) -> None:
    admin = await driver.new_key("carol", name="admin", scopes=["keys:read", "posts:*"])
    await driver.new_key("carol", name="ci", scopes=["posts:read"])
    await driver.new_key("dave", name="dave's")
    listed = await driver.call("GET", "/keys", headers={"X-API-Key": admin})
    assert (listed.status, listed.body) == (200, {"keys": ["admin", "ci"]})
    reader = await driver.new_key("carol", name="reader", scopes=["posts:read"])
    refused = await driver.call("GET", "/keys", headers={"X-API-Key": reader})
    assert (refused.status, refused.body) == (403, {"detail": "insufficient_scope"})


def test_flask_app_needs_no_event_loop(
    tmp_path: Path, clock: FrozenClock, counting: CountingArgon2, policy: PasswordPolicy
) -> None:
    """Plain synchronous test, as under gunicorn threads: no event loop anywhere."""
    store = SQLiteStore(tmp_path / "flask.db", clock=clock)
    app = make_flask_app(
        store, KeyRing.generate(), PasswordHasher.from_argon2(counting), policy, clock
    )
    client = app.test_client()
    try:
        made = client.post("/signup", data={"username": "oscar", "password": GOOD})
        assert made.status_code == 201
        ok = client.post("/login", data={"username": "Oscar", "password": GOOD})
        assert (ok.status_code, ok.get_json()) == (200, {"user": "oscar"})
        token = app.extensions["api_keys"].create_sync("oscar", scopes=["posts:read"]).token
        listed = client.get("/posts", headers={"Authorization": f"Bearer {token}"})
        assert (listed.status_code, listed.get_json()) == (200, {"owner": "oscar", "posts": []})
        wrote = client.post("/posts", headers={"X-API-Key": token})
        assert (wrote.status_code, wrote.get_json()) == (403, {"detail": "insufficient_scope"})
    finally:
        store.sync.close()
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()
