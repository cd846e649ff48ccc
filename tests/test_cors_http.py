"""CORSMiddleware at the HTTP level: real Starlette, FastAPI and Flask apps behind it.

ASGI apps are driven through httpx's ASGITransport, Flask through werkzeug's test client; each
case runs against the three. Every case asserts the exact status and the exact set of
``Access-Control-*`` and ``Vary`` headers (absent ones included), and whether the app ran.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from bench.driver import call_asgi, http_scope
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse as FastAPIText
from flask import Flask, Response, request
from starlette.applications import Starlette
from starlette.requests import Request  # noqa: TC002 (FastAPI reads annotations at runtime)
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion.asgi.cors import CORSMiddleware
from bastion.core.audit import Auditor, IdentifierHasher, Outcome
from bastion.core.client import TrustedProxies
from bastion.core.clock import FrozenClock
from bastion.core.cors import PREFLIGHT_VARY, CORSPolicy
from bastion.core.keys import KeyRing
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi.cors import CORSMiddleware as WSGICORSMiddleware

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.audit import AuditEvent

ORIGIN = "https://app.example.com"
EVIL = "https://evil.example"
PREFLIGHT_VARY_TEXT = PREFLIGHT_VARY.decode()
METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]

CREDENTIALED = CORSPolicy(
    allow_origins=(ORIGIN, "https://*.example.org", "http://localhost:3000"),
    allow_methods=("GET", "POST", "PUT"),
    allow_headers=("content-type", "x-requested-with"),
    expose_headers=("x-request-id",),
    allow_credentials=True,
    max_age=600,
)
PUBLIC = CORSPolicy(allow_origins=("*",), allow_methods=("GET", "POST"), max_age=60)
PRIVATE = CORSPolicy(allow_origins=(ORIGIN,), allow_private_network=True)

ALLOWED_SIMPLE = {
    "access-control-allow-origin": [ORIGIN],
    "access-control-allow-credentials": ["true"],
    "access-control-expose-headers": ["x-request-id"],
    "vary": ["Origin"],
}
NOTHING = {"vary": ["Origin"]}
ALLOWED_PREFLIGHT = {
    "access-control-allow-origin": [ORIGIN],
    "access-control-allow-credentials": ["true"],
    "access-control-allow-methods": ["GET, POST, PUT"],
    "access-control-allow-headers": ["content-type, x-requested-with"],
    "access-control-max-age": ["600"],
    "vary": [PREFLIGHT_VARY_TEXT],
}
REFUSED_PREFLIGHT = {"vary": [PREFLIGHT_VARY_TEXT]}


# -- the apps --------------------------------------------------------------------------------------


def _extra(params: Any) -> dict[str, str]:
    """Headers the app adds itself: ``?vary=...`` and ``?own=1`` (its own CORS headers)."""
    extra: dict[str, str] = {}
    if params.get("vary"):
        extra["Vary"] = params["vary"]
    if params.get("own"):
        extra["Access-Control-Allow-Origin"] = "*"
        extra["Access-Control-Allow-Credentials"] = "true"
        extra["Access-Control-Max-Age"] = "99"
    return extra


def starlette_app() -> Starlette:
    async def page(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"app {request.method}", headers=_extra(request.query_params))

    return Starlette(routes=[Route("/", page, methods=METHODS)])


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/", methods=METHODS)
    async def page(request: Request) -> FastAPIText:
        return FastAPIText(f"app {request.method}", headers=_extra(request.query_params))

    return app


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.route("/", methods=METHODS, provide_automatic_options=False)
    def page() -> Response:
        return Response(f"app {request.method}", headers=_extra(request.args))

    return app


class Harness:
    """One framework's app behind the CORS layer, with a recording audit sink."""

    def __init__(
        self, framework: str, policy: CORSPolicy, proxies: TrustedProxies | None = None
    ) -> None:
        self.framework = framework
        self.sink = RecordingAuditSink()
        self.hasher = IdentifierHasher(KeyRing.generate())
        auditor = Auditor(self.hasher, FrozenClock(), self.sink)
        options: dict[str, Any] = {"auditor": auditor, "proxies": proxies, "production": False}
        if framework == "flask":
            self.flask = flask_app()
            self.flask.wsgi_app = WSGICORSMiddleware(  # type: ignore[method-assign]
                self.flask.wsgi_app, policy, **options
            )
        else:
            inner = starlette_app() if framework == "starlette" else fastapi_app()
            self.asgi = CORSMiddleware(inner, policy, **options)

    def call(
        self, method: str, headers: list[tuple[str, str | bytes]], path: str = "/"
    ) -> tuple[int, dict[str, list[str]], str]:
        """``(status, CORS and Vary headers as name -> values, body)`` of one request."""
        if self.framework == "flask":
            with self.flask.test_client() as client:
                wsgi_headers = [
                    (n, v.decode("latin-1") if isinstance(v, bytes) else v) for n, v in headers
                ]
                response = client.open(path, method=method, headers=wsgi_headers)
                return (
                    response.status_code,
                    _cors_headers(list(response.headers.items())),
                    response.get_data(as_text=True),
                )
        return asyncio.run(self._call_asgi(method, headers, path))

    async def _call_asgi(
        self, method: str, headers: list[tuple[str, str | bytes]], path: str
    ) -> tuple[int, dict[str, list[str]], str]:
        transport = httpx.ASGITransport(app=self.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="https://api.test") as client:
            response = await client.request(method, path, headers=headers)
        return (
            response.status_code,
            _cors_headers(list(response.headers.multi_items())),
            response.text,
        )

    def events(self) -> list[AuditEvent]:
        return list(self.sink.events)


def _cors_headers(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in items:
        lowered = name.lower()
        if lowered.startswith("access-control-") or lowered == "vary":
            found.setdefault(lowered, []).append(value)
    return found


FRAMEWORKS = ["starlette", "fastapi", "flask"]


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def harness(framework: str) -> Harness:
    return Harness(framework, CREDENTIALED)


def preflight(
    origin: str | bytes = ORIGIN, method: str = "PUT", headers: str | None = None
) -> list[tuple[str, str | bytes]]:
    found: list[tuple[str, str | bytes]] = [
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
    ]
    if headers is not None:
        found.append(("Access-Control-Request-Headers", headers))
    return found


# -- actual requests -------------------------------------------------------------------------------


def test_allowed_origin_gets_its_origin_credentials_and_vary(harness: Harness) -> None:
    assert harness.call("GET", [("Origin", ORIGIN)]) == (200, ALLOWED_SIMPLE, "app GET")
    assert harness.events() == []


def test_no_origin_gets_only_vary(harness: Harness) -> None:
    assert harness.call("GET", []) == (200, NOTHING, "app GET")


def test_pattern_matches_one_or_more_labels_and_echoes_the_origin(harness: Harness) -> None:
    for origin in ("https://a.example.org", "https://a.b-c.example.org"):
        status, headers, body = harness.call("POST", [("Origin", origin)])
        assert (status, body) == (200, "app POST")
        assert headers == {**ALLOWED_SIMPLE, "access-control-allow-origin": [origin]}


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param(EVIL, id="evil"),
        pytest.param("https://app.example.com.evil.example", id="suffix-appended"),
        pytest.param("https://example.org", id="pattern-suffix-itself"),
        pytest.param("https://evilexample.org", id="pattern-no-label-boundary"),
        pytest.param("https://example.org.evil", id="pattern-suffix-inside"),
        pytest.param("https://a.example.org.", id="pattern-trailing-dot"),
        pytest.param("https://app.example.com.", id="trailing-dot"),
        pytest.param("null", id="null"),
        pytest.param("HTTPS://APP.EXAMPLE.COM", id="upper-case"),
        pytest.param("https://App.example.com", id="mixed-case-host"),
        pytest.param("https://a@app.example.com", id="userinfo"),
        pytest.param("https://a@x.example.org", id="userinfo-pattern"),
        pytest.param("https://app.example.com:443", id="default-port-written"),
        pytest.param("https://app.example.com:8443", id="other-port"),
        pytest.param("https://a.example.org:8443", id="pattern-other-port"),
        pytest.param("http://app.example.com", id="other-scheme"),
        pytest.param("https://app.example.com/", id="trailing-slash"),
        pytest.param("https://app.example.com/path", id="path"),
        pytest.param("", id="empty"),
        pytest.param(" https://app.example.com", id="leading-space"),
        pytest.param("https://" + "a" * 60 + ".a" * 150 + ".example.org", id="oversized"),
        pytest.param(b"https://\xc3\xa9.example.org", id="non-ascii"),
        pytest.param("https://*.example.org", id="the-pattern-itself"),
    ],
)
def test_disallowed_or_malformed_origin_gets_no_cors_header(
    harness: Harness, origin: str | bytes
) -> None:
    assert harness.call("GET", [("Origin", origin)]) == (200, NOTHING, "app GET")
    assert harness.call("GET", [("Origin", origin)], path="/?own=1") == (200, NOTHING, "app GET")


def test_two_origin_headers_get_nothing(harness: Harness) -> None:
    headers: list[tuple[str, str | bytes]] = [("Origin", ORIGIN), ("Origin", ORIGIN)]
    assert harness.call("GET", headers) == (200, NOTHING, "app GET")
    status, cors, body = harness.call(
        "OPTIONS", [*headers, ("Access-Control-Request-Method", "PUT")]
    )
    assert (status, cors) == (403, REFUSED_PREFLIGHT)
    assert body == "CORS preflight refused: origin_malformed"


def test_the_apps_own_cors_headers_are_replaced(harness: Harness) -> None:
    assert harness.call("GET", [("Origin", ORIGIN)], path="/?own=1") == (
        200,
        ALLOWED_SIMPLE,
        "app GET",
    )


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ("Accept-Encoding", ["Accept-Encoding, Origin"]),
        ("accept-encoding, origin", ["accept-encoding, origin"]),
        ("ORIGIN", ["ORIGIN"]),
        ("*", ["*"]),
        ("X-Origin-Id", ["X-Origin-Id, Origin"]),
    ],
)
def test_vary_is_merged_never_duplicated(harness: Harness, vary: str, expected: list[str]) -> None:
    for origin in (ORIGIN, EVIL):
        status, headers, _ = harness.call("GET", [("Origin", origin)], path=f"/?vary={vary}")
        assert status == 200
        assert headers["vary"] == expected


# -- preflights ------------------------------------------------------------------------------------


def test_allowed_preflight_is_answered_without_the_app(harness: Harness) -> None:
    answer = harness.call("OPTIONS", preflight(headers="Content-Type, X-Requested-With"))
    assert answer == (204, ALLOWED_PREFLIGHT, "")
    assert harness.events() == []


def test_preflight_method_compared_as_normalize_method(harness: Harness) -> None:
    assert harness.call("OPTIONS", preflight(method="put")) == (204, ALLOWED_PREFLIGHT, "")


def test_preflight_from_a_pattern_origin_echoes_it(harness: Harness) -> None:
    origin = "https://x.example.org"
    assert harness.call("OPTIONS", preflight(origin)) == (
        204,
        {**ALLOWED_PREFLIGHT, "access-control-allow-origin": [origin]},
        "",
    )


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param(preflight(EVIL), "origin_disallowed", id="evil-origin"),
        pytest.param(preflight("null"), "origin_disallowed", id="null"),
        pytest.param(preflight("https://example.org.evil.example"), "origin_disallowed", id="sfx"),
        pytest.param(preflight("HTTPS://APP.EXAMPLE.COM"), "origin_malformed", id="case"),
        pytest.param(preflight("https://app.example.com."), "origin_malformed", id="dot"),
        pytest.param(preflight("https://a@app.example.com"), "origin_malformed", id="userinfo"),
        pytest.param(preflight(method="DELETE"), "method_disallowed", id="method"),
        pytest.param(preflight(method="PUT, DELETE"), "method_malformed", id="two-methods"),
        pytest.param(preflight(method=""), "method_malformed", id="empty-method"),
        pytest.param(preflight(method="P" * 65), "method_malformed", id="long-method"),
        pytest.param(preflight(""), "origin_malformed", id="empty-origin"),
        pytest.param(preflight(headers="content-type, x-evil"), "header_disallowed", id="hdr"),
        pytest.param(preflight(headers="authorization"), "header_disallowed", id="auth"),
        pytest.param(preflight(headers="x@y"), "headers_malformed", id="bad-header"),
        pytest.param(preflight(headers="a," * 70), "headers_malformed", id="many-headers"),
        pytest.param(
            [*preflight(), ("Access-Control-Request-Private-Network", "true")],
            "private_network_disallowed",
            id="private-network",
        ),
    ],
)
def test_refused_preflight_is_403_without_cors_headers_and_audited(
    harness: Harness, headers: list[tuple[str, str | bytes]], reason: str
) -> None:
    assert harness.call("OPTIONS", headers) == (
        403,
        REFUSED_PREFLIGHT,
        f"CORS preflight refused: {reason}",
    )
    events = harness.events()
    assert [str(e.name) for e in events] == ["malicious_cors"]
    event = events[0]
    assert event.outcome is Outcome.BLOCKED
    assert event.client_ip is not None
    assert dict(event.details)["reason"] == reason
    assert dict(event.details)["path"] == "/"
    assert dict(event.details)["origin"] == dict(headers)["Origin"]


def test_refusal_audit_records_the_client_behind_a_trusted_proxy(framework: str) -> None:
    harness = Harness(framework, CREDENTIALED, TrustedProxies(["127.0.0.1"]))
    forwarded = [*preflight(EVIL), ("X-Forwarded-For", "203.0.113.9")]
    assert harness.call("OPTIONS", forwarded)[0] == 403
    [event] = harness.events()
    assert event.client_ip == harness.hasher.hash("203.0.113.9", kind="client_ip")
    assert dict(event.details) == {
        "reason": "origin_disallowed",
        "origin": EVIL,
        "method": "PUT",
        "path": "/",
    }


def test_plain_options_goes_to_the_app(harness: Harness) -> None:
    assert harness.call("OPTIONS", [("Origin", ORIGIN)]) == (200, ALLOWED_SIMPLE, "app OPTIONS")
    assert harness.call("OPTIONS", [("Access-Control-Request-Method", "PUT")]) == (
        200,
        NOTHING,
        "app OPTIONS",
    )
    assert harness.events() == []


def test_get_with_request_method_header_is_not_a_preflight(harness: Harness) -> None:
    assert harness.call("GET", preflight()) == (200, ALLOWED_SIMPLE, "app GET")


# -- other policies --------------------------------------------------------------------------------


PUBLIC_SIMPLE = {
    "access-control-allow-origin": ["*"],
    # the policy's default expose_headers: the rate-limit layer's headers
    "access-control-expose-headers": ["retry-after, ratelimit, ratelimit-policy"],
}


@pytest.mark.parametrize("origin", [None, ORIGIN, EVIL, "null", "HTTPS://X"])
def test_public_policy_sends_a_static_star_without_vary(framework: str, origin: str | None) -> None:
    harness = Harness(framework, PUBLIC)
    headers: list[tuple[str, str | bytes]] = [] if origin is None else [("Origin", origin)]
    assert harness.call("GET", headers) == (200, PUBLIC_SIMPLE, "app GET")
    assert harness.call("GET", headers, path="/?own=1&vary=Accept") == (
        200,
        {**PUBLIC_SIMPLE, "vary": ["Accept"]},
        "app GET",
    )


def test_public_policy_preflight_answers_star_never_the_origin(framework: str) -> None:
    harness = Harness(framework, PUBLIC)
    assert harness.call("OPTIONS", preflight(EVIL, method="POST")) == (
        204,
        {
            "access-control-allow-origin": ["*"],
            "access-control-allow-methods": ["GET, POST"],
            "access-control-max-age": ["60"],
            "vary": [PREFLIGHT_VARY_TEXT],
        },
        "",
    )
    assert harness.call("OPTIONS", preflight("HTTPS://X", method="POST"))[:2] == (
        403,
        REFUSED_PREFLIGHT,
    )


def test_private_network_preflight_allowed_only_by_the_flag(framework: str) -> None:
    harness = Harness(framework, PRIVATE)
    asked = [*preflight(method="GET"), ("Access-Control-Request-Private-Network", "true")]
    expected = {
        "access-control-allow-origin": [ORIGIN],
        "access-control-allow-methods": ["GET, HEAD, POST"],
        "access-control-max-age": ["600"],
        "vary": [PREFLIGHT_VARY_TEXT],
    }
    assert harness.call("OPTIONS", asked) == (
        204,
        {**expected, "access-control-allow-private-network": ["true"]},
        "",
    )
    assert harness.call("OPTIONS", preflight(method="GET")) == (204, expected, "")


def test_null_origin_only_with_the_flag(framework: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="bastion.security.cors"):
        harness = Harness(framework, CORSPolicy(allow_origins=(ORIGIN,), allow_null=True))
    assert "allow_null=True" in caplog.text
    assert harness.call("GET", [("Origin", "null")]) == (
        200,
        {
            "access-control-allow-origin": ["null"],
            "access-control-expose-headers": ["retry-after, ratelimit, ratelimit-policy"],
            "vary": ["Origin"],
        },
        "app GET",
    )


# -- ASGI specifics: a raw scope (lower-case method), WebSockets -----------------------------------


def _raw(app: Callable[..., Any], method: str, headers: list[tuple[bytes, bytes]]) -> Any:
    return asyncio.run(call_asgi(app, http_scope(method, "/", headers=headers)))


@pytest.mark.parametrize("inner", [starlette_app, fastapi_app])
def test_lower_case_options_is_a_preflight_under_asgi(inner: Callable[[], Any]) -> None:
    app = CORSMiddleware(inner(), CREDENTIALED, production=False)
    headers = [(b"origin", ORIGIN.encode()), (b"access-control-request-method", b"PUT")]
    status, sent, body = _raw(app, "options", headers)
    assert (status, body) == (204, b"")
    assert _cors_headers([(n.decode(), v.decode()) for n, v in sent]) == ALLOWED_PREFLIGHT


def test_lower_case_options_is_a_preflight_under_wsgi() -> None:
    harness = Harness("flask", CREDENTIALED)
    assert harness.call("options", preflight()) == (204, ALLOWED_PREFLIGHT, "")


def test_websocket_scope_passes_through_untouched() -> None:
    seen: list[Any] = []
    sent: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send({"type": "websocket.accept", "headers": [(b"x-app", b"1")]})

    async def collect(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    app = CORSMiddleware(inner, CREDENTIALED, production=False)
    scope = {"type": "websocket", "path": "/ws", "headers": [(b"origin", EVIL.encode())]}
    asyncio.run(app(scope, receive, collect))
    assert seen == [scope]
    assert sent == [{"type": "websocket.accept", "headers": [(b"x-app", b"1")]}]
