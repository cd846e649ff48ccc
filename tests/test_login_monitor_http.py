"""The login monitor on the real demo app, over HTTP (httpx ASGI transport)."""

from __future__ import annotations

import pytest

from bastion.core.audit import EventName
from bastion.core.login_monitor import LoginMonitor, LoginMonitorPolicy, Suspicion
from test_demo import client_for, log_in, make_app


@pytest.mark.asyncio
async def test_failed_logins_on_the_demo_raise_an_account_burst() -> None:
    demo = make_app()
    await demo.startup()
    found: list[Suspicion] = []
    LoginMonitor(LoginMonitorPolicy(account_failures=3), hook=found.append).attach(demo.auditor)
    try:
        async with client_for(demo) as client:
            for _ in range(3):
                answer = await log_in(client, password="wrong password for the demo 1")
                assert answer.status_code == 401
    finally:
        await demo.shutdown()
    assert [s.pattern for s in found] == ["account_burst"]
    assert any(e.name == EventName.AUTHN_LOGIN_SUSPICIOUS for e in demo.events)
