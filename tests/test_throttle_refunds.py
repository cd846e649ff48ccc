"""Attacks on the login throttle's reservation and refund, over HTTP on the demo.

A reservation counts an attempt as a failure at the time it is made; a right password gives it
back. Giving it back must undo it exactly: a successful login from a shared address (an office
behind one NAT) must neither restart a back-off that had run out for everyone at that address
nor keep failures older than the window alive by moving the time of the "last failure" to the
time of the success.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.core.throttle import ThrottlePolicy
from bastion.engine.throttle import LoginOutcome, LoginThrottle
from test_throttle_device_cookies import SEED, START, DemoBrowser, answer, make_demo

if TYPE_CHECKING:
    from bastion.stores.base import Store

OFFICE = "198.51.100.40"
DEFAULTS = ThrottlePolicy()
STUFFED = DEFAULTS.client.free_attempts + 5  # enough failures that the client counter waits 16 s


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


async def stuff_from_the_office(browser: DemoBrowser, clock: FrozenClock) -> None:
    """Wrong passwords for many (unknown) accounts: only the client counter fills."""
    for index in range(STUFFED):
        clock.advance(20)  # under the demo's rate limit, past every back-off so far
        response = await browser.log_in("wrong", username=f"user{index}")
        assert response.status_code == 401


@pytest.mark.asyncio
async def test_a_success_does_not_restart_a_wait_that_had_run_out(clock: FrozenClock) -> None:
    demo = await make_demo(clock)
    try:
        await stuff_from_the_office(DemoBrowser(demo, OFFICE), clock)
        clock.advance(DEFAULTS.client.delay_for(STUFFED) + 1)  # the office's wait runs out
        alice = await DemoBrowser(demo, OFFICE).log_in(SEED, username="demo")
        assert (alice.status_code, alice.headers["location"]) == (303, "/account")
        bob = await DemoBrowser(demo, OFFICE).log_in(SEED, username="admin")  # a second later
        assert (bob.status_code, bob.headers.get("location")) == (303, "/account")
    finally:
        await demo.shutdown()


@pytest.mark.asyncio
async def test_successes_do_not_keep_old_failures_alive(clock: FrozenClock) -> None:
    demo = await make_demo(clock)
    try:
        await stuff_from_the_office(DemoBrowser(demo, OFFICE), clock)
        for _ in range(6):  # someone at the office logs in every 6 hours for a day and a half
            clock.advance(6 * 3600)
            ok = await DemoBrowser(demo, OFFICE).log_in(SEED, username="demo")
            assert ok.status_code == 303
        # More than a window after the last failure: the client counter has forgotten it, so
        # two typos in a row are both checked (a live counter of 35 would refuse the second).
        typo = DemoBrowser(demo, OFFICE)
        assert (await typo.log_in("typo one", username="admin")).status_code == 401
        assert (await typo.log_in("typo two", username="admin")).status_code == 401
    finally:
        await demo.shutdown()


@pytest.mark.asyncio
async def test_a_refund_undoes_its_reservation_exactly(
    any_store: Store, clock: FrozenClock
) -> None:
    throttle = LoginThrottle(any_store, KeyRing.generate(), clock=clock)
    for index in range(STUFFED):
        clock.advance(20)
        await throttle.attempt(f"user{index}", OFFICE, answer(False))
    before = await throttle.check("someone", OFFICE)
    clock.advance(DEFAULTS.client.delay_for(STUFFED) + 1)
    assert (await throttle.attempt("mallory", OFFICE, answer(True))).outcome is LoginOutcome.SUCCESS
    assert (await throttle.check("someone", OFFICE)).allowed
    assert not before.allowed


@pytest.mark.asyncio
async def test_the_demo_over_https_sends_a_secure_host_device_cookie(clock: FrozenClock) -> None:
    import httpx  # noqa: PLC0415

    from bastion.demo.app import DemoApp  # noqa: PLC0415
    from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415
    from bastion.testing.csrf import afetch_token  # noqa: PLC0415

    demo = DemoApp(
        MemoryStore(clock=clock),
        clock=clock,
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
        https=True,
    )
    await demo.startup()
    transport = httpx.ASGITransport(app=demo)
    async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1:8443") as c:
        token = await afetch_token(c, "/login")
        data = {"username": "demo", "password": SEED, "csrf_token": token}
        response = await c.post("/login", data=data)
        assert response.status_code == 303
        device = [v for v in response.headers.get_list("set-cookie") if "device=" in v]
        assert len(device) == 1
        assert device[0].startswith("__Host-bastion-device=")
        assert "; Secure" in device[0]
    await demo.shutdown()
