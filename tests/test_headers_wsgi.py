"""The WSGI SecurityHeadersMiddleware on a real Flask app (Flask's test client)."""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, Response, render_template_string, request
from tests.test_headers import API, RELAXED, STRICT
from tests.test_headers_asgi import REPORT, make_auditor

from bastion.core.clock import FrozenClock
from bastion.core.headers import HeaderPolicy
from bastion.errors import ConfigurationError
from bastion.wsgi.headers import SecurityHeadersMiddleware, add_jinja2_globals, csp_nonce

if TYPE_CHECKING:
    from bastion.testing.audit import RecordingAuditSink

POLICY_NAMES = {*STRICT, *API, *RELAXED, "reporting-endpoints"}
NONCE_IN_CSP = re.compile(r"'nonce-([0-9a-f]{32})'")
PAGE = (
    '<!doctype html><title>t</title><style nonce="{{ csp_nonce() }}">p{}</style>'
    '<script nonce="{{ csp_nonce() }}">1</script>'
)


def flask_app(policy: Any = "strict", **options: Any) -> Flask:
    app = Flask(__name__)
    add_jinja2_globals(app.jinja_env)

    @app.get("/")
    def page() -> str:
        return render_template_string(PAGE)

    @app.get("/state")
    def state() -> str:
        return csp_nonce(request)

    @app.get("/own-csp")
    def own_csp() -> Response:
        response = Response("x")
        response.headers["Content-Security-Policy"] = "default-src 'self'"
        return response

    @app.get("/fingerprinted")
    def fingerprinted() -> Response:
        return Response("x", headers={"Server": "werkzeug", "X-Powered-By": "Flask"})

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("handler failed")

    @app.get("/docs")
    def docs() -> str:
        return "docs"

    app.wsgi_app = SecurityHeadersMiddleware(app.wsgi_app, policy, **options)
    return app


def headers_of(response: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() in POLICY_NAMES}


def nonce_of(response: Any) -> str:
    found = set(NONCE_IN_CSP.findall(response.headers["Content-Security-Policy"]))
    assert len(found) == 1
    return found.pop()


def expected(table: dict[str, str], nonce: str | None, *, https: bool) -> dict[str, str]:
    out = {k: v.replace("0123456789abcdef0123456789abcdef", nonce or "") for k, v in table.items()}
    if not https:
        out.pop("strict-transport-security", None)
    return out


HTTPS = {"base_url": "https://localhost"}


@pytest.mark.parametrize(("preset", "table"), [("strict", STRICT), ("relaxed", RELAXED)])
def test_presets_exact_over_https(preset: str, table: dict[str, str]) -> None:
    response = flask_app(preset).test_client().get("/state", **HTTPS)
    assert response.status_code == 200
    assert headers_of(response) == expected(table, nonce_of(response), https=True)


def test_api_preset_and_plain_http() -> None:
    client = flask_app("api").test_client()
    assert headers_of(client.get("/docs", **HTTPS)) == API
    assert headers_of(client.get("/docs")) == expected(API, None, https=False)


def test_hsts_forced_over_http() -> None:
    response = flask_app(HeaderPolicy(hsts_over_http=True)).test_client().get("/docs")
    assert response.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"


def test_nonce_per_response_in_template_and_request() -> None:
    client = flask_app().test_client()
    first, second = client.get("/"), client.get("/")
    one, two = nonce_of(first), nonce_of(second)
    assert one != two
    assert first.text.count(f'nonce="{one}"') == 2
    assert second.text.count(f'nonce="{two}"') == 2
    state = client.get("/state")
    assert state.text == nonce_of(state)


def test_handler_header_kept_unless_forced() -> None:
    kept = flask_app().test_client().get("/own-csp")
    assert kept.headers.getlist("Content-Security-Policy") == ["default-src 'self'"]
    forced = flask_app(HeaderPolicy(force=frozenset({"content-security-policy"})))
    replaced = forced.test_client().get("/own-csp")
    assert replaced.headers.getlist("Content-Security-Policy")[0].startswith("default-src 'none'")
    assert len(replaced.headers.getlist("Content-Security-Policy")) == 1


def test_fingerprinting_headers_removed() -> None:
    response = flask_app().test_client().get("/fingerprinted")
    assert "Server" not in response.headers
    assert "X-Powered-By" not in response.headers


def test_per_route_override() -> None:
    client = flask_app(overrides={"/docs": "relaxed"}).test_client()
    docs = client.get("/docs", **HTTPS)
    assert headers_of(docs) == expected(RELAXED, nonce_of(docs), https=True)
    page = client.get("/state", **HTTPS)
    assert headers_of(page) == expected(STRICT, nonce_of(page), https=True)


@pytest.mark.parametrize(
    ("path", "table"),
    [
        ("/legacy", RELAXED),
        ("/legacy/", RELAXED),
        ("/legacy/page", RELAXED),
        ("/legacyx", STRICT),
        ("/login", API),
        ("/login/", STRICT),
        ("/login/x", STRICT),
    ],
)
def test_override_keys_are_path_patterns(path: str, table: dict[str, str]) -> None:
    app = flask_app(overrides={"/legacy/*": "relaxed", "/login": "api"})
    response = app.test_client().get(path, **HTTPS)
    assert response.status_code == 404  # Flask's own 404 page carries the policy
    found = NONCE_IN_CSP.findall(response.headers["Content-Security-Policy"])
    assert headers_of(response) == expected(table, found[0] if found else None, https=True)


def test_an_override_key_with_a_trailing_slash_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        flask_app(overrides={"/legacy/": "relaxed"})
    assert str(caught.value) == (
        "overrides: '/legacy/' ends in '/'; write '/legacy/*' for the prefix or '/legacy' for "
        "the exact path"
    )
    assert caught.value.setting == "overrides"


def test_headers_on_flask_404_and_500() -> None:
    client = flask_app().test_client()
    missing = client.get("/nowhere", **HTTPS)
    assert missing.status_code == 404
    assert headers_of(missing) == expected(STRICT, nonce_of(missing), https=True)
    failed = client.get("/boom", **HTTPS)
    assert failed.status_code == 500
    assert headers_of(failed) == expected(STRICT, nonce_of(failed), https=True)


def test_csp_nonce_without_middleware_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match="wrap the WSGI app"):
        csp_nonce({"PATH_INFO": "/"})


@pytest.fixture
def reporting() -> tuple[Any, RecordingAuditSink, FrozenClock]:
    clock = FrozenClock(1_000.0)
    auditor, sink = make_auditor(clock)
    app = flask_app(
        HeaderPolicy(report_to="/csp-report"),
        auditor=auditor,
        report_max_bytes=1024,
        report_burst=3,
        clock=clock,
    )
    return app.test_client(), sink, clock


def post(client: Any, body: bytes, content_type: str) -> Any:
    return client.post("/csp-report", data=body, content_type=content_type)


def test_report_accepted(reporting: Any) -> None:
    client, sink, _ = reporting
    response = post(client, json.dumps(REPORT).encode(), "application/csp-report")
    assert response.status_code == 204
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    [event] = sink.events
    assert event.name == "csp_violation"
    assert event.details["document_url"] == "https://testserver/page"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"{", "application/csp-report", 400, "malformed"),
        (json.dumps(REPORT).encode(), "text/plain", 415, "unsupported_media_type"),
        (b" " * 2000, "application/csp-report", 413, "too_large"),
    ],
)
def test_report_refusals(
    reporting: Any, body: bytes, content_type: str, status: int, reason: str
) -> None:
    client, sink, _ = reporting
    assert post(client, body, content_type).status_code == status
    assert [dict(e.details) for e in sink.events] == [{"field": "csp_report", "reason": reason}]


def test_report_flood_and_method(reporting: Any) -> None:
    client, _, clock = reporting
    body = json.dumps(REPORT).encode()
    statuses = [post(client, body, "application/csp-report").status_code for _ in range(5)]
    assert statuses == [204, 204, 204, 429, 429]
    assert post(client, body, "application/csp-report").headers["Retry-After"] == "1"
    clock.advance(10)
    response = client.get("/csp-report")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_report_without_length_is_refused(reporting: Any) -> None:
    client, _, _ = reporting
    response = client.post(
        "/csp-report",
        input_stream=None,
        environ_overrides={
            "CONTENT_TYPE": "application/csp-report",
            "CONTENT_LENGTH": "",
            "wsgi.input_terminated": False,
        },
    )
    assert response.status_code == 411


def test_opt_outs_warn_and_unsafe_ones_are_refused_in_production(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.security.headers")
    unsafe = HeaderPolicy(referrer_policy="unsafe-url")
    with pytest.raises(ConfigurationError) as caught:
        flask_app(unsafe, production=True)
    assert caught.value.setting == "referrer_policy"
    caplog.clear()
    response = flask_app(unsafe, production=False).test_client().get("/docs")
    assert response.headers["Referrer-Policy"] == "unsafe-url"
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "bastion.security.headers"]
    assert "referrer_policy: 'unsafe-url' sends full URLs" in logged
