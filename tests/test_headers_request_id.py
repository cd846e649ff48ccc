"""Every audit event of a request carries that request's id (README, "Audit events").

SecurityHeadersMiddleware, the outermost layer, gives each request an id: the value of a
configured header set by the proxy in front (``request_id_header=``), or a fresh random one;
:class:`~bastion.core.audit.Auditor` puts it into every event emitted while the request runs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.test import Client
from werkzeug.wrappers import Response as WerkzeugResponse

from bastion.asgi.headers import SecurityHeadersMiddleware
from bastion.core.audit import Auditor, IdentifierHasher, Outcome, bind_request_id
from bastion.core.clock import FrozenClock
from bastion.core.keys import KeyRing
from bastion.demo.app import DemoApp
from bastion.passwords import TEST_ONLY_PROFILE, PasswordHasher
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.testing.csrf import afetch_token
from bastion.wsgi.headers import SecurityHeadersMiddleware as WSGISecurityHeadersMiddleware

if TYPE_CHECKING:
    from starlette.requests import Request

SEED = "correct horse battery staple for the demo"


def auditor() -> tuple[Auditor, RecordingAuditSink]:
    sink = RecordingAuditSink()
    return Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(1_000.0), sink), sink


def asgi_app(audit: Auditor, **kwargs: Any) -> Any:
    async def two_events(_request: Request) -> PlainTextResponse:
        audit.emit("first_event", outcome=Outcome.SUCCESS)
        audit.emit("second_event", outcome=Outcome.SUCCESS)
        return PlainTextResponse("ok")

    return SecurityHeadersMiddleware(Starlette(routes=[Route("/", two_events)]), **kwargs)


@pytest.mark.asyncio
async def test_each_request_has_one_id_carried_by_all_its_events() -> None:
    audit, sink = auditor()
    transport = httpx.ASGITransport(app=asgi_app(audit))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        await http.get("/")
        await http.get("/")
    ids = [event.request_id for event in sink.events]
    assert len(ids) == 4
    assert None not in ids
    assert ids[0] == ids[1]
    assert ids[2] == ids[3]
    assert ids[0] != ids[2]
    assert all(len(i) >= 16 for i in ids if i)  # random, not guessable from the previous one
    # Outside a request nothing is bound: no id is made up.
    assert audit.emit("outside", outcome=Outcome.SUCCESS).request_id is None


@pytest.mark.asyncio
async def test_the_proxy_request_id_header_is_used_when_configured() -> None:
    audit, sink = auditor()
    app = asgi_app(audit, request_id_header="X-Request-ID")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        await http.get("/", headers={"x-request-id": "lb-7f3a.42"})
        # A value that is not a plain token is not believed: a fresh id replaces it.
        await http.get("/", headers={"x-request-id": "forged\r\nevent"})
        await http.get("/", headers={"x-request-id": "x" * 500})
    ids = [event.request_id for event in sink.events]
    assert ids[:2] == ["lb-7f3a.42", "lb-7f3a.42"]
    assert ids[2] not in {None, "lb-7f3a.42"}
    assert "forged" not in (ids[2] or "")
    assert ids[4] is not None
    assert len(ids[4]) < 100


@pytest.mark.asyncio
async def test_without_the_setting_a_client_header_is_ignored() -> None:
    audit, sink = auditor()
    transport = httpx.ASGITransport(app=asgi_app(audit))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        await http.get("/", headers={"x-request-id": "chosen-by-the-client"})
    assert {event.request_id for event in sink.events} != {"chosen-by-the-client"}


def test_wsgi_each_request_has_one_id() -> None:
    audit, sink = auditor()

    def app(environ: Any, start_response: Any) -> Any:
        audit.emit("first_event", outcome=Outcome.SUCCESS)
        audit.emit("second_event", outcome=Outcome.SUCCESS)
        return WerkzeugResponse("ok")(environ, start_response)

    http = Client(WSGISecurityHeadersMiddleware(app, request_id_header="X-Request-ID"))
    http.get("/")
    http.get("/", headers={"X-Request-ID": "lb-1"})
    ids = [event.request_id for event in sink.events]
    assert ids[0] is not None
    assert ids[0] == ids[1]
    assert ids[2:] == ["lb-1", "lb-1"]


def test_an_explicit_request_id_wins_and_binding_nests() -> None:
    audit, _sink = auditor()
    token = bind_request_id("outer")
    try:
        assert audit.emit("a", outcome=Outcome.SUCCESS).request_id == "outer"
        assert audit.emit("b", outcome=Outcome.SUCCESS, request_id="given").request_id == "given"
    finally:
        token.var.reset(token)
    assert audit.emit("c", outcome=Outcome.SUCCESS).request_id is None


@pytest.mark.asyncio
async def test_demo_audit_events_carry_the_request_id() -> None:
    # README: each audit event carries the request id. The demo's were all null.
    clock = FrozenClock(time.time())
    demo = DemoApp(
        MemoryStore(clock=clock),
        clock=clock,
        seed_password=SEED,
        hasher=PasswordHasher(TEST_ONLY_PROFILE),
        production=False,
    )
    await demo.startup()
    # Seeding the accounts' roles at start-up is audited too (authz_change), outside any
    # request: only what requests emitted must carry an id.
    seeded = len(demo.events)
    assert seeded > 0
    try:
        transport = httpx.ASGITransport(app=demo)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as c:
            for password in ("a wrong password for the log", SEED):
                token = await afetch_token(c, "/login")
                await c.post(
                    "/login",
                    data={"username": "demo", "password": password, "csrf_token": token},
                )
    finally:
        await demo.shutdown()
    events = list(demo.events)[seeded:]
    names = [str(event.name) for event in events]
    assert "authn_login_fail" in names
    assert "authn_login_success" in names
    assert all(event.request_id for event in events), [e.to_dict() for e in events]
    assert len({event.request_id for event in events}) > 1
