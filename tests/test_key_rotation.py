"""Everything keyed by the key ring keeps working across the documented rotation.

Each test does some work under ``KeyRing(old)``, then rebuilds the component (as a deployment
would) on the same store with ``KeyRing(new, previous=[old])``, and checks that the state made
before the rotation is still found: TOTP replay steps, recovery codes, login-throttle counters,
API keys, audit identifier hashes, double-submit cookies and session cookies.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import pyotp
import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client at import time (see other modules).
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from bastion.asgi import CSRFMiddleware, SessionMiddleware
from bastion.asgi.csrf import csrf_token
from bastion.asgi.sessions import get_session
from bastion.core.apikeys import APIKeyStatus
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.sessions import SessionConfig
from bastion.core.throttle import BackoffRule, ThrottlePolicy
from bastion.engine.apikeys import APIKeyManager
from bastion.engine.throttle import LoginOutcome, LoginThrottle
from bastion.engine.totp import TOTPManager, TOTPResult
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.stores.base import Store

START = 1_800_000_010.0  # 10 s into a 30 s TOTP step
HTTPS = "https://testserver"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def old() -> SecretKey:
    return SecretKey.generate()


@pytest.fixture
def new() -> SecretKey:
    return SecretKey.generate()


@pytest.fixture
def before(old: SecretKey) -> KeyRing:
    return KeyRing(old)


@pytest.fixture
def after(new: SecretKey, old: SecretKey) -> KeyRing:
    return KeyRing(new, previous=[old])


# -- TOTP -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_totp_code_accepted_before_rotation_is_a_replay_after(
    any_store: Store, clock: FrozenClock, before: KeyRing, after: KeyRing
) -> None:
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(clock.now())
    first = TOTPManager(any_store, before, issuer="Bastion", clock=clock)
    assert await first.verify("alice", secret, code) is TOTPResult.ACCEPTED
    rotated = TOTPManager(any_store, after, issuer="Bastion", clock=clock)
    assert await rotated.verify("alice", secret, code) is TOTPResult.REPLAYED
    assert rotated.verify_sync("alice", secret, code) is TOTPResult.REPLAYED
    # An older code of the drift window is a replay too; the next step's code is accepted once.
    previous_step = pyotp.TOTP(secret).at(clock.now(), counter_offset=-1)
    assert await rotated.verify("alice", secret, previous_step) is TOTPResult.REPLAYED
    clock.advance(30)
    later = pyotp.TOTP(secret).at(clock.now())
    assert await rotated.verify("alice", secret, later) is TOTPResult.ACCEPTED
    assert await rotated.verify("alice", secret, later) is TOTPResult.REPLAYED


@pytest.mark.asyncio
async def test_two_phase_rotation_leaves_no_replay_window_between_processes(
    any_store: Store, clock: FrozenClock, old: SecretKey, new: SecretKey
) -> None:
    # Phase one everywhere: the old key still writes, both names are read.
    staged = TOTPManager(any_store, KeyRing(old, previous=[new]), issuer="Bastion", clock=clock)
    # A process already on phase two accepts a code ...
    rotated = TOTPManager(any_store, KeyRing(new, previous=[old]), issuer="Bastion", clock=clock)
    secret = pyotp.random_base32()
    code = pyotp.TOTP(secret).at(clock.now())
    assert await rotated.verify("alice", secret, code) is TOTPResult.ACCEPTED
    # ... and a process still on phase one sees it.
    assert await staged.verify("alice", secret, code) is TOTPResult.REPLAYED
    clock.advance(30)
    later = pyotp.TOTP(secret).at(clock.now())
    assert await staged.verify("alice", secret, later) is TOTPResult.ACCEPTED
    assert await rotated.verify("alice", secret, later) is TOTPResult.REPLAYED


@pytest.mark.asyncio
async def test_recovery_codes_minted_before_rotation_work_after(
    any_store: Store, clock: FrozenClock, before: KeyRing, after: KeyRing
) -> None:
    first = TOTPManager(any_store, before, issuer="Bastion", clock=clock)
    codes = await first.new_recovery_codes("alice")
    rotated = TOTPManager(any_store, after, issuer="Bastion", clock=clock)
    assert await rotated.remaining_recovery_codes("alice") == len(codes)
    assert await rotated.use_recovery_code("alice", codes[0]) is True
    assert await rotated.use_recovery_code("alice", codes[0]) is False  # each code once
    assert rotated.use_recovery_code_sync("alice", codes[1]) is True
    assert await rotated.remaining_recovery_codes("alice") == len(codes) - 2
    # A new set made after the rotation replaces the old one entirely.
    fresh = await rotated.new_recovery_codes("alice")
    assert await rotated.use_recovery_code("alice", codes[2]) is False
    assert await rotated.remaining_recovery_codes("alice") == len(fresh)
    assert await rotated.use_recovery_code("alice", fresh[0]) is True


# -- login throttle ---------------------------------------------------------------------------


def strict_policy() -> ThrottlePolicy:
    rule = BackoffRule(free_attempts=3, base_delay=60.0, max_delay=3600.0, window=3600.0)
    return ThrottlePolicy(pair=rule)


@pytest.mark.asyncio
async def test_throttle_counter_before_rotation_still_counts_after(
    any_store: Store, clock: FrozenClock, before: KeyRing, after: KeyRing
) -> None:
    first = LoginThrottle(any_store, before, policy=strict_policy(), clock=clock)
    for _ in range(4):  # three free attempts, then a 60 s wait
        await first.record_failure("alice", "203.0.113.9")
    assert (await first.check("alice", "203.0.113.9")).allowed is False

    rotated = LoginThrottle(any_store, after, policy=strict_policy(), clock=clock)
    assert (await rotated.check("alice", "203.0.113.9")).allowed is False
    assert rotated.check_sync("alice", "203.0.113.9").allowed is False

    async def never() -> bool:
        raise AssertionError("a throttled attempt must not check the password")

    attempt = await rotated.attempt("alice", "203.0.113.9", never)
    assert attempt.outcome is LoginOutcome.THROTTLED
    # The count goes on from where it was: one more failure doubles the wait.
    wait_before = (await rotated.check("alice", "203.0.113.9")).retry_after
    clock.advance(wait_before)
    await rotated.record_failure("alice", "203.0.113.9")
    assert (await rotated.check("alice", "203.0.113.9")).retry_after == pytest.approx(120.0)
    # A success clears the pair counter wherever it lives.
    await rotated.record_success("alice", "203.0.113.9")
    assert (await rotated.check("alice", "203.0.113.9")).allowed is True


# -- API keys ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_api_key_made_before_rotation_works_after(
    any_store: Store, clock: FrozenClock, before: KeyRing, after: KeyRing
) -> None:
    first = APIKeyManager(any_store, before, clock=clock)
    created = await first.create("alice", scopes=["read"])
    rotated = APIKeyManager(any_store, after, clock=clock)
    result = await rotated.verify(created.token, required_scope="read")
    assert result.status is APIKeyStatus.VALID
    assert rotated.verify_sync(created.token).status is APIKeyStatus.VALID
    assert [r.key_id for r in await rotated.list_keys("alice")] == [created.record.key_id]
    # Revoking it after the rotation takes effect.
    assert await rotated.revoke(created.record.key_id) is True
    assert (await rotated.verify(created.token)).status is APIKeyStatus.REVOKED
    # Once the old key leaves the ring, keys made under it are unknown (as documented).
    dropped = APIKeyManager(any_store, KeyRing(after.current), clock=clock)
    assert (await dropped.verify(created.token)).status is APIKeyStatus.UNKNOWN


# -- audit identifiers ------------------------------------------------------------------------


def test_audit_identifier_hashes_correlate_across_rotation(
    clock: FrozenClock, before: KeyRing, after: KeyRing
) -> None:
    sink = RecordingAuditSink()
    Auditor(IdentifierHasher(before), clock, sink).emit(
        "test_event", outcome="success", user="alice", client_ip="203.0.113.9"
    )
    Auditor(IdentifierHasher(after), clock, sink).emit(
        "test_event", outcome="success", user="alice", client_ip="203.0.113.9"
    )
    old_line, new_line = (event.to_dict() for event in sink.events)
    # While the old key is in the ring, every event also carries the old key's digests: a
    # log search for the pre-rotation digest finds the events after the rotation too.
    assert new_line["previous"] == {
        "user": [old_line["user"]],
        "client_ip": [old_line["client_ip"]],
    }
    assert "previous" not in old_line
    assert new_line["user"] != old_line["user"]


# -- signed cookies ---------------------------------------------------------------------------


def session_app(store: Store, keyring: KeyRing, clock: FrozenClock) -> Starlette:
    async def do_login(request: Request) -> PlainTextResponse:
        get_session(request).login("alice")
        request.session["cart"] = 3
        return PlainTextResponse("in")

    async def whoami(request: Request) -> JSONResponse:
        session = get_session(request)
        return JSONResponse({"user": session.user_id, "cart": request.session.get("cart")})

    return Starlette(
        routes=[Route("/login", do_login, methods=["POST"]), Route("/whoami", whoami)],
        middleware=[
            Middleware(
                SessionMiddleware,
                store=store,
                config=SessionConfig(signed=True),
                keyring=keyring,
                clock=clock,
                production=False,
            )
        ],
    )


def test_session_cookie_issued_before_rotation_validates_after(
    clock: FrozenClock, before: KeyRing, after: KeyRing
) -> None:
    store = MemoryStore(clock=clock)
    with TestClient(session_app(store, before, clock), base_url=HTTPS) as client:
        assert client.post("/login").text == "in"
        cookies: Any = dict(client.cookies)
    with TestClient(session_app(store, after, clock), base_url=HTTPS, cookies=cookies) as client:
        assert client.get("/whoami").json() == {"user": "alice", "cart": 3}
    with TestClient(
        session_app(store, KeyRing(after.current), clock), base_url=HTTPS, cookies=cookies
    ) as client:
        assert client.get("/whoami").json() == {"user": None, "cart": None}


def double_submit_app(keyring: KeyRing) -> Starlette:
    async def token(request: Request) -> JSONResponse:
        return JSONResponse({"token": csrf_token(request)})

    async def act(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("done")

    return Starlette(
        routes=[Route("/token", token), Route("/act", act, methods=["POST"])],
        middleware=[
            Middleware(
                CSRFMiddleware,
                config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
                keyring=keyring,
                identity=lambda _scope: "alice",
                production=False,
            )
        ],
    )


def test_double_submit_token_issued_before_rotation_validates_after(
    before: KeyRing, after: KeyRing
) -> None:
    with TestClient(double_submit_app(before), base_url=HTTPS) as client:
        token = client.get("/token").json()["token"]
        cookies: Any = dict(client.cookies)
    with TestClient(double_submit_app(after), base_url=HTTPS, cookies=cookies) as client:
        assert client.post("/act", headers={"X-CSRF-Token": token}).text == "done"
    with TestClient(
        double_submit_app(KeyRing(after.current)), base_url=HTTPS, cookies=cookies
    ) as client:
        refused = client.post("/act", headers={"X-CSRF-Token": token, "Accept": "application/json"})
        assert refused.status_code == 403
