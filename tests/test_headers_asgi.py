"""SecurityHeadersMiddleware on real Starlette and FastAPI apps, driven through httpx.

httpx's ASGITransport is used rather than Starlette's TestClient, which warns about its own
httpx dependency under this Starlette version (and warnings are errors here).
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import httpx
import jinja2
import pytest
from fastapi import FastAPI, HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates
from tests.test_headers import API, RELAXED, STRICT

from bastion.asgi.headers import SecurityHeadersMiddleware, add_jinja2_globals, csp_nonce
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.headers import HeaderPolicy, HeaderRouter
from bastion.core.keys import KeyRing
from bastion.errors import ConfigurationError
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from starlette.requests import Request

PAGE = """<!doctype html><html><head><title>t</title>
<style nonce="{{ csp_nonce() }}">p { color: green }</style></head>
<body><p>hello</p><script nonce="{{ csp_nonce() }}">document.title = "ok"</script></body></html>
"""
POLICY_NAMES = {*STRICT, *API, *RELAXED, "reporting-endpoints"}
NONCE_IN_CSP = re.compile(r"'nonce-([0-9a-f]{32})'")


def make_auditor(clock: FrozenClock) -> tuple[Auditor, RecordingAuditSink]:
    sink = RecordingAuditSink()
    return Auditor(IdentifierHasher(KeyRing.generate()), clock, sink), sink


def starlette_app() -> Starlette:
    env = jinja2.Environment(loader=jinja2.DictLoader({"page.html": PAGE}), autoescape=True)
    templates = Jinja2Templates(env=env)
    add_jinja2_globals(templates.env)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html")

    async def state(request: Request) -> Response:
        return PlainTextResponse(f"{request.state.csp_nonce} {csp_nonce(request)}")

    async def own_csp(_request: Request) -> Response:
        return PlainTextResponse(
            "x", headers={"Content-Security-Policy": "default-src 'self'", "X-Frame-Options": "x"}
        )

    async def fingerprinted(_request: Request) -> Response:
        return PlainTextResponse("x", headers={"Server": "gunicorn/1", "X-Powered-By": "PHP/5"})

    async def boom(_request: Request) -> Response:
        raise RuntimeError("handler failed")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/state", state),
            Route("/own-csp", own_csp),
            Route("/fingerprinted", fingerprinted),
            Route("/boom", boom),
            Route("/docs", state),
            Route("/docsx", state),
        ]
    )


def headers_of(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k in POLICY_NAMES}


def expected(table: dict[str, str], nonce: str | None, *, https: bool) -> dict[str, str]:
    out = {k: v.replace("0123456789abcdef0123456789abcdef", nonce or "") for k, v in table.items()}
    if not https:
        out.pop("strict-transport-security", None)
    return out


def nonce_of(response: Any) -> str:
    found = set(NONCE_IN_CSP.findall(response.headers["content-security-policy"]))
    assert len(found) == 1
    return found.pop()


def client(app: Any, *, https: bool = True, raise_errors: bool = False) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_errors)
    scheme = "https" if https else "http"
    return httpx.AsyncClient(transport=transport, base_url=f"{scheme}://testserver")


@pytest.fixture
def https_client() -> httpx.AsyncClient:
    app = SecurityHeadersMiddleware(starlette_app(), overrides={"/docs/*": "relaxed"})
    return client(app)


@pytest.mark.asyncio
async def test_strict_headers_exact_over_https(https_client: httpx.AsyncClient) -> None:
    response = await https_client.get("/state")
    assert response.status_code == 200
    nonce = nonce_of(response)
    assert headers_of(response) == expected(STRICT, nonce, https=True)


@pytest.mark.asyncio
async def test_no_hsts_over_plain_http() -> None:
    response = await client(SecurityHeadersMiddleware(starlette_app()), https=False).get("/state")
    assert "strict-transport-security" not in response.headers
    assert headers_of(response) == expected(STRICT, nonce_of(response), https=False)
    forced = SecurityHeadersMiddleware(starlette_app(), HeaderPolicy(hsts_over_http=True))
    response = await client(forced, https=False).get("/state")
    assert response.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"


@pytest.mark.asyncio
async def test_nonce_is_fresh_per_response_and_reaches_the_template(
    https_client: httpx.AsyncClient,
) -> None:
    first = await https_client.get("/")
    second = await https_client.get("/")
    one, two = nonce_of(first), nonce_of(second)
    assert one != two
    assert first.text.count(f'nonce="{one}"') == 2
    assert second.text.count(f'nonce="{two}"') == 2
    state = await https_client.get("/state")
    assert state.text == f"{nonce_of(state)} {nonce_of(state)}"


@pytest.mark.asyncio
async def test_handler_header_kept_unless_forced() -> None:
    response = await client(SecurityHeadersMiddleware(starlette_app())).get("/own-csp")
    assert response.headers["content-security-policy"] == "default-src 'self'"
    assert response.headers.get_list("x-frame-options") == ["x"]
    forced = HeaderPolicy(force=frozenset({"content-security-policy", "x-frame-options"}))
    response = await client(SecurityHeadersMiddleware(starlette_app(), forced)).get("/own-csp")
    assert response.headers["content-security-policy"].startswith("default-src 'none'; script-src")
    assert response.headers.get_list("x-frame-options") == ["DENY"]


@pytest.mark.asyncio
async def test_per_route_override(https_client: httpx.AsyncClient) -> None:
    docs = await https_client.get("/docs")
    assert headers_of(docs) == expected(RELAXED, nonce_of(docs), https=True)
    other = await https_client.get("/docsx")  # a prefix matches whole path segments only
    assert headers_of(other) == expected(STRICT, nonce_of(other), https=True)


def any_nonce(response: Any) -> str | None:
    found = set(NONCE_IN_CSP.findall(response.headers["content-security-policy"]))
    return found.pop() if found else None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("path", "table"),
    [
        ("/legacy", RELAXED),
        ("/legacy/", RELAXED),
        ("/legacy/page", RELAXED),
        ("/legacyx", STRICT),
        ("/Legacy/page", STRICT),
        ("/login", API),
        ("/login/", STRICT),
        ("/login/x", STRICT),
        ("/legacy//page", RELAXED),
    ],
)
async def test_override_keys_are_path_patterns_over_http(path: str, table: dict[str, str]) -> None:
    app = SecurityHeadersMiddleware(
        starlette_app(), overrides={"/legacy/*": "relaxed", "/login": "api"}
    )
    response = await client(app).get(path)
    assert response.status_code == 404  # no such route: the framework's page carries the policy
    assert headers_of(response) == expected(table, any_nonce(response), https=True)


@pytest.mark.asyncio
async def test_fingerprinting_headers_removed(https_client: httpx.AsyncClient) -> None:
    response = await https_client.get("/fingerprinted")
    assert "server" not in response.headers
    assert "x-powered-by" not in response.headers
    assert response.text == "x"


@pytest.mark.asyncio
async def test_headers_on_404_and_500(https_client: httpx.AsyncClient) -> None:
    missing = await https_client.get("/nowhere")
    assert missing.status_code == 404
    assert headers_of(missing) == expected(STRICT, nonce_of(missing), https=True)
    failed = await https_client.get("/boom")
    assert failed.status_code == 500
    assert headers_of(failed) == expected(STRICT, nonce_of(failed), https=True)


@pytest.mark.asyncio
async def test_headers_on_500_when_installed_inside_starlette() -> None:
    app = starlette_app()
    app.add_middleware(SecurityHeadersMiddleware)
    failed = await client(app).get("/boom")
    assert failed.status_code == 500
    assert failed.text == "Internal Server Error"
    assert headers_of(failed) == expected(STRICT, nonce_of(failed), https=True)
    with pytest.raises(RuntimeError, match="handler failed"):
        await client(app, raise_errors=True).get("/boom")  # the error still reaches the server


@pytest.mark.parametrize("status", [403, 429, 503])
@pytest.mark.asyncio
async def test_headers_on_refusals_of_inner_middlewares(status: int) -> None:
    async def refusing(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    response = await client(SecurityHeadersMiddleware(refusing)).get("/")
    assert response.status_code == status
    assert headers_of(response) == expected(STRICT, nonce_of(response), https=True)


@pytest.mark.asyncio
async def test_reused_message_dicts_are_not_mutated() -> None:
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    body = {"type": "http.response.body", "body": b"ok"}

    async def reusing(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send(body)

    reuser = client(SecurityHeadersMiddleware(reusing))
    one, two = await reuser.get("/"), await reuser.get("/")
    assert nonce_of(one) != nonce_of(two)
    assert start["headers"] == [(b"content-length", b"2")]


def fastapi_app() -> FastAPI:
    api = FastAPI(openapi_url=None)

    @api.get("/items")
    async def items() -> dict[str, int]:
        return {"count": 1}

    @api.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @api.get("/crash")
    async def crash() -> None:
        raise ValueError("broken")

    return api


@pytest.mark.asyncio
async def test_fastapi_api_preset_exact() -> None:
    app = SecurityHeadersMiddleware(fastapi_app(), "api")
    api = client(app)
    ok = await api.get("/items")
    assert ok.json() == {"count": 1}
    assert headers_of(ok) == API
    for path, status in (("/teapot", 418), ("/missing", 404), ("/crash", 500)):
        response = await api.get(path)
        assert response.status_code == status
        assert headers_of(response) == API
    plain = await client(app, https=False).get("/items")
    assert headers_of(plain) == expected(API, None, https=False)


@pytest.mark.asyncio
async def test_fastapi_strict() -> None:
    response = await client(SecurityHeadersMiddleware(fastapi_app())).get("/items")
    assert headers_of(response) == expected(STRICT, nonce_of(response), https=True)


@pytest.mark.asyncio
async def test_websocket_scopes_pass_through_untouched() -> None:
    seen: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    scope = {"type": "websocket", "path": "/ws", "headers": []}
    await SecurityHeadersMiddleware(inner)(scope, receive, send)
    assert seen == [(scope, receive, send)]
    assert "state" not in scope


@pytest.mark.asyncio
async def test_csp_nonce_without_middleware_is_a_clear_error() -> None:
    async def endpoint(request: Request) -> Response:
        try:
            csp_nonce(request)
        except ConfigurationError as exc:
            return PlainTextResponse(str(exc), status_code=500)
        return PlainTextResponse("unexpected")

    response = await client(Starlette(routes=[Route("/", endpoint)])).get("/")
    assert response.status_code == 500
    assert "wrap the app in SecurityHeadersMiddleware" in response.text


def test_opt_outs_warn_once_and_unsafe_ones_are_refused_in_production(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.security.headers")
    weak = HeaderPolicy(csp_policy=None, nosniff=False)
    with pytest.raises(ConfigurationError) as caught:
        SecurityHeadersMiddleware(starlette_app(), weak, production=True)
    assert caught.value.setting == "nosniff"
    assert "refused when ENV=production" in str(caught.value)
    caplog.clear()
    SecurityHeadersMiddleware(starlette_app(), weak, production=False)
    logged = [r.getMessage() for r in caplog.records if r.name == "bastion.security.headers"]
    assert [m.split(": ")[1] for m in logged] == ["csp_policy", "nosniff"]
    assert all(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.asyncio
async def test_a_warned_opt_out_still_serves_the_rest_of_the_policy() -> None:
    app = SecurityHeadersMiddleware(
        starlette_app(), HeaderPolicy(csp_policy=None), production=False
    )
    response = await client(app).get("/")
    got = headers_of(response)
    assert "content-security-policy" not in got
    assert got["x-frame-options"] == "DENY"
    assert got["x-content-type-options"] == "nosniff"


@pytest.mark.asyncio
async def test_start_message_with_tuple_or_missing_headers() -> None:
    sent: list[Any] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        headers = scope["path"] == "/tuple"
        start: dict[str, Any] = {"type": "http.response.start", "status": 204}
        if headers:
            start["headers"] = ((b"x-app", b"1"),)
        await send(start)
        await send({"type": "http.response.body", "body": b""})

    async def record(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    app = SecurityHeadersMiddleware(inner, "api")
    for path in ("/tuple", "/none"):
        scope = {"type": "http", "path": path, "scheme": "https", "headers": []}
        await app(scope, receive, record)
    with_tuple, without = sent[0], sent[2]
    assert with_tuple["headers"][0] == (b"x-app", b"1")
    assert dict(with_tuple["headers"][1:]) == {k.encode(): v.encode() for k, v in API.items()}
    assert without["headers"] == with_tuple["headers"][1:]


HEADER_NAMES = st.sampled_from(
    [
        b"content-type",
        b"x-app",
        b"server",
        b"Server",
        b"X-Powered-By",
        b"content-security-policy",
        b"Content-Security-Policy",
        b"x-frame-options",
        b"STRICT-TRANSPORT-SECURITY",
        b"cache-control",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    preset=st.sampled_from(["strict", "api", "relaxed"]),
    https=st.booleans(),
    headers=st.lists(st.tuples(HEADER_NAMES, st.binary(max_size=8)), max_size=5),
    as_tuple=st.booleans(),
)
def test_inlined_fast_path_matches_compiled_apply(
    preset: str, https: bool, headers: list[tuple[bytes, bytes]], as_tuple: bool
) -> None:
    sent: list[Any] = []
    start = {"type": "http.response.start", "status": 200, "headers": list(headers)}

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        given_headers = tuple(start["headers"]) if as_tuple else start["headers"]
        await send({**start, "headers": given_headers})
        await send({"type": "http.response.body", "body": b""})

    async def record(message: Any) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": "/", "scheme": "https" if https else "http", "headers": []}
    coroutine = SecurityHeadersMiddleware(inner, preset)(scope, receive, record)
    with pytest.raises(StopIteration):
        coroutine.send(None)  # nothing here suspends: drive it without an event loop
    nonce = scope.get("state", {}).get("csp_nonce")
    compiled = HeaderRouter(preset).default
    reference = compiled.apply(list(headers), https, nonce.encode() if nonce else None)
    assert sent[0]["headers"] == reference
    assert start["headers"] == headers


# --- the CSP report receiver ---------------------------------------------------------------

REPORT = {
    "csp-report": {
        "document-uri": "https://testserver/page?session=abc",
        "blocked-uri": "https://evil.example/x.js",
        "effective-directive": "script-src-elem",
        "disposition": "enforce",
        "status-code": 200,
    }
}


@pytest.fixture
def receiver() -> tuple[httpx.AsyncClient, RecordingAuditSink, FrozenClock]:
    clock = FrozenClock(1_000.0)
    auditor, sink = make_auditor(clock)
    app = SecurityHeadersMiddleware(
        starlette_app(),
        HeaderPolicy(report_to="/csp-report"),
        auditor=auditor,
        report_max_bytes=1024,
        report_burst=3,
        report_rate=1.0,
        clock=clock,
    )
    return client(app), sink, clock


async def post_report(http: httpx.AsyncClient, body: bytes, content_type: str) -> Any:
    return await http.post("/csp-report", content=body, headers={"content-type": content_type})


@pytest.mark.asyncio
async def test_report_receiver_accepts_a_report(receiver: Any) -> None:
    http, sink, _ = receiver
    page = await http.get("/state")
    assert page.headers["reporting-endpoints"] == 'csp-endpoint="/csp-report"'
    assert (
        "report-to csp-endpoint; report-uri /csp-report"
        in (page.headers["content-security-policy"])
    )
    response = await post_report(http, json.dumps(REPORT).encode(), "application/csp-report")
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["x-content-type-options"] == "nosniff"
    [event] = sink.events
    assert event.name == "csp_violation"
    assert str(event.outcome) == "blocked"
    assert dict(event.details) == {
        "blocked_url": "https://evil.example/x.js",
        "directive": "script-src-elem",
        "disposition": "enforce",
        "document_url": "https://testserver/page",
        "status_code": 200,
    }
    assert event.client_ip is not None


@pytest.mark.asyncio
async def test_report_receiver_reporting_api(receiver: Any) -> None:
    http, sink, _ = receiver
    body = json.dumps(
        [{"type": "csp-violation", "body": {"effectiveDirective": "img-src", "blockedURL": "x"}}]
    ).encode()
    assert (await post_report(http, body, "application/reports+json")).status_code == 204
    assert [e.details["directive"] for e in sink.events] == ["img-src"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"{", "application/csp-report", 400, "malformed"),
        (b"\xff", "application/reports+json", 400, "malformed"),
        (b"[" * 900, "application/reports+json", 400, "malformed"),
        (json.dumps(REPORT).encode(), "application/json", 415, "unsupported_media_type"),
        (json.dumps(REPORT).encode(), "text/plain", 415, "unsupported_media_type"),
        (b" " * 2000, "application/csp-report", 413, "too_large"),
    ],
)
@pytest.mark.asyncio
async def test_report_receiver_refusals(
    receiver: Any, body: bytes, content_type: str, status: int, reason: str
) -> None:
    http, sink, _ = receiver
    response = await post_report(http, body, content_type)
    assert response.status_code == status
    [event] = sink.events
    assert event.name == "input_validation_fail"
    assert dict(event.details) == {"field": "csp_report", "reason": reason}


@pytest.mark.asyncio
async def test_report_receiver_caps_a_chunked_body(receiver: Any) -> None:
    http, sink, _ = receiver

    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 100

    response = await http.post(
        "/csp-report", content=chunks(), headers={"content-type": "application/csp-report"}
    )
    assert response.status_code == 413
    assert sink.events[0].details["reason"] == "too_large"


@pytest.mark.asyncio
async def test_report_receiver_flood_gets_429(receiver: Any) -> None:
    http, sink, clock = receiver
    body = json.dumps(REPORT).encode()
    statuses = [
        (await post_report(http, body, "application/csp-report")).status_code for _ in range(5)
    ]
    assert statuses == [204, 204, 204, 429, 429]
    assert len(sink.events) == 3  # refusals for volume are not audited one by one
    clock.advance(1.0)
    assert (await post_report(http, body, "application/csp-report")).status_code == 204


@pytest.mark.asyncio
async def test_report_receiver_method_and_configuration(receiver: Any) -> None:
    http, _, _ = receiver
    response = await http.get("/csp-report")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    with pytest.raises(ConfigurationError, match="auditor") as caught:
        SecurityHeadersMiddleware(starlette_app(), HeaderPolicy(report_to="/r"))
    assert caught.value.setting == "auditor"
    auditor, _ = make_auditor(FrozenClock())
    with pytest.raises(ConfigurationError, match="report_max_bytes"):
        SecurityHeadersMiddleware(
            starlette_app(), HeaderPolicy(report_to="/r"), auditor=auditor, report_max_bytes=1
        )
    with pytest.raises(ConfigurationError, match="overrides: 'docs' must be a path") as caught:
        SecurityHeadersMiddleware(starlette_app(), overrides={"docs": "relaxed"})
    assert caught.value.setting == "overrides"
    with pytest.raises(ConfigurationError) as caught:
        SecurityHeadersMiddleware(starlette_app(), overrides={"/docs/": "relaxed"})
    assert str(caught.value) == (
        "overrides: '/docs/' ends in '/'; write '/docs/*' for the prefix or '/docs' for the "
        "exact path"
    )
