"""The request around an audit event: its user agent and client address on every event, and a
fail-closed trail that cannot record a refusal answered as 503, not 500.

Real Starlette and Flask apps behind bastion's layers, the trail on a real SQLite file; the
outage is a real one (another connection holds the database's write lock past the trail's
timeout).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import bastion.asgi
import bastion.flask
from bastion import Bastion, KeyRing
from bastion.audit import AuditPolicy, ecs_document, otel_event
from bastion.core.audit import (
    MAX_USER_AGENT_CHARS,
    Auditor,
    EventName,
    IdentifierHasher,
    Outcome,
    bind_request_id,
    current_client,
)
from bastion.core.clock import FrozenClock
from bastion.core.keys import SecretKey
from bastion.errors import AuditUnavailable, ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import browser_headers

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from starlette.requests import Request

    from bastion.runtime import Runtime

HTTPS = "https://testserver"
AGENT = "Mozilla/5.0 (X11; Linux x86_64) canary-agent/7.1"
FORGED = {**browser_headers("https://evil.example", site="cross-site")}


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


async def transfer(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("sent")


def _runtime(tmp_path: Path, *, fail_closed: bool = False, timeout: float = 5.0) -> Runtime:
    clock = FrozenClock(1_780_000_000.0)
    policy = AuditPolicy(
        store=f"sqlite:///{tmp_path / 'audit.db'}?timeout={timeout}",
        fail_closed=fail_closed,
        max_wait=0.0,
        log=False,
    )
    return Bastion(
        store=MemoryStore(clock=clock), keyring=KeyRing(SecretKey.generate()), clock=clock,
        environment="test", audit=policy,
    ).build()  # fmt: skip


def _starlette(runtime: Runtime) -> httpx.AsyncClient:
    app = bastion.asgi.protect(
        Starlette(routes=[Route("/transfer", transfer, methods=["POST"])]), runtime
    )
    transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 50000))
    return httpx.AsyncClient(transport=transport, base_url=HTTPS)


def _flask(runtime: Runtime) -> Flask:
    app = Flask(__name__)

    @app.post("/transfer")
    def flask_transfer() -> str:
        return "sent"

    bastion.flask.protect(app, runtime)
    return app


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    built = _runtime(tmp_path)
    yield built
    built.close()


# -- the user agent and the client address ----------------------------------------------------


@pytest.mark.asyncio
async def test_a_starlette_refusal_is_stored_with_its_user_agent_and_client(
    runtime: Runtime,
) -> None:
    async with _starlette(runtime) as http:
        forged = await http.post(
            "/transfer", headers={**FORGED, "User-Agent": AGENT, "Accept": "application/json"}
        )
    assert forged.status_code == 403
    assert forged.json()["reason"] == "cross_site"
    trail = runtime.audit
    trail.flush()
    (record,) = trail.query(event=EventName.MALICIOUS_CSRF)
    assert record.user_agent == AGENT
    assert record.client_ip == trail.hasher.hash("198.51.100.4", kind="client_ip").digest
    assert record.to_ecs()["user_agent"] == {"original": AGENT}
    assert record.to_otel()[2]["user_agent.original"] == AGENT
    assert trail.verify().ok


def test_a_flask_refusal_is_stored_with_its_user_agent_and_client(runtime: Runtime) -> None:
    client = _flask(runtime).test_client()
    forged = client.post(
        "/transfer",
        base_url=HTTPS,
        headers={**FORGED, "User-Agent": AGENT, "Accept": "application/json"},
        environ_base={"REMOTE_ADDR": "203.0.113.8"},
    )
    assert forged.status_code == 403
    assert forged.get_json()["reason"] == "cross_site"
    trail = runtime.audit
    trail.flush()
    (record,) = trail.query(event=EventName.MALICIOUS_CSRF)
    assert record.user_agent == AGENT
    assert record.client_ip == trail.hasher.hash("203.0.113.8", kind="client_ip").digest


@pytest.mark.asyncio
async def test_a_hostile_user_agent_is_one_clean_bounded_line(runtime: Runtime) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    # Raw bytes as a client can send them: UTF-8 of U+2028, CR LF, an ANSI escape, a JWT.
    hostile = ("x\u2028forged\r\nevent: x\x1b[31m " + jwt + " " + "A" * 600).encode()
    async with _starlette(runtime) as http:
        forged = await http.post("/transfer", headers={**FORGED, "User-Agent": hostile})
    assert forged.status_code == 403
    trail = runtime.audit
    trail.flush()
    (record,) = trail.query(event=EventName.MALICIOUS_CSRF)
    agent = record.user_agent
    assert agent is not None
    assert agent.startswith("x\u00e2\\x80\u00a8forged\\x0d\\x0aevent: x\\x1b[31m [jwt] AAA")
    assert agent.endswith("...[truncated]")
    assert len(agent) <= MAX_USER_AGENT_CHARS + len("...[truncated]")
    assert jwt not in agent
    assert agent.isprintable()


def test_outside_a_request_events_carry_neither() -> None:
    sink = Recorder()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(), sink)
    event = auditor.emit(EventName.SYS_STARTUP, outcome=Outcome.SUCCESS)
    assert event.user_agent is None
    assert event.client_ip is None
    assert current_client() == (None, None)


def test_a_callers_client_address_wins_and_describe_runs_once() -> None:
    sink = Recorder()
    hasher = IdentifierHasher(KeyRing.generate())
    auditor = Auditor(hasher, FrozenClock(), sink, aggregation=None)
    calls: list[object] = []

    def describe(source: object) -> tuple[str | None, str | None]:
        calls.append(source)
        return "agent/1", "192.0.2.1"

    token = bind_request_id("r1", describe=describe, source="scope")
    try:
        first = auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED)
        second = auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED, client_ip="192.0.2.99")
    finally:
        token.var.reset(token)
    assert calls == ["scope"]
    assert first.client_ip == hasher.hash("192.0.2.1", kind="client_ip")
    assert second.client_ip == hasher.hash("192.0.2.99", kind="client_ip")
    assert first.user_agent == second.user_agent == "agent/1"
    assert first.request_id == "r1"


def test_a_failing_describe_costs_nothing_but_the_two_fields() -> None:
    sink = Recorder()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(), sink)

    def describe(_source: object) -> tuple[str | None, str | None]:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")

    token = bind_request_id("r2", describe=describe, source=None)
    try:
        event = auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED)
    finally:
        token.var.reset(token)
    assert sink.events == [event]
    assert (event.user_agent, event.client_ip, event.request_id) == (None, None, "r2")


def test_a_user_agent_that_is_not_text_is_refused() -> None:
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(), Recorder())
    with pytest.raises(ConfigurationError) as caught:
        auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED, user_agent=b"x")  # type: ignore[arg-type]
    assert caught.value.setting == "user_agent"


def test_the_ecs_and_otel_forms_leave_out_an_unknown_agent() -> None:
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(), Recorder())
    event = auditor.emit(EventName.AUTHZ_FAIL, outcome=Outcome.BLOCKED).to_dict()
    assert event["user_agent"] is None
    assert "user_agent" not in ecs_document(event)
    assert "user_agent.original" not in otel_event(event)[2]


# -- fail closed: the refusal that cannot be recorded -----------------------------------------


def _hold_write_lock(tmp_path: Path) -> sqlite3.Connection:
    """Another process's writer: holds the audit database's write lock until closed."""
    holder = sqlite3.connect(tmp_path / "audit.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def _refusing(runtime: Runtime, tmp_path: Path) -> sqlite3.Connection:
    """The trail in its refusing state: one write tried and refused while the lock is held."""
    holder = _hold_write_lock(tmp_path)
    auditor = runtime.auditor
    auditor.emit(EventName.SYS_STARTUP, outcome=Outcome.SUCCESS)
    with pytest.raises(AuditUnavailable):
        runtime.audit.flush()
    with pytest.raises(AuditUnavailable):
        auditor.emit(EventName.SYS_STARTUP, outcome=Outcome.SUCCESS)
    return holder


@pytest.mark.asyncio
async def test_starlette_refusal_unrecordable_is_a_503_not_a_500(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, fail_closed=True, timeout=0.05)
    holder = _refusing(runtime, tmp_path)
    try:
        async with _starlette(runtime) as http:
            forged = await http.post("/transfer", headers={**FORGED, "Accept": "application/json"})
            # Another path: a repeat of the same refusal would only be counted (aggregated).
            page = await http.post("/elsewhere", headers={**FORGED, "Accept": "text/html"})
    finally:
        holder.rollback()
        holder.close()
    assert forged.status_code == 503
    assert forged.json()["error"] == "audit_unavailable"
    assert forged.headers["retry-after"] == "1"
    assert forged.headers["cache-control"] == "no-store"
    assert "content-security-policy" in forged.headers  # the headers layer's policy still
    assert page.status_code == 503
    assert page.text.startswith("Service unavailable: this action cannot be recorded")
    # Once the store takes writes again, nothing queued was lost: the first event is there.
    runtime.audit.flush()
    assert [r.event for r in runtime.audit.query()] == ["sys_startup"]
    runtime.close()


def test_flask_refusal_unrecordable_is_a_503_not_a_500(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, fail_closed=True, timeout=0.05)
    client = _flask(runtime).test_client()
    holder = _refusing(runtime, tmp_path)
    try:
        forged = client.post(
            "/transfer", base_url=HTTPS, headers={**FORGED, "Accept": "application/json"}
        )
    finally:
        holder.rollback()
        holder.close()
    assert forged.status_code == 503
    assert forged.get_json()["error"] == "audit_unavailable"
    assert forged.headers["Retry-After"] == "1"
    runtime.audit.flush()
    assert [r.event for r in runtime.audit.query()] == ["sys_startup"]
    runtime.close()


def _record_then_act(runtime: Runtime) -> str:
    """A handler that records its action first: with the trail refusing, nothing happens."""
    runtime.auditor.emit(EventName.USER_UPDATED, outcome=Outcome.SUCCESS, user="alice")
    return "updated"


@pytest.mark.asyncio
@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
async def test_an_apps_own_unrecordable_event_is_a_503(tmp_path: Path, framework: str) -> None:
    runtime = _runtime(tmp_path, fail_closed=True, timeout=0.05)
    done: list[str] = []

    async def update(_request: Request) -> PlainTextResponse:
        done.append(_record_then_act(runtime))
        return PlainTextResponse("updated")

    if framework == "fastapi":
        from fastapi import FastAPI  # noqa: PLC0415 (one parameter's framework)

        async def fastapi_update() -> str:
            done.append(_record_then_act(runtime))
            return "updated"

        inner: Starlette = FastAPI()
        inner.add_api_route("/update", fastapi_update, methods=["GET"])
    else:
        inner = Starlette(routes=[Route("/update", update)])
    app = bastion.asgi.protect(inner, runtime)
    holder = _refusing(runtime, tmp_path)
    try:
        transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as http:
            answer = await http.get("/update", headers={"Accept": "application/json"})
    finally:
        holder.rollback()
        holder.close()
    assert answer.status_code == 503
    assert answer.json()["error"] == "audit_unavailable"
    assert answer.headers["retry-after"] == "1"
    assert done == []
    runtime.close()


def test_an_apps_own_unrecordable_event_is_a_503_in_flask(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, fail_closed=True, timeout=0.05)
    app = _flask(runtime)
    done: list[str] = []

    @app.get("/update")
    def update() -> str:
        done.append(_record_then_act(runtime))
        return "updated"

    client = app.test_client()
    holder = _refusing(runtime, tmp_path)
    try:
        answer = client.get("/update", base_url=HTTPS, headers={"Accept": "application/json"})
    finally:
        holder.rollback()
        holder.close()
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "audit_unavailable"
    assert answer.headers["Retry-After"] == "1"
    assert "Content-Security-Policy" in answer.headers
    assert done == []
    runtime.close()


def test_an_apps_own_handler_for_the_outage_is_kept(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)

    async def mine(_request: Request, _error: Exception) -> PlainTextResponse:
        return PlainTextResponse("ours", status_code=503)

    inner = Starlette(exception_handlers={AuditUnavailable: mine})
    bastion.asgi.protect(inner, runtime)
    assert inner.exception_handlers[AuditUnavailable] is mine
    runtime.close()
