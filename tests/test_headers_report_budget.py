"""The CSP report receiver's budget: one per client in front of the one for the process.

A noisy client (20 reports a second) must not make another client's reports be refused; the
client is the address bastion's trusted-proxy logic resolves (``proxies=``, a
:class:`~bastion.core.client.TrustedProxies`), IPv6 grouped by /64; the table of clients is
bounded. Real Starlette and werkzeug apps, a FrozenClock.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.test import Client
from werkzeug.wrappers import Response as WerkzeugResponse

from bastion.asgi.headers import SecurityHeadersMiddleware
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.client import TrustedProxies
from bastion.core.clock import FrozenClock
from bastion.core.headers import ClientReportBudgets, HeaderPolicy
from bastion.core.keys import KeyRing
from bastion.errors import ConfigurationError
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi.headers import SecurityHeadersMiddleware as WSGISecurityHeadersMiddleware

REPORT = json.dumps(
    {"csp-report": {"document-uri": "https://a.example/", "effective-directive": "img-src"}}
).encode()
CSP = {"content-type": "application/csp-report"}


def page(_request: Any) -> PlainTextResponse:
    return PlainTextResponse("page")


HASHER = IdentifierHasher(KeyRing.generate())


def hashed(address: str) -> Any:
    return HASHER.hash(address, kind="client_ip")


def build(**kwargs: Any) -> tuple[Any, RecordingAuditSink, FrozenClock]:
    clock = FrozenClock(1_000.0)
    sink = RecordingAuditSink()
    auditor = Auditor(HASHER, clock, sink)
    app = SecurityHeadersMiddleware(
        Starlette(routes=[Route("/", page)]),
        HeaderPolicy(report_to="/csp-report"),
        auditor=auditor,
        clock=clock,
        **kwargs,
    )
    return app, sink, clock


def client_at(app: Any, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40_000))
    return httpx.AsyncClient(transport=transport, base_url="https://testserver")


@pytest.mark.asyncio
async def test_a_noisy_client_does_not_cost_another_client_its_reports() -> None:
    # Defaults: 50 at once and 1 a second for the process, 10 at once and 0.5 a second per
    # client. The noisy client sends 20 a second for 30 s; the quiet one 7 reports meanwhile.
    app, sink, clock = build()
    noisy, quiet = client_at(app, "198.51.100.7"), client_at(app, "203.0.113.9")
    noisy_statuses: list[int] = []
    quiet_statuses: list[int] = []
    for tick in range(600):
        noisy_statuses.append(
            (await noisy.post("/csp-report", content=REPORT, headers=CSP)).status_code
        )
        if tick % 90 == 45:
            quiet_statuses.append(
                (await quiet.post("/csp-report", content=REPORT, headers=CSP)).status_code
            )
        clock.advance(0.05)
    assert quiet_statuses == [204] * 7
    # The noisy client got its own burst and refill only: 10 + 0.5/s * 30 s.
    assert noisy_statuses.count(204) <= 10 + 15 + 1
    assert set(noisy_statuses) == {204, 429}
    quiet_events = [e for e in sink.events if e.client_ip == hashed("203.0.113.9")]
    assert len(quiet_events) == 7  # nothing lost: each accepted report is audited


@pytest.mark.asyncio
async def test_ipv6_clients_are_grouped_by_slash_64() -> None:
    app, _sink, _clock = build(report_client_burst=2)
    statuses = [
        (await client_at(app, host).post("/csp-report", content=REPORT, headers=CSP)).status_code
        for host in ("2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:1:ffff::3")
    ]
    # Three addresses of one /64 share one budget of 2; another /64 has its own.
    assert statuses == [204, 204, 429]
    other = await client_at(app, "2001:db8:1:2::1").post("/csp-report", content=REPORT, headers=CSP)
    assert other.status_code == 204


@pytest.mark.asyncio
async def test_the_client_is_resolved_through_trusted_proxies_only() -> None:
    app, sink, _clock = build(
        report_client_burst=1, proxies=TrustedProxies(trusted_proxies=["10.0.0.0/8"])
    )
    proxy = client_at(app, "10.0.0.5")
    first = await proxy.post(
        "/csp-report", content=REPORT, headers={**CSP, "x-forwarded-for": "192.0.2.1"}
    )
    second = await proxy.post(
        "/csp-report", content=REPORT, headers={**CSP, "x-forwarded-for": "192.0.2.2"}
    )
    again = await proxy.post(
        "/csp-report", content=REPORT, headers={**CSP, "x-forwarded-for": "192.0.2.1"}
    )
    assert [first.status_code, second.status_code, again.status_code] == [204, 204, 429]
    assert [e.client_ip for e in sink.events] == [hashed("192.0.2.1"), hashed("192.0.2.2")]
    # An untrusted peer's X-Forwarded-For is ignored: it is keyed by its own address.
    direct = client_at(app, "192.0.2.50")
    statuses = [
        (
            await direct.post(
                "/csp-report", content=REPORT, headers={**CSP, "x-forwarded-for": f"198.51.100.{i}"}
            )
        ).status_code
        for i in range(3)
    ]
    assert statuses == [204, 429, 429]


@pytest.mark.asyncio
async def test_the_global_budget_still_bounds_the_process() -> None:
    app, _sink, _clock = build(report_burst=5, report_client_burst=3)
    statuses = [
        (
            await client_at(app, f"192.0.2.{i}").post("/csp-report", content=REPORT, headers=CSP)
        ).status_code
        for i in range(8)
    ]
    assert statuses == [204] * 5 + [429] * 3


def test_the_table_of_clients_is_bounded() -> None:
    clock = FrozenClock(0.0)
    budgets = ClientReportBudgets(clock, burst=1, per_second=0.01, max_clients=100)
    for i in range(10_000):
        assert budgets.take(f"192.0.2.{i}") is True
    assert len(budgets) == 100
    # The most recent clients are remembered, and are refused until they refill.
    assert budgets.take("192.0.2.9999") is False
    clock.advance(100.0)
    assert budgets.take("192.0.2.9999") is True


def test_budget_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError) as caught:
        build(report_client_burst=0)
    assert caught.value.setting == "report_client_burst"
    with pytest.raises(ConfigurationError) as caught:
        build(report_client_rate=-1)
    assert caught.value.setting == "report_client_rate"
    with pytest.raises(ConfigurationError) as caught:
        ClientReportBudgets(FrozenClock(), burst=1, per_second=1.0, max_clients=0)
    assert caught.value.setting == "report_max_clients"


def test_wsgi_a_noisy_client_does_not_cost_another_client_its_reports() -> None:
    clock = FrozenClock(1_000.0)
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KeyRing.generate()), clock, sink)

    def wsgi_app(environ: Any, start_response: Any) -> Any:
        return WerkzeugResponse("page")(environ, start_response)

    app = WSGISecurityHeadersMiddleware(
        wsgi_app, HeaderPolicy(report_to="/csp-report"), auditor=auditor, clock=clock
    )
    http = Client(app)

    def post(address: str) -> int:
        response = http.post(
            "/csp-report",
            data=REPORT,
            content_type="application/csp-report",
            environ_base={"REMOTE_ADDR": address},
        )
        return response.status_code

    quiet: list[int] = []
    for tick in range(600):
        post("198.51.100.7")
        if tick % 90 == 45:
            quiet.append(post("203.0.113.9"))
        clock.advance(0.05)
    assert quiet == [204] * 7


def test_wsgi_the_client_is_resolved_through_trusted_proxies_only() -> None:
    clock = FrozenClock(1_000.0)
    sink = RecordingAuditSink()
    auditor = Auditor(HASHER, clock, sink)

    def wsgi_app(environ: Any, start_response: Any) -> Any:
        return WerkzeugResponse("page")(environ, start_response)

    app = WSGISecurityHeadersMiddleware(
        wsgi_app,
        HeaderPolicy(report_to="/csp-report"),
        auditor=auditor,
        clock=clock,
        report_client_burst=1,
        proxies=TrustedProxies(trusted_proxies=["10.0.0.0/8"]),
    )
    http = Client(app)

    def post(peer: str, forwarded: str) -> int:
        response = http.post(
            "/csp-report",
            data=REPORT,
            content_type="application/csp-report",
            headers={"X-Forwarded-For": forwarded},
            environ_base={"REMOTE_ADDR": peer},
        )
        return response.status_code

    via_proxy = [post("10.0.0.5", ip) for ip in ("192.0.2.1", "192.0.2.2", "192.0.2.1")]
    assert via_proxy == [204, 204, 429]
    assert [e.client_ip for e in sink.events] == [hashed("192.0.2.1"), hashed("192.0.2.2")]
    # An untrusted peer's X-Forwarded-For is ignored: it is keyed by its own address.
    direct = [post("192.0.2.50", f"198.51.100.{i}") for i in range(3)]
    assert direct == [204, 429, 429]
