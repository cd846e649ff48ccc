"""Every refusal each ASGI and WSGI layer sends itself, pinned byte for byte.

The layers send their refusals through one sender per adapter (``bastion.asgi._http`` and
``bastion.wsgi._http``); these tests hold the status, the headers (names, values, order) and
the body each layer sent before they shared it, so the move changes nothing on the wire.
Real parts: memory stores, a Redis URL on a closed port for the session outage, a FrozenClock.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from bastion.asgi import (
    CSRFMiddleware,
    RateLimitMiddleware,
    SecurityHeadersMiddleware,
    SessionMiddleware,
)
from bastion.asgi.cors import CORSMiddleware
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.cors import CORSPolicy
from bastion.core.headers import HeaderPolicy
from bastion.core.keys import KeyRing
from bastion.core.sessions import SessionConfig
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi import CSRFMiddleware as WSGICSRFMiddleware
from bastion.wsgi import RateLimitMiddleware as WSGIRateLimitMiddleware
from bastion.wsgi import SecurityHeadersMiddleware as WSGISecurityHeadersMiddleware
from bastion.wsgi import SessionMiddleware as WSGISessionMiddleware
from bastion.wsgi.cors import CORSMiddleware as WSGICORSMiddleware

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.asgi.types import Message

SESSIONS = SessionConfig(cookie_name="session", secure=False, development=True)
JSON_ACCEPT = (b"accept", b"application/json")
HTML_ACCEPT = (b"accept", b"text/html")
CROSS_SITE = (b"sec-fetch-site", b"cross-site")


async def asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_ok(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def run_asgi(
    app: Any,
    method: str = "GET",
    path: str = "/",
    headers: Iterable[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    kind: str = "http",
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Drive ``app`` with one request; its answer's status, headers and body."""
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http" if kind == "http" else "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("203.0.113.9", 5000),
        "server": ("testserver", 80),
        "extensions": {"websocket.http.response": {}} if kind == "websocket" else {},
    }
    incoming: list[Message] = (
        [{"type": "websocket.connect"}]
        if kind == "websocket"
        else [{"type": "http.request", "body": body, "more_body": False}]
    )
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    assert start["type"].endswith("response.start"), sent
    return start["status"], list(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def run_wsgi(
    app: Any, method: str = "GET", path: str = "/", environ: dict[str, Any] | None = None
) -> tuple[str, list[tuple[str, str]], bytes]:
    body = (environ or {}).pop("body", b"")
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "203.0.113.9",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        **(environ or {}),
    }
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        started.append((status, list(headers)))
        return lambda _data: None

    chunks = app(env, start_response)
    payload = b"".join(chunks)
    return started[-1][0], started[-1][1], payload


def limiter() -> RateLimiter:
    return RateLimiter(MemoryStore(clock=FrozenClock(1_700_000_000.0)))


CORS = CORSPolicy(allow_origins=("https://app.example",), allow_headers=("content-type",))


def _outage_store() -> RedisStore:
    return RedisStore.from_url("redis://127.0.0.1:1/0", socket_timeout=1, connect_timeout=1)


def _asgi_rate_limited(accept: tuple[bytes, bytes]) -> Any:
    app = RateLimitMiddleware(asgi_ok, limiter(), [Rule("api", "1/minute")])
    run_asgi(app)
    return run_asgi(app, headers=[accept])


def _wsgi_rate_limited(accept: str) -> Any:
    app = WSGIRateLimitMiddleware(wsgi_ok, limiter(), [Rule("api", "1/minute")])
    run_wsgi(app)
    return run_wsgi(app, environ={"HTTP_ACCEPT": accept})


def _asgi_session_outage() -> Any:
    app = SessionMiddleware(asgi_ok, store=_outage_store(), config=SESSIONS, production=False)
    return run_asgi(app, headers=[JSON_ACCEPT, (b"cookie", b"session=" + b"a" * 43)])


def _wsgi_session_outage() -> Any:
    app = WSGISessionMiddleware(wsgi_ok, store=_outage_store(), config=SESSIONS, production=False)

    def touching(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        environ["bastion.session"]["x"] = 1
        return wsgi_ok(environ, start_response)

    app.app = touching
    return run_wsgi(app, environ={"HTTP_ACCEPT": "text/html"})


def _auditor() -> Auditor:
    return Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(1_000.0), RecordingAuditSink())


def _asgi_headers(method: str, body: bytes, content_type: bytes) -> Any:
    app = SecurityHeadersMiddleware(
        asgi_ok,
        HeaderPolicy(report_to="/csp-report"),
        auditor=_auditor(),
        clock=FrozenClock(1_000.0),
    )
    return run_asgi(app, method, "/csp-report", [(b"content-type", content_type)], body=body)


def _wsgi_headers(method: str, body: bytes, content_type: str) -> Any:
    app = WSGISecurityHeadersMiddleware(
        wsgi_ok,
        HeaderPolicy(report_to="/csp-report"),
        auditor=_auditor(),
        clock=FrozenClock(1_000.0),
    )
    return run_wsgi(app, method, "/csp-report", {"CONTENT_TYPE": content_type, "body": body})


def _broken_key(view: Any) -> str:
    raise RuntimeError("the key function is broken")


BROKEN = Rule("api", "1/minute", key=_broken_key)


def _starlette_limited(accept: tuple[bytes, bytes], *, fastapi: bool = False) -> Any:
    """A Starlette endpoint (or a FastAPI path operation) under ``limit``, refused."""
    from fastapi import FastAPI  # noqa: PLC0415
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.responses import PlainTextResponse  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    from bastion.integrations.ratelimit import limit  # noqa: PLC0415

    app: Any
    if fastapi:
        app = FastAPI()

        @app.get("/")
        @limit(limiter(), Rule("api", "1/minute"))
        async def operation() -> dict[str, str]:  # no request parameter
            return {"ok": "yes"}

    else:

        @limit(limiter(), Rule("api", "1/minute"))
        async def endpoint(request: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        app = Starlette(routes=[Route("/", endpoint)])
    run_asgi(app)
    return run_asgi(app, headers=[accept])


def _fastapi_dependency_limited(
    accept: tuple[bytes, bytes], *, own_handler: bool = False, rule: Rule | None = None
) -> Any:
    """A FastAPI route behind ``Depends(RateLimit(...))``, refused; ``own_handler``: the app
    renders ``HTTPException`` itself, which must not reach the rate limiter's refusal."""
    from fastapi import Depends, FastAPI, HTTPException  # noqa: PLC0415
    from starlette.responses import PlainTextResponse  # noqa: PLC0415

    from bastion.integrations.ratelimit import RateLimit  # noqa: PLC0415

    app = FastAPI()
    if own_handler:

        async def teapot(request: Any, exc: Exception) -> PlainTextResponse:
            return PlainTextResponse("mine", status_code=418)

        app.add_exception_handler(HTTPException, teapot)

    dependency = RateLimit(limiter(), rule or Rule("api", "1/minute"))

    @app.get("/", dependencies=[Depends(dependency)])
    async def home() -> dict[str, str]:
        return {"ok": "yes"}

    if rule is None:
        run_asgi(app)
    return run_asgi(app, headers=[accept])


def _flask_limited(accept: str, rule: Rule | None = None) -> Any:
    import flask  # noqa: PLC0415

    from bastion.integrations.ratelimit import flask_limit  # noqa: PLC0415

    app = flask.Flask("wire")

    @app.get("/")
    @flask_limit(limiter(), rule or Rule("api", "1/minute"))
    def home() -> str:
        return "ok"

    if rule is None:
        run_wsgi(app)
    return run_wsgi(app, environ={"HTTP_ACCEPT": accept})


REPORT = json.dumps({"csp-report": {"blocked-uri": "https://evil.example/x.js"}}).encode()
PREFLIGHT = [(b"origin", b"https://app.example"), (b"access-control-request-method", b"PUT")]
GOOD_PREFLIGHT = [(b"origin", b"https://app.example"), (b"access-control-request-method", b"POST")]


CASES: dict[str, Any] = {
    "asgi csrf 403 json": lambda: run_asgi(
        CSRFMiddleware(asgi_ok, production=False), "POST", headers=[CROSS_SITE, JSON_ACCEPT]
    ),
    "asgi csrf 403 html": lambda: run_asgi(
        CSRFMiddleware(asgi_ok, production=False), "POST", headers=[CROSS_SITE, HTML_ACCEPT]
    ),
    "asgi csrf websocket 403": lambda: run_asgi(
        CSRFMiddleware(asgi_ok, production=False),
        headers=[(b"origin", b"https://evil.example")],
        kind="websocket",
    ),
    "asgi headers 405": lambda: _asgi_headers("GET", b"", b"text/plain"),
    "asgi headers 204": lambda: _asgi_headers("POST", REPORT, b"application/csp-report"),
    "asgi headers 400": lambda: _asgi_headers("POST", b"{", b"application/csp-report"),
    "asgi cors 403": lambda: run_asgi(CORSMiddleware(asgi_ok, CORS), "OPTIONS", headers=PREFLIGHT),
    "asgi cors 204": lambda: run_asgi(
        CORSMiddleware(asgi_ok, CORS), "OPTIONS", headers=GOOD_PREFLIGHT
    ),
    "asgi sessions 503": _asgi_session_outage,
    "asgi ratelimit 429 json": lambda: _asgi_rate_limited(JSON_ACCEPT),
    "asgi ratelimit 429 text": lambda: _asgi_rate_limited(HTML_ACCEPT),
    "starlette limit 429 json": lambda: _starlette_limited(JSON_ACCEPT),
    "starlette limit 429 text": lambda: _starlette_limited(HTML_ACCEPT),
    "fastapi limit 429 json": lambda: _starlette_limited(JSON_ACCEPT, fastapi=True),
    "fastapi limit 429 text": lambda: _starlette_limited(HTML_ACCEPT, fastapi=True),
    "fastapi dependency 429 json": lambda: _fastapi_dependency_limited(JSON_ACCEPT),
    "fastapi dependency 429 text": lambda: _fastapi_dependency_limited(HTML_ACCEPT),
    "fastapi dependency 429 beside the app's handler": lambda: _fastapi_dependency_limited(
        JSON_ACCEPT, own_handler=True
    ),
    "asgi ratelimit 503 failed key": lambda: run_asgi(
        RateLimitMiddleware(asgi_ok, limiter(), [BROKEN]), headers=[JSON_ACCEPT]
    ),
    "wsgi ratelimit 503 failed key": lambda: run_wsgi(
        WSGIRateLimitMiddleware(wsgi_ok, limiter(), [BROKEN]), environ={"HTTP_ACCEPT": "text/html"}
    ),
    "fastapi dependency 503 failed key": lambda: _fastapi_dependency_limited(
        JSON_ACCEPT, rule=BROKEN
    ),
    "flask limit 503 failed key": lambda: _flask_limited("text/html", BROKEN),
    "flask limit 429 json": lambda: _flask_limited("application/json"),
    "flask limit 429 text": lambda: _flask_limited("text/html"),
    "wsgi csrf 403 json": lambda: run_wsgi(
        WSGICSRFMiddleware(wsgi_ok, production=False),
        "POST",
        environ={"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ACCEPT": "application/json"},
    ),
    "wsgi csrf 403 html": lambda: run_wsgi(
        WSGICSRFMiddleware(wsgi_ok, production=False),
        "POST",
        environ={"HTTP_SEC_FETCH_SITE": "cross-site", "HTTP_ACCEPT": "text/html"},
    ),
    "wsgi headers 405": lambda: _wsgi_headers("GET", b"", "text/plain"),
    "wsgi headers 204": lambda: _wsgi_headers("POST", REPORT, "application/csp-report"),
    "wsgi headers 400": lambda: _wsgi_headers("POST", b"{", "application/csp-report"),
    "wsgi cors 403": lambda: run_wsgi(
        WSGICORSMiddleware(wsgi_ok, CORS),
        "OPTIONS",
        environ={"HTTP_ORIGIN": "https://app.example", "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "PUT"},
    ),
    "wsgi cors 204": lambda: run_wsgi(
        WSGICORSMiddleware(wsgi_ok, CORS),
        "OPTIONS",
        environ={
            "HTTP_ORIGIN": "https://app.example",
            "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "POST",
        },
    ),
    "wsgi sessions 503": _wsgi_session_outage,
    "wsgi ratelimit 429 json": lambda: _wsgi_rate_limited("application/json"),
    "wsgi ratelimit 429 text": lambda: _wsgi_rate_limited("text/html"),
}


EXPECTED: dict[str, Any] = {
    "asgi cors 204": (
        204,
        [
            (b"access-control-allow-origin", b"https://app.example"),
            (b"access-control-allow-methods", b"GET, HEAD, POST"),
            (b"access-control-allow-headers", b"content-type"),
            (b"access-control-max-age", b"600"),
            (
                b"vary",
                (
                    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, A"
                    b"ccess-Control-Request-Private-Network"
                ),
            ),
            (b"content-length", b"0"),
        ],
        b"",
    ),
    "asgi cors 403": (
        403,
        [
            (
                b"vary",
                (
                    b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, A"
                    b"ccess-Control-Request-Private-Network"
                ),
            ),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"41"),
        ],
        b"CORS preflight refused: method_disallowed",
    ),
    "asgi csrf 403 html": (
        403,
        [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"257"),
            (b"cache-control", b"no-store"),
        ],
        (
            b"<!doctype html><html><head><meta charset=utf-8><title>Forbidden (CSR"
            b"F check failed)</title></head><body><h1>Forbidden (CSRF check failed"
            b")</h1><p>Sec-Fetch-Site says this request came from another site.</p"
            b"><p>Reason: <code>cross_site</code></p></body></html>"
        ),
    ),
    "asgi csrf 403 json": (
        403,
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"137"),
            (b"cache-control", b"no-store"),
        ],
        (
            b'{"error": "csrf_failed", "reason": "cross_site", "detail": "CSRF che'
            b'ck failed: Sec-Fetch-Site says this request came from another site."'
            b"}"
        ),
    ),
    "asgi csrf websocket 403": (
        403,
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"155"),
            (b"cache-control", b"no-store"),
        ],
        (
            b'{"error": "csrf_failed", "reason": "websocket_origin", "detail":'
            b' "CSRF check failed: The WebSocket handshake came from an origin'
            b' this app does not trust."}'
        ),
    ),
    "asgi headers 204": (
        204,
        [
            (b"reporting-endpoints", b'csp-endpoint="/csp-report"'),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (
                b"permissions-policy",
                (
                    b"accelerometer=(), autoplay=(), camera=(), display-capture=(), encryp"
                    b"ted-media=(), fullscreen=(self), geolocation=(), gyroscope=(), magne"
                    b"tometer=(), microphone=(), midi=(), payment=(), picture-in-picture=("
                    b"), publickey-credentials-get=(self), screen-wake-lock=(), usb=(), xr"
                    b"-spatial-tracking=()"
                ),
            ),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-embedder-policy", b"require-corp"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"x-xss-protection", b"0"),
            (b"x-permitted-cross-domain-policies", b"none"),
            (b"origin-agent-cluster", b"?1"),
            (b"x-dns-prefetch-control", b"off"),
            (
                b"content-security-policy",
                (
                    b"default-src 'none'; script-src 'nonce-N' 'strict-dynamic'; style-src"
                    b" 'self' 'nonce-N'; img-src 'self'; font-src 'self'; connect-src 'sel"
                    b"f'; manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-"
                    b"ancestors 'none'; report-to csp-endpoint; report-uri /csp-report"
                ),
            ),
        ],
        b"",
    ),
    "asgi headers 400": (
        400,
        [
            (b"content-length", b"0"),
            (b"reporting-endpoints", b'csp-endpoint="/csp-report"'),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (
                b"permissions-policy",
                (
                    b"accelerometer=(), autoplay=(), camera=(), display-capture=(), encryp"
                    b"ted-media=(), fullscreen=(self), geolocation=(), gyroscope=(), magne"
                    b"tometer=(), microphone=(), midi=(), payment=(), picture-in-picture=("
                    b"), publickey-credentials-get=(self), screen-wake-lock=(), usb=(), xr"
                    b"-spatial-tracking=()"
                ),
            ),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-embedder-policy", b"require-corp"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"x-xss-protection", b"0"),
            (b"x-permitted-cross-domain-policies", b"none"),
            (b"origin-agent-cluster", b"?1"),
            (b"x-dns-prefetch-control", b"off"),
            (
                b"content-security-policy",
                (
                    b"default-src 'none'; script-src 'nonce-N' 'strict-dynamic'; style-src"
                    b" 'self' 'nonce-N'; img-src 'self'; font-src 'self'; connect-src 'sel"
                    b"f'; manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-"
                    b"ancestors 'none'; report-to csp-endpoint; report-uri /csp-report"
                ),
            ),
        ],
        b"",
    ),
    "asgi headers 405": (
        405,
        [
            (b"allow", b"POST"),
            (b"content-length", b"0"),
            (b"reporting-endpoints", b'csp-endpoint="/csp-report"'),
            (b"x-frame-options", b"DENY"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (
                b"permissions-policy",
                (
                    b"accelerometer=(), autoplay=(), camera=(), display-capture=(), encryp"
                    b"ted-media=(), fullscreen=(self), geolocation=(), gyroscope=(), magne"
                    b"tometer=(), microphone=(), midi=(), payment=(), picture-in-picture=("
                    b"), publickey-credentials-get=(self), screen-wake-lock=(), usb=(), xr"
                    b"-spatial-tracking=()"
                ),
            ),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cross-origin-embedder-policy", b"require-corp"),
            (b"cross-origin-resource-policy", b"same-origin"),
            (b"x-xss-protection", b"0"),
            (b"x-permitted-cross-domain-policies", b"none"),
            (b"origin-agent-cluster", b"?1"),
            (b"x-dns-prefetch-control", b"off"),
            (
                b"content-security-policy",
                (
                    b"default-src 'none'; script-src 'nonce-N' 'strict-dynamic'; style-src"
                    b" 'self' 'nonce-N'; img-src 'self'; font-src 'self'; connect-src 'sel"
                    b"f'; manifest-src 'self'; form-action 'self'; base-uri 'none'; frame-"
                    b"ancestors 'none'; report-to csp-endpoint; report-uri /csp-report"
                ),
            ),
        ],
        b"",
    ),
    "asgi ratelimit 429 json": (
        429,
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"56"),
            (b"ratelimit-policy", b'"api";q=1;w=60'),
            (b"ratelimit", b'"api";r=0;t=60'),
            (b"retry-after", b"60"),
        ],
        b'{"error": "rate_limited", "detail": "Too Many Requests"}',
    ),
    "asgi ratelimit 429 text": (
        429,
        [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"17"),
            (b"ratelimit-policy", b'"api";q=1;w=60'),
            (b"ratelimit", b'"api";r=0;t=60'),
            (b"retry-after", b"60"),
        ],
        b"Too Many Requests",
    ),
    "asgi sessions 503": (
        503,
        [
            (b"content-type", b"application/json"),
            (b"content-length", b"135"),
            (b"cache-control", b"no-store"),
            (b"retry-after", b"5"),
        ],
        (
            b'{"error": "session_store_unavailable", "detail": "Service unavailabl'
            b'e: the session store cannot be reached. Please try again shortly."}'
        ),
    ),
    "wsgi cors 204": (
        "204 No Content",
        [
            ("access-control-allow-origin", "https://app.example"),
            ("access-control-allow-methods", "GET, HEAD, POST"),
            ("access-control-allow-headers", "content-type"),
            ("access-control-max-age", "600"),
            (
                "vary",
                (
                    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
                    "Access-Control-Request-Private-Network"
                ),
            ),
            ("content-length", "0"),
        ],
        b"",
    ),
    "wsgi cors 403": (
        "403 Forbidden",
        [
            (
                "vary",
                (
                    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
                    "Access-Control-Request-Private-Network"
                ),
            ),
            ("content-type", "text/plain; charset=utf-8"),
            ("content-length", "41"),
        ],
        b"CORS preflight refused: method_disallowed",
    ),
    "wsgi csrf 403 html": (
        "403 Forbidden",
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", "257"),
            ("Cache-Control", "no-store"),
        ],
        (
            b"<!doctype html><html><head><meta charset=utf-8><title>Forbidden (CSR"
            b"F check failed)</title></head><body><h1>Forbidden (CSRF check failed"
            b")</h1><p>Sec-Fetch-Site says this request came from another site.</p"
            b"><p>Reason: <code>cross_site</code></p></body></html>"
        ),
    ),
    "wsgi csrf 403 json": (
        "403 Forbidden",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", "137"),
            ("Cache-Control", "no-store"),
        ],
        (
            b'{"error": "csrf_failed", "reason": "cross_site", "detail": "CSRF che'
            b'ck failed: Sec-Fetch-Site says this request came from another site."'
            b"}"
        ),
    ),
    "wsgi headers 204": (
        "204 No Content",
        [
            ("reporting-endpoints", 'csp-endpoint="/csp-report"'),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "strict-origin-when-cross-origin"),
            (
                "permissions-policy",
                (
                    "accelerometer=(), autoplay=(), camera=(), display-capture=(), "
                    "encrypted-media=(), fullscreen=(self), geolocation=(), gyroscope=(), "
                    "magnetometer=(), microphone=(), midi=(), payment=(), "
                    "picture-in-picture=(), publickey-credentials-get=(self), "
                    "screen-wake-lock=(), usb=(), xr-spatial-tracking=()"
                ),
            ),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-embedder-policy", "require-corp"),
            ("cross-origin-resource-policy", "same-origin"),
            ("x-xss-protection", "0"),
            ("x-permitted-cross-domain-policies", "none"),
            ("origin-agent-cluster", "?1"),
            ("x-dns-prefetch-control", "off"),
            (
                "content-security-policy",
                (
                    "default-src 'none'; script-src 'nonce-N' 'strict-dynamic'; style-src "
                    "'self' 'nonce-N'; img-src 'self'; font-src 'self'; connect-src "
                    "'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; "
                    "frame-ancestors 'none'; report-to csp-endpoint; report-uri "
                    "/csp-report"
                ),
            ),
        ],
        b"",
    ),
    "wsgi headers 400": (
        "400 Bad Request",
        [
            ("content-length", "0"),
            ("reporting-endpoints", 'csp-endpoint="/csp-report"'),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "strict-origin-when-cross-origin"),
            (
                "permissions-policy",
                (
                    "accelerometer=(), autoplay=(), camera=(), display-capture=(), "
                    "encrypted-media=(), fullscreen=(self), geolocation=(), gyroscope=(), "
                    "magnetometer=(), microphone=(), midi=(), payment=(), "
                    "picture-in-picture=(), publickey-credentials-get=(self), "
                    "screen-wake-lock=(), usb=(), xr-spatial-tracking=()"
                ),
            ),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-embedder-policy", "require-corp"),
            ("cross-origin-resource-policy", "same-origin"),
            ("x-xss-protection", "0"),
            ("x-permitted-cross-domain-policies", "none"),
            ("origin-agent-cluster", "?1"),
            ("x-dns-prefetch-control", "off"),
            (
                "content-security-policy",
                (
                    "default-src 'none'; script-src 'nonce-N' 'strict-dynamic'; style-src "
                    "'self' 'nonce-N'; img-src 'self'; font-src 'self'; connect-src "
                    "'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; "
                    "frame-ancestors 'none'; report-to csp-endpoint; report-uri "
                    "/csp-report"
                ),
            ),
        ],
        b"",
    ),
    "wsgi headers 405": (
        "405 Method Not Allowed",
        [
            ("allow", "POST"),
            ("content-length", "0"),
            ("reporting-endpoints", 'csp-endpoint="/csp-report"'),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "strict-origin-when-cross-origin"),
            (
                "permissions-policy",
                (
                    "accelerometer=(), autoplay=(), camera=(), display-capture=(), "
                    "encrypted-media=(), fullscreen=(self), geolocation=(), gyroscope=(), "
                    "magnetometer=(), microphone=(), midi=(), payment=(), "
                    "picture-in-picture=(), publickey-credentials-get=(self), "
                    "screen-wake-lock=(), usb=(), xr-spatial-tracking=()"
                ),
            ),
            ("cross-origin-opener-policy", "same-origin"),
            ("cross-origin-embedder-policy", "require-corp"),
            ("cross-origin-resource-policy", "same-origin"),
            ("x-xss-protection", "0"),
            ("x-permitted-cross-domain-policies", "none"),
            ("origin-agent-cluster", "?1"),
            ("x-dns-prefetch-control", "off"),
            (
                "content-security-policy",
                (
                    "default-src 'none'; script-src 'nonce-N' 'strict-dynamic'; style-src "
                    "'self' 'nonce-N'; img-src 'self'; font-src 'self'; connect-src "
                    "'self'; manifest-src 'self'; form-action 'self'; base-uri 'none'; "
                    "frame-ancestors 'none'; report-to csp-endpoint; report-uri "
                    "/csp-report"
                ),
            ),
        ],
        b"",
    ),
    "wsgi ratelimit 429 json": (
        "429 Too Many Requests",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", "56"),
            ("ratelimit-policy", '"api";q=1;w=60'),
            ("ratelimit", '"api";r=0;t=60'),
            ("retry-after", "60"),
        ],
        b'{"error": "rate_limited", "detail": "Too Many Requests"}',
    ),
    "wsgi ratelimit 429 text": (
        "429 Too Many Requests",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", "17"),
            ("ratelimit-policy", '"api";q=1;w=60'),
            ("ratelimit", '"api";r=0;t=60'),
            ("retry-after", "60"),
        ],
        b"Too Many Requests",
    ),
    "wsgi sessions 503": (
        "503 Service Unavailable",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", "84"),
            ("Cache-Control", "no-store"),
            ("Retry-After", "5"),
        ],
        (b"Service unavailable: the session store cannot be reached. Please try again shortly.\n"),
    ),
}


# Every integration refuses with the middleware's bytes.
for _name in ("starlette limit", "fastapi limit", "fastapi dependency"):
    EXPECTED[f"{_name} 429 json"] = EXPECTED["asgi ratelimit 429 json"]
    EXPECTED[f"{_name} 429 text"] = EXPECTED["asgi ratelimit 429 text"]
EXPECTED["fastapi dependency 429 beside the app's handler"] = EXPECTED["asgi ratelimit 429 json"]
EXPECTED["asgi ratelimit 503 failed key"] = (
    503,
    [(b"content-type", b"application/json"), (b"content-length", b"63")],
    b'{"error": "rate_limit_failed", "detail": "Service Unavailable"}',
)
EXPECTED["wsgi ratelimit 503 failed key"] = (
    "503 Service Unavailable",
    [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "19")],
    b"Service Unavailable",
)
EXPECTED["fastapi dependency 503 failed key"] = EXPECTED["asgi ratelimit 503 failed key"]
EXPECTED["flask limit 503 failed key"] = EXPECTED["wsgi ratelimit 503 failed key"]
EXPECTED["flask limit 429 json"] = EXPECTED["wsgi ratelimit 429 json"]
EXPECTED["flask limit 429 text"] = EXPECTED["wsgi ratelimit 429 text"]


_NONCE = re.compile(rb"nonce-[0-9a-f]{32}")


def stable(answer: tuple[Any, list[tuple[Any, Any]], bytes]) -> tuple[Any, list[Any], bytes]:
    """The answer with the CSP nonce (random per response) written ``nonce-N``."""
    status, headers, body = answer
    fixed = []
    for name, value in headers:
        if isinstance(value, str):
            fixed.append((name, _NONCE.sub(b"nonce-N", value.encode()).decode()))
        else:
            fixed.append((name, _NONCE.sub(b"nonce-N", value)))
    return status, fixed, body


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_layer_sends_the_same_refusal_bytes(case: str) -> None:
    assert stable(CASES[case]()) == EXPECTED[case]


def test_each_adapter_has_one_refusal_sender() -> None:
    """Every layer sends its own answers through its adapter's one sender."""
    from bastion.asgi import _http as asgi_http  # noqa: PLC0415
    from bastion.wsgi import _http as wsgi_http  # noqa: PLC0415

    assert callable(asgi_http.send_response)
    assert callable(asgi_http.send_refusal)
    assert callable(wsgi_http.send_refusal)
