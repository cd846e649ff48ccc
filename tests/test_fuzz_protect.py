"""Arbitrary requests through the whole of ``protect()``: bad input is a 4xx, never a 500.

Hypothesis builds requests no browser would send: odd methods, paths and query strings, header
values with control and non-ASCII bytes, repeated and garbage cookies (session IDs included),
any ``Sec-Fetch-Site`` / ``Origin`` / ``Content-Type`` / ``Content-Length``, and bodies split
over several messages. They go through every layer ``protect()`` installs (headers, rate limit,
sessions on a real memory store, CSRF) in front of a raw app that touches the session and reads
the whole body, so every answer other than the app's 200 is bastion's own.

For every request: nothing raises, exactly one response is sent, its status is one bastion
documents (200 from the app, 400 / 403 / 413 from CSRF, 429 from the limiter), and it carries
the security headers.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.asgi import SecurityHeadersMiddleware
from bastion.asgi import protect as asgi_protect
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig
from bastion.core.headers import HeaderPolicy
from bastion.core.keys import KeyRing
from bastion.core.sessions import SessionConfig
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi import protect as wsgi_protect

ALLOWED = {200, 400, 403, 413, 429}
KEYRING = KeyRing.generate()
CONFIG = SessionConfig(secure=False, development=True)
CSRF = CSRFConfig(max_body_bytes=1024)  # the smallest cap, so fuzzed form bodies reach 413
HEADER_NAMES = [
    b"host",
    b"cookie",
    b"origin",
    b"referer",
    b"sec-fetch-site",
    b"content-type",
    b"content-length",
    b"x-csrf-token",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"forwarded",
    b"authorization",
    b"accept",
    b"user-agent",
    b"x-http-method-override",
]
INTERESTING = [
    b"same-origin",
    b"same-site",
    b"cross-site",
    b"none",
    b"null",
    b"http://127.0.0.1",
    b"https://evil.example",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=x",
    b"multipart/form-data",
    b"application/json",
    b"text/plain",
    b"session=AAAA; session=",
    b"session=" + b"A" * 43,
    b"csrf_token=x.y.z",
    b"-1",
    b"99999999999999999999",
    b"\xff\xfe\x00",
    "\u00e9t\u00e9".encode(),
]

header_values = st.one_of(st.sampled_from(INTERESTING), st.binary(max_size=80))
headers = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_values), max_size=10)
bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=1025, max_size=1400).map(lambda tail: b"a=1&" + tail),
    st.sampled_from(
        [
            b"csrf_token=abc&x=1",
            b'--x\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nabc\r\n--x--\r\n',
            b'--x\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\n',
            b"%%%&&&===",
        ]
    ),
)
requests = st.fixed_dictionaries(
    {
        "method": st.sampled_from(
            ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO"]
        ),
        "path": st.one_of(st.sampled_from(["/", "/form", "/csp-report"]), st.text(max_size=20)),
        "query": st.binary(max_size=30),
        "headers": headers,
        "body": bodies,
        "chunks": st.integers(min_value=1, max_value=3),
        "client": st.sampled_from(["127.0.0.1", "::1", "2001:db8::1", "10.0.0.7", None]),
        "scheme": st.sampled_from(["http", "https"]),
    }
)


def limiter() -> RateLimiter:
    return RateLimiter(MemoryStore(clock=FrozenClock(1_700_000_000.0)))


async def touching_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Touch the session (a read and a write) and read the whole body, then answer 200."""
    if scope["type"] != "http":
        return
    session = scope["session"]
    session["n"] = session.get("n", 0) + 1
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        more = bool(message.get("more_body", False))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def protect_options() -> dict[str, Any]:
    """Every layer on: sessions on a memory store, CSRF, strict headers, a generous limit."""
    return {
        "store": MemoryStore(),
        "sessions": CONFIG,
        "csrf": CSRF,
        "keyring": KEYRING,
        "rate_limit": {"limiter": limiter(), "rules": [Rule("site", "100000/minute")]},
        "production": False,
    }


ASGI_APP = asgi_protect(touching_app, **protect_options())


def split(body: bytes, parts: int) -> list[bytes]:
    size = max(1, -(-len(body) // parts)) if body else 1
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


@pytest.mark.asyncio
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
async def test_asgi_protect_answers_any_request_without_a_500(request: dict[str, Any]) -> None:
    chunks = split(request["body"], request["chunks"])
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    client = request["client"]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": request["scheme"],
        "path": request["path"],
        "raw_path": request["path"].encode("utf-8", "surrogatepass"),
        "query_string": request["query"],
        "root_path": "",
        "headers": request["headers"],
        "client": None if client is None else (client, 40000),
        "server": ("127.0.0.1", 8000),
    }
    await ASGI_APP(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1, sent
    assert starts[0]["status"] in ALLOWED | {204, 405, 415}, starts[0]
    names = {name for name, _ in starts[0]["headers"]}
    assert b"x-content-type-options" in names
    assert sent[-1]["type"] == "http.response.body"
    assert not sent[-1].get("more_body", False)


def wsgi_touching_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = environ["bastion.session"]
    session["n"] = session.get("n", 0) + 1
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


WSGI_APP = wsgi_protect(wsgi_touching_app, **protect_options())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
def test_wsgi_protect_answers_any_request_without_a_500(request: dict[str, Any]) -> None:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": request["path"].encode("utf-8", "surrogatepass").decode("latin-1"),
        "QUERY_STRING": request["query"].decode("latin-1"),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": request["scheme"],
        "wsgi.input": io.BytesIO(request["body"]),
        "wsgi.errors": io.StringIO(),
    }
    if request["client"] is not None:
        environ["REMOTE_ADDR"] = request["client"]
    for name, value in request["headers"]:
        text = value.decode("latin-1")
        if name == b"content-type":
            environ["CONTENT_TYPE"] = text
        elif name == b"content-length":
            environ["CONTENT_LENGTH"] = text
        else:
            key = "HTTP_" + name.decode("ascii").upper().replace("-", "_")
            environ[key] = environ[key] + "," + text if key in environ else text
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(
        status: str, response_headers: list[tuple[str, str]], exc: Any = None
    ) -> Any:
        seen.append((status, response_headers))

    body = b"".join(WSGI_APP(environ, start_response))
    assert len(seen) == 1, seen
    status = int(seen[0][0][:3])
    assert status in ALLOWED | {204, 405, 415}, seen[0]
    assert "x-content-type-options" in {name.lower() for name, _ in seen[0][1]}
    assert isinstance(body, bytes)


REPORT_BODIES = st.one_of(
    st.binary(max_size=400),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
        max_leaves=12,
    ).map(lambda value: json.dumps(value).encode()),
    st.sampled_from(
        [
            b'{"csp-report": {"document-uri": "x", "violated-directive": 1}}',
            b'[{"type": "csp-violation", "body": null}]',
            b'[{"type": "csp-violation", "body": {"blockedURL": ["x"]}}]',
            b"\xef\xbb\xbf{}",
            b'{"csp-report": {"document-uri": "https://a/", "violated-directive": "script-src"}}',
            (
                b'[{"type": "csp-violation", "age": 1, "url": "https://a/", "body": '
                b'{"documentURL": "https://a/", "effectiveDirective": "script-src-elem"}}]'
            ),
        ]
    ),
)
REPORT_TYPES = st.sampled_from(
    [
        b"application/csp-report",
        b"application/reports+json",
        b"application/csp-report",
        b"application/reports+json",
        b"application/json",
        b"text/plain",
    ]
)

REPORTING_APP = SecurityHeadersMiddleware(
    touching_app,
    HeaderPolicy.preset("strict", report_to="/csp-report"),
    report_max_bytes=256,
    report_burst=1_000_000,
    report_client_burst=1_000_000,  # one fuzzing client: neither budget may answer 429
    auditor=Auditor(IdentifierHasher(KEYRING), FrozenClock(1_700_000_000.0), RecordingAuditSink()),
)


@pytest.mark.asyncio
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
    content_type=REPORT_TYPES,
    length=st.one_of(st.none(), st.sampled_from([b"0", b"-5", b"abc", b"999999", b"10"])),
    body=REPORT_BODIES,
)
async def test_the_csp_report_receiver_answers_any_report_with_a_4xx_or_204(
    method: str, content_type: bytes, length: bytes | None, body: bytes
) -> None:
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", length))
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "scheme": "https",
        "path": "/csp-report",
        "query_string": b"",
        "headers": headers,
        "client": ("198.51.100.9", 4000),
    }
    await REPORTING_APP(scope, receive, send)
    assert len(sent) == 2, sent
    assert sent[0]["status"] in {204, 400, 405, 413, 415}, sent[0]
