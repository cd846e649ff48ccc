"""The wrong-code budget of TOTP verification, kept per user in the store and reserved before a
code is compared: N concurrent wrong codes compare no more codes than N codes in a row, on one
second-factor-pending session or many, and logging in again with the password does not reset
it. Every path that verifies a code goes through it: :meth:`TOTPManager.verify` and
``verify_sync``, a second-factor view, the demo's ``/login`` with a TOTP field and its
``/account/totp`` enrolment check.

A verdict of ``INVALID`` or ``ACCEPTED`` or ``REPLAYED`` means the code was compared;
``LOCKED`` means it was not, so counting verdicts counts real comparisons. Each test also
shows that the *right* code is refused once the budget is spent, which no comparison would do.
"""

from __future__ import annotations

import asyncio
import re
import threading
from typing import TYPE_CHECKING

import httpx
import pyotp
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.asgi import SessionMiddleware
from bastion.asgi.sessions import get_session, load_session
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.throttle import BackoffRule
from bastion.engine.second_factor import (
    begin_second_factor,
    complete_second_factor,
    fail_second_factor,
    second_factor_status,
)
from bastion.engine.totp import DEFAULT_TOTP_FAILURES, TOTPManager, TOTPResult
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import find_token
from test_demo import SEED, client_for, log_in, make_app

if TYPE_CHECKING:
    from starlette.requests import Request

    from bastion.demo.app import DemoApp
    from bastion.stores.base import Store

START = 1_800_000_010.0
BURST = DEFAULT_TOTP_FAILURES.free_attempts + 1  # codes compared before the first wait
GUESSES = 40
SECRET = pyotp.random_base32()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def wrong_codes(secret: str, when: float, count: int) -> list[str]:
    window = {pyotp.TOTP(secret).at(when, counter_offset=o) for o in (-1, 0, 1)}
    found: list[str] = []
    candidate = 0
    while len(found) < count:
        code = f"{candidate:06d}"
        if code not in window:
            found.append(code)
        candidate += 7919
    return found


@pytest.mark.asyncio
async def test_concurrent_wrong_codes_compare_no_more_than_the_budget(
    any_store: Store, clock: FrozenClock
) -> None:
    manager = TOTPManager(any_store, KeyRing.generate(), issuer="Bastion", clock=clock)
    results = await asyncio.gather(
        *(manager.verify("alice", SECRET, c) for c in wrong_codes(SECRET, START, GUESSES))
    )
    assert results.count(TOTPResult.INVALID) == BURST
    assert results.count(TOTPResult.LOCKED) == GUESSES - BURST
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert await manager.verify("alice", SECRET, right) is TOTPResult.LOCKED  # not compared
    assert await manager.verify("bob", SECRET, right) is TOTPResult.ACCEPTED  # per user
    clock.advance(DEFAULT_TOTP_FAILURES.base_delay)
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert await manager.verify("alice", SECRET, right) is TOTPResult.ACCEPTED
    # an accepted code clears the count: a full burst again
    later = await asyncio.gather(
        *(manager.verify("alice", SECRET, c) for c in wrong_codes(SECRET, clock.now(), 10))
    )
    assert later.count(TOTPResult.INVALID) == BURST


def test_concurrent_wrong_codes_on_the_sync_side(any_store: Store, clock: FrozenClock) -> None:
    manager = TOTPManager(any_store, KeyRing.generate(), issuer="Bastion", clock=clock)
    results: list[TOTPResult] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def guess(code: str) -> None:
        barrier.wait()
        verdict = manager.verify_sync("alice", SECRET, code)
        with lock:
            results.append(verdict)

    threads = [threading.Thread(target=guess, args=(c,)) for c in wrong_codes(SECRET, START, 16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(TOTPResult.INVALID) == BURST
    assert results.count(TOTPResult.LOCKED) == 16 - BURST
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert manager.verify_sync("alice", SECRET, right) is TOTPResult.LOCKED


@pytest.mark.asyncio
async def test_a_recovery_code_still_works_while_locked_and_clears_the_count(
    clock: FrozenClock,
) -> None:
    manager = TOTPManager(MemoryStore(clock=clock), KeyRing.generate(), issuer="B", clock=clock)
    codes = await manager.new_recovery_codes("alice")
    for code in wrong_codes(SECRET, START, BURST + 2):
        await manager.verify("alice", SECRET, code)
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert await manager.verify("alice", SECRET, right) is TOTPResult.LOCKED
    assert await manager.use_recovery_code("alice", codes[0])
    assert await manager.verify("alice", SECRET, right) is TOTPResult.ACCEPTED


@pytest.mark.asyncio
async def test_a_replayed_right_code_is_not_a_guess(clock: FrozenClock) -> None:
    manager = TOTPManager(MemoryStore(clock=clock), KeyRing.generate(), issuer="B", clock=clock)
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert await manager.verify("alice", SECRET, right) is TOTPResult.ACCEPTED
    for _ in range(3 * BURST):  # an impatient double submit, many times over
        assert await manager.verify("alice", SECRET, right) is TOTPResult.REPLAYED
    verdicts = [await manager.verify("alice", SECRET, c) for c in wrong_codes(SECRET, START, 10)]
    assert verdicts.count(TOTPResult.INVALID) == BURST


@pytest.mark.asyncio
async def test_the_budget_survives_a_key_rotation(clock: FrozenClock) -> None:
    store = MemoryStore(clock=clock)
    old = SecretKey.generate()
    before = TOTPManager(store, KeyRing(old), issuer="B", clock=clock)
    for code in wrong_codes(SECRET, START, BURST):
        assert await before.verify("alice", SECRET, code) is TOTPResult.INVALID
    ring = KeyRing(SecretKey.generate(), previous=[old])
    after = TOTPManager(store, ring, issuer="B", clock=clock)
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert await after.verify("alice", SECRET, right) is TOTPResult.LOCKED


def test_the_budget_rule_is_validated(clock: FrozenClock) -> None:
    store = MemoryStore(clock=clock)
    with pytest.raises(ConfigurationError) as caught:
        TOTPManager(store, KeyRing.generate(), issuer="B", failures=5)  # type: ignore[arg-type]
    assert caught.value.setting == "failures"
    strict = TOTPManager(
        store, KeyRing.generate(), issuer="B", clock=clock, failures=BackoffRule(free_attempts=0)
    )
    assert strict.verify_sync("a", SECRET, wrong_codes(SECRET, START, 1)[0]) is TOTPResult.INVALID
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert strict.verify_sync("a", SECRET, right) is TOTPResult.LOCKED


# --- a second-factor view over HTTP: one pending session, then a new one ---------------------


class SecondFactorApp:
    """A password step that marks the session pending, and a code step that verifies through
    TOTPManager and answers the verdict (the way the module docstring of
    bastion.engine.second_factor shows)."""

    def __init__(self, store: Store, clock: FrozenClock) -> None:
        self.totp = TOTPManager(store, KeyRing.generate(), issuer="B", clock=clock)
        self.app = Starlette(
            routes=[
                Route("/password", self.password, methods=["POST"]),
                Route("/code", self.code, methods=["POST"]),
            ],
            middleware=[Middleware(SessionMiddleware, store=store, clock=clock, production=False)],
        )

    async def password(self, request: Request) -> JSONResponse:
        await load_session(request)
        begin_second_factor(get_session(request), "alice")
        return JSONResponse({"pending": True})

    async def code(self, request: Request) -> JSONResponse:
        session = await load_session(request)
        status, state = second_factor_status(session)
        if state is None:
            return JSONResponse({"status": str(status)}, status_code=409)
        verdict = await self.totp.verify(state.user_id, SECRET, request.query_params["code"])
        if verdict is TOTPResult.ACCEPTED:
            return JSONResponse({"user": complete_second_factor(session)})
        fail_second_factor(session)
        return JSONResponse({"verdict": verdict.value}, status_code=401)


@pytest.mark.asyncio
async def test_parallel_codes_on_one_pending_session_then_a_new_one(
    any_store: Store, clock: FrozenClock
) -> None:
    made = SecondFactorApp(any_store, clock)
    transport = httpx.ASGITransport(app=made.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        assert (await client.post("/password")).status_code == 200
        answers = await asyncio.gather(
            *(client.post("/code", params={"code": c}) for c in wrong_codes(SECRET, START, 30))
        )
        verdicts = [a.json().get("verdict") for a in answers]
        assert verdicts.count("invalid") == BURST
        assert verdicts.count("locked") + verdicts.count(None) == 30 - BURST
    # The attacker enters the password again: a new session, the same spent budget.
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        assert (await client.post("/password")).status_code == 200
        right = pyotp.TOTP(SECRET).at(clock.now())
        refused = await client.post("/code", params={"code": right})
        assert (refused.status_code, refused.json()) == (401, {"verdict": "locked"})


# --- the demo: /login with a TOTP field, /account/totp ---------------------------------------


async def enrol_demo_user(clock: FrozenClock) -> tuple[DemoApp, pyotp.TOTP]:
    app = make_app(clock)
    await app.startup()
    async with client_for(app) as client:
        await log_in(client)
        page = await client.get("/account/totp")
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
        assert secret is not None
        totp = pyotp.TOTP(secret.group(1))
        token = find_token(page.text)
        enabled = await client.post(
            "/account/totp", data={"code": totp.at(clock.now()), "csrf_token": token}
        )
        assert enabled.status_code == 200
    return app, totp


@pytest.mark.asyncio
async def test_demo_login_with_a_totp_field_is_bounded_across_addresses() -> None:
    clock = FrozenClock(1_800_000_000.0)
    app, totp = await enrol_demo_user(clock)
    clock.advance(60)
    codes = wrong_codes(totp.secret, clock.now(), 12)
    answers = []
    for index, code in enumerate(codes):  # the password is known; each guess from a new address
        transport = httpx.ASGITransport(app=app, client=(f"203.0.113.{index + 1}", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            answers.append(await log_in(c, password=SEED, totp=code))
    assert [a.status_code for a in answers] == [401] * 12
    compared = [a for a in answers if "too many wrong codes" not in a.text]
    assert len(compared) == BURST
    transport = httpx.ASGITransport(app=app, client=("203.0.113.99", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
        refused = await log_in(c, password=SEED, totp=totp.at(clock.now()))
        assert refused.status_code == 401
        assert "too many wrong codes" in refused.text
    await app.shutdown()


@pytest.mark.asyncio
async def test_demo_totp_enrolment_check_is_bounded() -> None:
    clock = FrozenClock(1_800_000_000.0)
    app = make_app(clock)
    await app.startup()
    async with client_for(app) as client:
        await log_in(client)
        page = await client.get("/account/totp")
        for _ in range(BURST):
            page = await client.post(
                "/account/totp", data={"code": "000000", "csrf_token": find_token(page.text)}
            )
            assert "(invalid)" in page.text
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
        assert secret is not None
        right = pyotp.TOTP(secret.group(1)).at(clock.now())
        refused = await client.post(
            "/account/totp", data={"code": right, "csrf_token": find_token(page.text)}
        )
        assert refused.status_code == 400
        assert "(locked)" in refused.text
    await app.shutdown()


@pytest.mark.asyncio
async def test_a_replay_does_not_restart_a_wait_that_had_run_out(clock: FrozenClock) -> None:
    rule = BackoffRule(free_attempts=5, base_delay=10.0)
    store = MemoryStore(clock=clock)
    manager = TOTPManager(store, KeyRing.generate(), issuer="B", clock=clock, failures=rule)
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert await manager.verify("alice", SECRET, right) is TOTPResult.ACCEPTED
    for code in wrong_codes(SECRET, START, BURST):
        assert await manager.verify("alice", SECRET, code) is TOTPResult.INVALID
    clock.advance(rule.delay_for(BURST) + 1)  # the wait runs out; the code is still in window
    assert await manager.verify("alice", SECRET, right) is TOTPResult.REPLAYED
    typo = wrong_codes(SECRET, clock.now(), 1)[0]
    assert await manager.verify("alice", SECRET, typo) is TOTPResult.INVALID  # compared


@pytest.mark.asyncio
async def test_forget_deletes_codes_and_budget_of_one_user(
    any_store: Store, clock: FrozenClock
) -> None:
    old_key = SecretKey.generate()
    before = TOTPManager(any_store, KeyRing(old_key), issuer="Bastion", clock=clock)
    codes = await before.new_recovery_codes("alice")  # under a key rotated out since: forgotten
    ring = KeyRing(SecretKey.generate(), previous=[old_key])
    manager = TOTPManager(any_store, ring, issuer="Bastion", clock=clock)
    kept = await manager.new_recovery_codes("bob")
    for code in wrong_codes(SECRET, START, BURST + 1):
        await manager.verify("alice", SECRET, code)
    right = pyotp.TOTP(SECRET).at(clock.now())
    assert await manager.verify("alice", SECRET, right) is TOTPResult.LOCKED
    assert await manager.remaining_recovery_codes("alice") == len(codes)
    await manager.forget("alice")
    assert await manager.remaining_recovery_codes("alice") == 0
    assert not await manager.use_recovery_code("alice", codes[0])
    assert await manager.verify("alice", SECRET, right) is TOTPResult.ACCEPTED  # budget gone
    assert await manager.remaining_recovery_codes("bob") == len(kept)  # another user's kept
    manager.forget_sync("bob")
    assert manager.remaining_recovery_codes_sync("bob") == 0
