"""Device cookies (issue 11, item 3): a distributed guesser trips the account-wide counter, the
owner's browser still gets in, and the guesser gets no extra password checks. Run at the HTTP
level on the demo and on a Flask app (the sync path), with a frozen clock, and on the engine on
every store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from examples import flask_app as flask_example
from flask import Flask, request

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.throttle import BackoffRule, ThrottleCounter, ThrottlePolicy
from bastion.demo.app import LOGIN_POLICY, DemoApp
from bastion.engine.throttle import (
    DEVICE_COOKIE_NAME,
    DEVICE_COOKIE_NAME_INSECURE,
    LoginOutcome,
    LoginThrottle,
)
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.csrf import afetch_token, browser_headers

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from flask.testing import FlaskClient
    from starlette.types import Receive, Scope, Send
    from werkzeug.test import TestResponse

    from bastion.stores.base import Store

SEED = "correct horse battery staple for the demo"
BASE = "http://127.0.0.1:8000"
OWNER_IP = "203.0.113.20"
ATTACK_MINUTES = 30
START = 1_800_000_000.0


def attacker_ip(index: int) -> str:
    """A fresh IPv6 /64 per attempt: the throttle's pair and client counters never fill."""
    return f"2001:db8:{index // 65536:x}:{index % 65536:x}::1"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


def answer(result: bool) -> Callable[[], Awaitable[bool]]:
    async def verify() -> bool:
        return result

    return verify


# --- the demo, over HTTP ----------------------------------------------------------------------


class DemoBrowser:
    """One browser (its own cookie jar) talking to the demo from ``ip``, which it may change
    between requests (the server sees the new address, as after a move to another /64)."""

    def __init__(self, app: DemoApp, ip: str, cookies: httpx.Cookies | None = None) -> None:
        self.ip = ip
        self.token: str | None = None

        async def from_here(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, "client": (self.ip, 50_000)}, receive, send)

        transport = httpx.ASGITransport(app=from_here)
        self.client = httpx.AsyncClient(transport=transport, base_url=BASE, cookies=cookies)

    def move(self, ip: str) -> None:
        self.ip = ip

    async def log_in(self, password: str, username: str = "demo") -> httpx.Response:
        if self.token is None:
            self.token = await afetch_token(self.client, "/login")
        data = {"username": username, "password": password, "csrf_token": self.token}
        response = await self.client.post("/login", data=data)
        if response.status_code in {303, 403}:  # a login rotates the session and its secret
            self.token = None
        return response

    @property
    def device_cookie(self) -> str | None:
        return self.client.cookies.get(DEVICE_COOKIE_NAME_INSECURE)


async def make_demo(clock: FrozenClock) -> DemoApp:
    demo = DemoApp(
        MemoryStore(clock=clock),
        clock=clock,
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
    )
    await demo.startup()
    return demo


async def baseline_attacker_checks(schedule: list[float]) -> int:
    """How many passwords the attacker's schedule gets checked with nobody else logging in:
    the account-wide counter's own allowance, the figure no owner activity may raise."""
    clock = FrozenClock(START)
    throttle = LoginThrottle(MemoryStore(clock=clock), KeyRing.generate(), clock=clock)
    checked = 0
    for index, when in enumerate(schedule):
        clock.advance(when - clock.now())
        attempt = await throttle.attempt("demo", attacker_ip(index), answer(False))
        checked += attempt.outcome is LoginOutcome.INVALID
    return checked


def attack_schedule() -> list[float]:
    """About 100 failures at once over as many /64s, then one per second for 30 minutes."""
    burst = [START] * (LOGIN_POLICY.account.free_attempts + 1)
    steady = [START + second for second in range(1, ATTACK_MINUTES * 60 + 1)]
    return burst + steady


@pytest.mark.asyncio
async def test_the_owner_gets_in_during_a_30_minute_distributed_attack(
    clock: FrozenClock,
) -> None:
    demo = await make_demo(clock)
    try:
        owner = DemoBrowser(demo, OWNER_IP)
        first = await owner.log_in(SEED)  # before the attack: this browser becomes a device
        assert (first.status_code, first.headers["location"]) == (303, "/account")
        assert owner.device_cookie is not None
        set_cookie = next(
            line for line in first.headers.get_list("set-cookie") if "bastion-device=" in line
        )
        assert "HttpOnly" in set_cookie
        assert "SameSite=Strict" in set_cookie
        new_browser = DemoBrowser(demo, OWNER_IP)  # the owner, but no device cookie
        attacker = DemoBrowser(demo, attacker_ip(0))
        schedule = attack_schedule()
        attacker_checked = attacker_refused = owner_logins = 0
        for index, when in enumerate(schedule):
            clock.advance(when - clock.now())
            attacker.move(attacker_ip(index))
            response = await attacker.log_in(f"guess number {index}")
            if response.status_code == 401:
                attacker_checked += 1
            else:
                assert response.status_code == 429
                assert "only a browser that has signed in to it before" in response.text
                assert int(response.headers["retry-after"]) >= 1
                attacker_refused += 1
            if index == LOGIN_POLICY.account.free_attempts:  # the account-wide lock trips
                names = [str(event.name) for event in demo.events]
                assert names.count("authn_login_fail_max") == 1  # the alert on the account
            if index > len(schedule) // 4 and index % 60 == 0:  # the owner, once a minute
                owner_logins += 1
                response = await owner.log_in(SEED)
                assert (response.status_code, response.headers["location"]) == (303, "/account")
                if owner_logins == 1:  # a new browser of the owner's, by contrast, must wait
                    refused = await new_browser.log_in(SEED)
                    assert refused.status_code == 429
                    assert "only a browser that has signed in to it before" in refused.text
        assert attacker.device_cookie is None  # no failure or refusal ever hands one out
        assert owner_logins >= 20
        assert attacker_refused > 1500  # the account stayed under attack the whole time
        assert attacker_checked == await baseline_attacker_checks(schedule)
    finally:
        await demo.shutdown()


@pytest.mark.asyncio
async def test_a_device_cookie_that_is_stolen_forged_expired_or_foreign_does_not_help(
    clock: FrozenClock,
) -> None:
    demo = await make_demo(clock)
    try:
        owner = DemoBrowser(demo, OWNER_IP)
        await owner.log_in(SEED)
        stolen = owner.device_cookie
        assert stolen is not None
        other = DemoBrowser(demo, OWNER_IP)
        assert (await other.log_in(SEED, username="admin")).status_code == 303
        foreign = other.device_cookie  # a real device cookie, for another account
        assert foreign is not None
        clock.advance(LOGIN_POLICY.device_cookie_max_age + 1)  # the owner's cookie expires ...
        expired = stolen
        await owner.log_in(SEED)  # ... and the owner's next login gives a fresh one
        stolen = owner.device_cookie
        assert stolen is not None
        assert stolen != expired
        for index in range(LOGIN_POLICY.account.free_attempts + 1):  # trip the account
            assert (await DemoBrowser(demo, attacker_ip(index)).log_in("x")).status_code == 401
        signature_swapped = stolen[:-4] + ("AAAA" if not stolen.endswith("AAAA") else "BBBB")
        counter = 1000
        for label, value in (
            ("forged", "bm90IGEgY29va2ll.AAAA." + "A" * 43),
            ("tampered", signature_swapped),
            ("expired", expired),
            ("another account's", foreign),
        ):
            for _ in range(3):
                counter += 1
                jar = httpx.Cookies({DEVICE_COOKIE_NAME_INSECURE: value})
                thief = DemoBrowser(demo, attacker_ip(counter), jar)
                response = await thief.log_in(SEED)  # even the right password is not checked
                assert response.status_code == 429, label
        # A stolen valid cookie buys its small budget of guesses, then that cookie is locked.
        checked = 0
        for _ in range(20):
            counter += 1
            jar = httpx.Cookies({DEVICE_COOKIE_NAME_INSECURE: stolen})
            response = await DemoBrowser(demo, attacker_ip(counter), jar).log_in("guess")
            checked += response.status_code == 401
        assert checked == LOGIN_POLICY.device.free_attempts + 1
        jar = httpx.Cookies({DEVICE_COOKIE_NAME_INSECURE: stolen})
        assert (
            await DemoBrowser(demo, attacker_ip(counter + 1), jar).log_in(SEED)
        ).status_code == 429
    finally:
        await demo.shutdown()


# --- the sync path: a Flask app -----------------------------------------------------------------


def flask_app(store: Store, keyring: KeyRing, clock: FrozenClock) -> tuple[Flask, list[int]]:
    throttle = LoginThrottle(store, keyring, clock=clock)
    hasher = PasswordHasher(TEST_ONLY_PROFILE)
    users = {"owner": hasher.hash(SEED)}
    checks: list[int] = []
    app = Flask(__name__)

    @app.post("/login")
    def sign_in() -> object:
        username, password = request.form["username"], request.form["password"]

        def verify() -> bool:
            checks.append(1)
            return hasher.verify(users.get(username), password)

        attempt = throttle.attempt_sync(
            username,
            request.remote_addr or "",
            verify,
            device_cookie=request.cookies.get(DEVICE_COOKIE_NAME),
        )
        if attempt.outcome is LoginOutcome.THROTTLED:
            body = {"error": "too_many_attempts", "challenge": attempt.challenge_required}
            return body, 429, {"Retry-After": attempt.decision.retry_after_header}
        if not attempt.ok:
            return {"error": "invalid_credentials"}, 401
        headers = {}
        if attempt.device_cookie is not None:
            headers["Set-Cookie"] = throttle.device_cookie(attempt.device_cookie).serialize()
        return {"user": username}, 200, headers

    return app, checks


def test_flask_owner_gets_in_while_the_account_is_under_attack(
    any_store: Store, clock: FrozenClock
) -> None:
    app, checks = flask_app(any_store, KeyRing.generate(), clock)
    owner = app.test_client()
    form = {"username": "owner", "password": SEED}
    first = owner.post("/login", data=form, environ_base={"REMOTE_ADDR": OWNER_IP})
    assert first.status_code == 200
    assert owner.get_cookie(DEVICE_COOKIE_NAME) is not None
    attacker = app.test_client()
    guess = {"username": "owner", "password": "guess"}
    checks.clear()
    index = 0
    for index in range(ThrottlePolicy().account.free_attempts + 1 + 300):
        clock.advance(1.0 if index > ThrottlePolicy().account.free_attempts else 0.0)
        attacker.post("/login", data=guess, environ_base={"REMOTE_ADDR": attacker_ip(index)})
    attacker_checks = len(checks)
    refused = attacker.post("/login", data=form, environ_base={"REMOTE_ADDR": attacker_ip(9999)})
    assert refused.status_code == 429
    assert refused.get_json() == {"error": "too_many_attempts", "challenge": True}
    back = owner.post("/login", data=form, environ_base={"REMOTE_ADDR": OWNER_IP})
    assert back.status_code == 200
    assert attacker_checks <= ThrottlePolicy().account.free_attempts + 1 + 300 // 60 + 7


def test_the_flask_example_gives_a_device_cookie_that_lets_the_owner_in(tmp_path: Path) -> None:
    clock = FrozenClock(START)
    app = flask_example.create_app(
        f"sqlite:///{tmp_path}/flask.db", hasher=PasswordHasher(TEST_ONLY_PROFILE), clock=clock
    )
    https = "https://localhost"

    def post(client: FlaskClient, ip: str, **form: str) -> TestResponse:
        headers = browser_headers(https)
        environ = {"REMOTE_ADDR": ip}
        return client.post(
            "/login", base_url=https, headers=headers, environ_base=environ, data=form
        )

    owner = app.test_client()
    registered = owner.post(
        "/register",
        base_url=https,
        headers=browser_headers(https),
        environ_base={"REMOTE_ADDR": OWNER_IP},
        data={"username": "ada", "password": SEED},
    )
    assert registered.status_code == 303
    first = post(owner, OWNER_IP, username="ada", password=SEED)
    assert first.status_code == 303
    assert owner.get_cookie(DEVICE_COOKIE_NAME, domain="localhost") is not None
    for index in range(ThrottlePolicy().account.free_attempts + 1):  # a distributed attack
        post(app.test_client(), attacker_ip(index), username="ada", password="guess")
    new_browser = post(app.test_client(), OWNER_IP, username="ada", password=SEED)
    assert new_browser.status_code == 429
    assert post(owner, OWNER_IP, username="ada", password=SEED).status_code == 303


# --- the engine on every store --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_device_cookie_failures_count_on_the_cookie_and_lock_it(
    any_store: Store, clock: FrozenClock
) -> None:
    ring = KeyRing.generate()
    sink = RecordingAuditSink()
    policy = ThrottlePolicy(account=BackoffRule(free_attempts=3, max_delay=60.0))
    throttle = LoginThrottle(
        any_store,
        ring,
        policy=policy,
        clock=clock,
        auditor=Auditor(IdentifierHasher(ring), clock, sink),
    )
    owner = await throttle.attempt("alice", OWNER_IP, answer(True))
    cookie = owner.device_cookie
    assert cookie is not None
    for index in range(4):
        await throttle.attempt("alice", attacker_ip(index), answer(False))
    assert sink.names().count("authn_login_fail_max") == 1
    blocked = await throttle.attempt("alice", OWNER_IP, answer(True))
    assert blocked.outcome is LoginOutcome.THROTTLED
    assert blocked.decision.counter is ThrottleCounter.ACCOUNT
    assert blocked.challenge_required
    # The owner's typos count on their cookie, not on the account.
    for _ in range(policy.device.free_attempts):
        typo = await throttle.attempt("alice", OWNER_IP, answer(False), device_cookie=cookie)
        assert typo.outcome is LoginOutcome.INVALID
    ok = await throttle.attempt("alice", OWNER_IP, answer(True), device_cookie=cookie)
    assert ok.ok
    assert ok.device_cookie is not None
    assert ok.device_cookie != cookie  # a fresh nonce on every success
    # Five failures on one cookie lock that cookie (for a day), not the others.
    fresh = ok.device_cookie
    for _ in range(policy.device.free_attempts + 1):
        await throttle.attempt("alice", attacker_ip(99), answer(False), device_cookie=cookie)
    locked = await throttle.attempt("alice", OWNER_IP, answer(True), device_cookie=cookie)
    assert locked.outcome is LoginOutcome.THROTTLED
    assert "device" in [e.details.get("counter") for e in sink.events if e.details]
    assert (await throttle.attempt("alice", OWNER_IP, answer(True), device_cookie=fresh)).ok


@pytest.mark.asyncio
async def test_a_passed_challenge_lets_a_password_through_and_a_failed_one_does_not(
    any_store: Store, clock: FrozenClock
) -> None:
    policy = ThrottlePolicy(account=BackoffRule(free_attempts=3, max_delay=60.0))
    throttle = LoginThrottle(any_store, KeyRing.generate(), policy=policy, clock=clock)
    for index in range(4):
        await throttle.attempt("alice", attacker_ip(index), answer(False))
    asked: list[bool] = []

    def hook(result: bool) -> Callable[[], Awaitable[bool]]:
        async def challenge() -> bool:
            asked.append(result)
            return result

        return challenge

    failed = await throttle.attempt("alice", OWNER_IP, answer(True), challenge=hook(False))
    assert failed.outcome is LoginOutcome.THROTTLED
    passed = await throttle.attempt("alice", OWNER_IP, answer(True), challenge=hook(True))
    assert passed.ok
    assert asked == [False, True]
    # A passed challenge is not asked for when nothing stands in the way.
    clock.advance(24 * 3600.0)
    assert (await throttle.attempt("bob", OWNER_IP, answer(True), challenge=hook(True))).ok
    assert asked == [False, True]
    # ... nor when another counter refuses: a challenge never bypasses the pair counter.
    for _ in range(6):
        await throttle.record_failure("carol", OWNER_IP)
    refused = await throttle.attempt("carol", OWNER_IP, answer(True), challenge=hook(True))
    assert refused.outcome is LoginOutcome.THROTTLED
    assert not refused.challenge_required  # the pair counter refuses as well as the account
    assert asked == [False, True]


def test_device_cookie_attributes_and_names() -> None:
    clock = FrozenClock(START)
    throttle = LoginThrottle(MemoryStore(clock=clock), KeyRing.generate(), clock=clock)
    value = throttle.new_device_cookie("Alice")
    secure = throttle.device_cookie(value).serialize()
    assert secure.startswith(f"{DEVICE_COOKIE_NAME}=")
    assert all(part in secure for part in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"))
    assert "alice" not in value.lower()
    plain = throttle.device_cookie(value, secure=False).serialize()
    assert plain.startswith(f"{DEVICE_COOKIE_NAME_INSECURE}=")
    assert "Secure" not in plain


@pytest.mark.asyncio
async def test_a_device_cookie_and_its_failures_survive_a_key_rotation(
    any_store: Store, clock: FrozenClock
) -> None:
    old = KeyRing.generate()
    policy = ThrottlePolicy(account=BackoffRule(free_attempts=3, max_delay=60.0))
    before = LoginThrottle(any_store, old, policy=policy, clock=clock)
    cookie = (await before.attempt("alice", OWNER_IP, answer(True))).device_cookie
    assert cookie is not None
    for index in range(4):  # trip the account-wide counter before the rotation
        await before.attempt("alice", attacker_ip(index), answer(False))
    # Two typos on the cookie before the rotation: they must still count after it.
    for _ in range(2):
        await before.attempt("alice", OWNER_IP, answer(False), device_cookie=cookie)

    rotated = KeyRing(KeyRing.generate().current, previous=[old.current])
    after = LoginThrottle(any_store, rotated, policy=policy, clock=clock)
    refused = await after.attempt("alice", OWNER_IP, answer(True))
    assert refused.outcome is LoginOutcome.THROTTLED  # the account counter kept counting
    assert refused.decision.counter is ThrottleCounter.ACCOUNT
    left = policy.device.free_attempts + 1 - 2  # the lock comes with the failure past the free ones
    for _ in range(left):
        typo = await after.attempt("alice", OWNER_IP, answer(False), device_cookie=cookie)
        assert typo.outcome is LoginOutcome.INVALID
    locked = await after.attempt("alice", OWNER_IP, answer(True), device_cookie=cookie)
    # The pre-rotation typos were counted: the cookie is locked, so it counts as none and the
    # tripped account-wide counter refuses (with the old counts lost, this login would pass).
    assert locked.outcome is LoginOutcome.THROTTLED
    assert locked.decision.counter is ThrottleCounter.ACCOUNT
    assert locked.challenge_required
