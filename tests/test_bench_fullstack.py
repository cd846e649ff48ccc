"""The ``fullstack`` bench group builds, proves each case once, and refuses broken cases.

No timing is asserted. The group is built on the shared Redis server (the ``redis_url``
fixture), every case's set-up proof runs, and every case answers one timed-style request. Then
the proofs are shown to fail on stacks that do not do what a case's name says (CSRF off, a
session that is never stored, a rule that is absent or refusing), so that a broken case cannot
report a fast figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from bench.driver import call_asgi, http_scope
from bench.group import Options
from bench.groups import GROUP_NAMES, load_group
from bench.groups.fullstack import (
    KINDS,
    NO_RULE,
    OURS,
    PEER,
    REDIS_KINDS,
    Browser,
    RotatingClient,
    bastion_stack,
    browser_for,
    fullstack_cases,
    make_app,
    ok_request,
    prove,
    request_for,
)
from bench.instructions import CASES

import bastion
import bastion.asgi

if TYPE_CHECKING:
    from bench.driver import ASGIApp, Receive, Scope, Send


def test_fullstack_is_a_registered_group() -> None:
    assert "fullstack" in GROUP_NAMES
    assert load_group("fullstack").name == "fullstack"


@pytest.mark.asyncio
async def test_every_case_is_proved_and_answers(redis_url: str) -> None:
    async with fullstack_cases(Options(redis_url=redis_url)) as cases:
        names = [case.name for case in cases]
        by_name = {case.name: case for case in cases}
        for where, kinds in (("memory", KINDS), ("redis", REDIS_KINDS)):
            for kind in kinds:
                base = f"{where} {kind}: {PEER}"
                assert by_name[base].baseline is None
                for label in (OURS, NO_RULE):
                    assert by_name[f"{where} {kind}: {label}"].baseline == base
        floor = "redis GET modify: floor GET+SET (bare app, no middleware)"
        assert by_name[f"redis GET modify: {OURS} (vs floor)"].baseline == floor
        assert by_name[f"redis GET modify: {NO_RULE} (vs floor)"].baseline == floor
        assert len(names) == len(set(names)) == 5 * 3 + 1 + 3 * 3 + 2
        for case in cases:
            assert case.async_op is not None
            await case.async_op()


def test_instruction_counts_cover_the_memory_rows() -> None:
    names = {case.name: case.baseline for case in CASES}
    for kind in KINDS:
        base = f"fullstack memory {kind}: {PEER}"
        assert base in names
        for label in (OURS, NO_RULE):
            assert names[f"fullstack memory {kind}: {label}"] == base
    csrf = "fullstack csrf-only GET: bastion CSRF"
    assert names[csrf] == "fullstack csrf-only GET: pass-through layer"


# -- the proofs refuse what is not what the name says ---------------------------------------------


def _protect(**changes: Any) -> ASGIApp:
    config = bastion.Bastion(
        store="memory://",
        keyring=bastion.KeyRing.generate(),
        environment=bastion.Environment.PRODUCTION,
    ).replace(**changes)
    return RotatingClient(bastion.asgi.protect(make_app(), config))


@pytest.mark.asyncio
async def test_a_stack_without_csrf_fails_both_post_proofs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("ERROR", logger="bastion.security")
    stack = _protect()
    browser = await browser_for(stack, ours=True)
    for kind in ("POST token", "POST fetch-metadata"):  # with CSRF on, both proofs pass
        await prove("on", kind, stack, request_for(kind, browser), headers=True, rule=False)

    no_csrf = _protect(csrf=None, environment=bastion.Environment.DEVELOPMENT)
    _status, headers, _body = await call_asgi(no_csrf, http_scope("GET", "/modify"))
    cookie = next(v for k, v in headers if k == b"set-cookie").split(b";")[0]
    unchecked = Browser(cookie, (b"x-csrf-token", b"not-checked"))
    for kind in ("POST token", "POST fetch-metadata"):
        template = request_for(kind, unchecked)
        with pytest.raises(RuntimeError, match="should refuse answered 200"):
            await prove("off", kind, no_csrf, template, headers=True, rule=False)


class FreshSession:
    """A session that is never stored: every request sees an empty dict."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["session"] = {}
        await self.app(scope, receive, send)


@pytest.mark.asyncio
async def test_a_session_that_is_never_stored_fails_read_and_modify() -> None:
    stack = FreshSession(make_app())
    browser = NO_BROWSER
    with pytest.raises(RuntimeError, match="not n >= 1"):
        await prove(
            "x", "GET read", stack, request_for("GET read", browser), headers=False, rule=False
        )
    with pytest.raises(RuntimeError, match="n b'1' then b'1'"):
        await prove(
            "x", "GET modify", stack, request_for("GET modify", browser), headers=False, rule=False
        )


NO_BROWSER = Browser(b"none=1", (b"x-csrftoken", b"t"))


@pytest.mark.asyncio
async def test_the_rule_is_proved_present_or_absent_and_a_refusal_stops_the_run() -> None:
    with_rule = RotatingClient(bastion_stack(make_app(), "memory://"))
    without = RotatingClient(bastion_stack(make_app(), "memory://", rule=False))
    for stack, rule in ((with_rule, True), (without, False)):
        browser = await browser_for(stack, ours=True)
        template = request_for("GET untouched", browser)
        await prove("ok", "GET untouched", stack, template, headers=True, rule=rule)
        with pytest.raises(RuntimeError, match="RateLimit header present is not"):
            await prove("x", "GET untouched", stack, template, headers=True, rule=not rule)

    tight = bastion.asgi.protect(
        make_app(),
        bastion.Bastion(
            store="memory://",
            keyring=bastion.KeyRing.generate(),
            rate_limits=(bastion.Rule("pages", "2/minute"),),
            environment=bastion.Environment.PRODUCTION,
        ),
    )
    template = request_for("GET untouched", NO_BROWSER)
    await ok_request(tight, template)
    await ok_request(tight, template)
    with pytest.raises(RuntimeError, match="-> 429"):
        await ok_request(tight, template)
    assert (await call_asgi(tight, template))[0] == 429
