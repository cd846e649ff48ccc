"""``bastion=`` on the CSRF, headers, CORS and rate-limit middlewares, ASGI and WSGI.

Each layer reads its own slice of the configuration and the shared fields (key ring, auditor,
proxies, clock, environment) and nothing else: a headers layer builds without the store that
session-held CSRF tokens need, and opens no store. A setting passed beside ``bastion=`` is a
ConfigurationError naming it; so is a layer whose slice the configuration turns off.
Real apps through httpx (ASGI) and werkzeug (WSGI).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import werkzeug.test

import bastion.asgi
import bastion.wsgi
from bastion import Bastion
from bastion.asgi.cors import CORSMiddleware
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock, system_clock
from bastion.core.cors import CORSPolicy
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.headers import Preset
from bastion.core.keys import KeyRing
from bastion.engine.ratelimit import Rule
from bastion.errors import ConfigurationError
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi.cors import CORSMiddleware as WSGICORSMiddleware

KEYRING = KeyRing.generate()
ORIGIN = "https://app.example"
# Unusable as a store: a layer that opened it would fail.
MISSING_STORE = "sqlite:////nonexistent-dir/for/sure/app.db"
DOUBLE = CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT)
CORS = CORSPolicy(allow_origins=(ORIGIN,))


async def asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_ok(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi_call(app: Any, method: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        return await client.request(method, "/", headers=headers)


def wsgi_call(app: Any, method: str, headers: dict[str, str]) -> Any:
    return werkzeug.test.Client(app).open(
        "/", method=method, base_url="https://testserver", headers=headers
    )


async def call(adapter: str, app: Any, method: str = "GET", **headers: str) -> tuple[int, Any]:
    named = {k.replace("_", "-"): v for k, v in headers.items()}
    if adapter == "asgi":
        response = await asgi_call(app, method, named)
        return response.status_code, response.headers
    answer = wsgi_call(app, method, named)
    return answer.status_code, answer.headers


MIDDLEWARES = {
    ("asgi", "csrf"): bastion.asgi.CSRFMiddleware,
    ("wsgi", "csrf"): bastion.wsgi.CSRFMiddleware,
    ("asgi", "headers"): bastion.asgi.SecurityHeadersMiddleware,
    ("wsgi", "headers"): bastion.wsgi.SecurityHeadersMiddleware,
    ("asgi", "cors"): CORSMiddleware,
    ("wsgi", "cors"): WSGICORSMiddleware,
    ("asgi", "rate_limit"): bastion.asgi.RateLimitMiddleware,
    ("wsgi", "rate_limit"): bastion.wsgi.RateLimitMiddleware,
}
INNER = {"asgi": asgi_ok, "wsgi": wsgi_ok}
ADAPTERS = pytest.mark.parametrize("adapter", ["asgi", "wsgi"])


def layer(adapter: str, kind: str, settings: Any, **kwargs: Any) -> Any:
    return MIDDLEWARES[adapter, kind](INNER[adapter], bastion=settings, **kwargs)


@pytest.mark.asyncio
@ADAPTERS
async def test_csrf_reads_its_slice(adapter: str) -> None:
    config = Bastion(store=MISSING_STORE, keyring=KEYRING, csrf=DOUBLE, environment="test")
    app = layer(adapter, "csrf", config)
    assert app.config is DOUBLE
    assert (await call(adapter, app, "POST", sec_fetch_site="cross-site"))[0] == 403
    assert (await call(adapter, app, "POST", sec_fetch_site="same-origin"))[0] == 200
    status, headers = await call(adapter, app)
    assert status == 200
    assert "set-cookie" not in headers  # nothing asked for a token


@pytest.mark.asyncio
@ADAPTERS
async def test_headers_read_their_slice_and_no_other(adapter: str) -> None:
    # The CSRF slice (session tokens) would need a store to build a runtime; headers do not.
    config = Bastion(headers=Preset.API, store=MISSING_STORE, environment="test")
    status, headers = await call(adapter, layer(adapter, "headers", config))
    assert status == 200
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "access-control-allow-origin" not in headers
    routed = Bastion(
        headers=Preset.STRICT, header_routes={"/*": Preset.API}, environment="test", csrf=None
    )
    _status, strict = await call(adapter, layer(adapter, "headers", routed))
    assert strict["content-security-policy"] == headers["content-security-policy"]


@pytest.mark.asyncio
@ADAPTERS
async def test_cors_reads_its_slice(adapter: str) -> None:
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(KEYRING), system_clock, sink)
    config = Bastion(cors=CORS, auditor=auditor, store=MISSING_STORE, environment="test")
    app = layer(adapter, "cors", config)
    status, headers = await call(adapter, app, origin=ORIGIN)
    assert (status, headers["access-control-allow-origin"]) == (200, ORIGIN)
    status, headers = await call(
        adapter, app, "OPTIONS", origin="https://evil.example", access_control_request_method="PUT"
    )
    assert status == 403
    assert [event.name for event in sink.events] == ["malicious_cors"]  # the config's auditor


@pytest.mark.asyncio
@ADAPTERS
async def test_rate_limit_reads_its_slice(adapter: str) -> None:
    config = Bastion(
        rate_limits=(Rule("api", "1/minute"),),
        clock=FrozenClock(1_700_000_000.0),
        keyring=KEYRING,
        csrf=DOUBLE,
        environment="test",
    )
    app = layer(adapter, "rate_limit", config)
    assert (await call(adapter, app))[0] == 200
    status, headers = await call(adapter, app)
    assert (status, headers["retry-after"]) == (429, "60")


@pytest.mark.parametrize(
    ("kind", "argument", "value", "field"),
    [
        ("csrf", "config", DOUBLE, "csrf"),
        ("csrf", "keyring", KEYRING, "keyring"),
        ("csrf", "identity", lambda _scope: "u", "csrf_identity"),
        ("csrf", "production", False, "environment"),
        ("csrf", "clock", FrozenClock(), "clock"),
        ("headers", "policy", Preset.API, "headers"),
        ("headers", "overrides", {"/x": Preset.API}, "header_routes"),
        ("headers", "proxies", bastion.TrustedProxies(), "proxies"),
        ("cors", "policy", CORS, "cors"),
        ("cors", "auditor", Auditor.default(KEYRING, system_clock), "auditor"),
        ("rate_limit", "rules", [Rule("api", "1/minute")], "rate_limits"),
        ("rate_limit", "key", lambda _request: "k", "proxies"),
    ],
)
@ADAPTERS
def test_bastion_beside_an_explicit_setting_is_refused(
    adapter: str, kind: str, argument: str, value: Any, field: str
) -> None:
    config = Bastion(
        csrf=DOUBLE, keyring=KEYRING, cors=CORS, rate_limits=(Rule("api", "1/minute"),)
    )
    with pytest.raises(ConfigurationError) as caught:
        layer(adapter, kind, config, **{argument: value})
    assert caught.value.setting == argument
    assert f"Bastion({field}=...) instead of {argument}=" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "changes", "field"),
    [
        ("csrf", {"csrf": None}, "csrf"),
        ("headers", {"headers": None}, "headers"),
        ("cors", {}, "cors"),
        ("rate_limit", {}, "rate_limits"),
    ],
)
@ADAPTERS
def test_a_layer_the_configuration_turns_off_is_refused(
    adapter: str, kind: str, changes: dict[str, Any], field: str
) -> None:
    config = Bastion(keyring=KEYRING, csrf=DOUBLE).replace(**changes)
    with pytest.raises(ConfigurationError) as caught:
        layer(adapter, kind, config)
    assert caught.value.setting == field
    assert "turns the layer off" in str(caught.value)


@ADAPTERS
def test_a_runtime_shares_its_auditor_and_proxies(adapter: str) -> None:
    runtime = Bastion(keyring=KEYRING, csrf=DOUBLE, cors=CORS, environment="test").build()
    csrf = layer(adapter, "csrf", runtime)
    assert csrf._guard.proxies is runtime.proxies
    assert csrf._guard._auditor is runtime.auditor


def test_something_else_as_bastion_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        bastion.asgi.CSRFMiddleware(asgi_ok, bastion=object())  # type: ignore[arg-type]
    assert caught.value.setting == "bastion"
