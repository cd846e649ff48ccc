"""A real Starlette app behind ``bastion.asgi.protect`` writing its audit events into a stored
trail (``Bastion(auditor=trail.auditor())``, the wiring available today), and the ECS and
OpenTelemetry forms of what it stored."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import bastion.asgi
from audit_store_support import open_trail
from bastion import Bastion, KeyRing
from bastion.audit import AuditPolicy, AuditRecord, ecs_document, otel_event
from bastion.core.audit import EventName, Outcome
from bastion.core.clock import FrozenClock
from bastion.core.keys import SecretKey
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.testing.csrf import browser_headers

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.requests import Request

HTTPS = "https://testserver"


async def transfer(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("sent")


@pytest.mark.asyncio
async def test_a_refused_cross_site_post_is_stored_and_queryable(tmp_path: Path) -> None:
    ring = KeyRing(SecretKey.generate())
    clock = FrozenClock(1_780_000_000.0)
    trail = open_trail(f"sqlite:///{tmp_path / 'audit.db'}", ring, clock)
    runtime = Bastion(
        store=MemoryStore(clock=clock), keyring=ring, auditor=trail.auditor(), clock=clock,
        environment="test",
    ).build()  # fmt: skip
    app = bastion.asgi.protect(
        Starlette(routes=[Route("/transfer", transfer, methods=["POST"])]), runtime
    )
    transport = httpx.ASGITransport(app=app, client=("198.51.100.4", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as http:
        forged = await http.post(
            "/transfer",
            headers={**browser_headers("https://evil.example", site="cross-site"),
                     "Accept": "application/json"},
        )  # fmt: skip
    assert forged.status_code == 403
    assert forged.json()["reason"] == "cross_site"
    trail.flush()

    (record,) = trail.query(event=EventName.MALICIOUS_CSRF)
    assert record.outcome == Outcome.BLOCKED
    assert record.details["reason"] == "cross_site"
    assert record.client_ip == trail.hasher.hash("198.51.100.4", kind="client_ip").digest
    assert "198.51.100.4" not in str(record.to_dict())
    assert record.request_id is not None
    assert trail.verify().ok

    ecs = record.to_ecs()
    assert ecs["event"]["action"] == "malicious_csrf"
    assert ecs["event"]["category"] == ["intrusion_detection", "web"]
    assert ecs["event"]["type"] == ["indicator", "denied"]
    assert ecs["event"]["outcome"] == "failure"
    assert ecs["http"]["request"]["id"] == record.request_id
    assert ecs["bastion"]["client_ip"] == record.client_ip
    assert ecs["bastion"]["chain_mac"] == record.mac
    name, severity, attributes = record.to_otel()
    assert (name, severity) == ("bastion.malicious_csrf", 13)
    assert attributes["bastion.detail.reason"] == "cross_site"
    runtime.close()
    trail.close()


def test_mappings_of_a_login_event(tmp_path: Path) -> None:
    trail = open_trail(f"sqlite:///{tmp_path / 'a.db'}", KeyRing.generate(), FrozenClock())
    event = trail.auditor(aggregation=None).emit(
        EventName.AUTHN_LOGIN_SUCCESS, outcome=Outcome.SUCCESS, user="alice", session="s1"
    )
    ecs = ecs_document(event.to_dict())
    assert ecs["@timestamp"] == "2023-11-14T22:13:20.000Z"
    assert ecs["ecs"]["version"] == "8.11.0"
    assert ecs["event"]["category"] == ["authentication"]
    assert ecs["event"]["outcome"] == "success"
    assert ecs["user"]["id"] == trail.hasher.hash("alice").digest
    assert "event.sequence" not in str(ecs)
    name, severity, attributes = otel_event(event.to_dict())
    assert (name, severity) == ("bastion.authn_login_success", 9)
    assert attributes["user.id"] == ecs["user"]["id"]
    assert attributes["session.id"] == trail.hasher.hash("s1", kind="session").digest
    trail.flush()
    (stored,) = trail.query()
    assert isinstance(stored, AuditRecord)
    assert stored.to_dict() == event.to_dict()
    trail.close()


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"store": "memory://"}, "store"),
        ({"store": " "}, "store"),
        ({"queue_size": 0}, "queue_size"),
        ({"batch_size": 20_000}, "batch_size"),  # above the queue
        ({"flush_interval": 0}, "flush_interval"),
        ({"max_wait": -1}, "max_wait"),
        ({"segment_events": True}, "segment_events"),
        ({"seal_after": float("inf")}, "seal_after"),
        ({"retention": 60.0}, "retention"),  # shorter than seal_after
        ({"fail_closed": "yes"}, "fail_closed"),
        ({"log": 1}, "log"),
    ],
)
def test_policy_mistakes_name_the_setting(settings: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        AuditPolicy(**settings)  # type: ignore[arg-type]
    assert caught.value.setting == setting


def test_query_arguments_are_checked(tmp_path: Path) -> None:
    trail = open_trail(f"sqlite:///{tmp_path / 'a.db'}", KeyRing.generate(), FrozenClock())
    with pytest.raises(ConfigurationError, match="limit"):
        trail.query(limit=0)
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 (the mistake under test)
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        trail.query(since=naive)
    trail.close()
