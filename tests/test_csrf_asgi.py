"""CSRFMiddleware in real Starlette and FastAPI apps, behind bastion's SessionMiddleware over real
stores (memory, SQLite files, Redis). Every attack case asserts the exact status and reason."""

from __future__ import annotations

import re
import warnings
from typing import TYPE_CHECKING, Any

import httpx
import jinja2
import pytest
from fastapi import FastAPI, Form
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.middleware import Middleware
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.templating import Jinja2Templates

with warnings.catch_warnings():
    # Starlette >= 1.x announces a move of its test client from httpx to httpx2 at import time;
    # the dev environment pins httpx. Only that import-time notice is silenced.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketDenialResponse
    from starlette.websockets import WebSocket, WebSocketDisconnect

from bastion.asgi import CSRFMiddleware, SessionMiddleware
from bastion.asgi.csrf import add_jinja2_globals, csrf_input, csrf_token
from bastion.asgi.sessions import get_session
from bastion.core.audit import AuditEvent, Auditor, IdentifierHasher
from bastion.core.client import TrustedProxies
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig, TokenSource
from bastion.core.keys import KeyRing
from bastion.errors import ConfigurationError
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.stores.sqlite import SQLiteStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from starlette.requests import Request

    from bastion.stores.base import Store

HTTPS = "https://testserver"
JSON = {"Accept": "application/json"}
PAGE = '<form method="post" action="/submit">{{ csrf_input() }}</form><i>{{ csrf_token() }}</i>'
TOKEN_IN_PAGE = re.compile(r'name="csrf_token" value="([A-Za-z0-9_-]+)"')


def make_routes() -> list[Any]:
    env = jinja2.Environment(loader=jinja2.DictLoader({"page.html": PAGE}), autoescape=True)
    templates = Jinja2Templates(env=env)
    add_jinja2_globals(templates.env)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page.html")

    async def token(request: Request) -> JSONResponse:
        return JSONResponse({"token": csrf_token(request)})

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({"n": request.session.get("n", 0)})

    async def submit(request: Request) -> JSONResponse:
        async with request.form() as form:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            files = {k: len(await v.read()) for k, v in form.items() if not isinstance(v, str)}
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"n": request.session["n"], "fields": fields, "files": files})

    async def raw(request: Request) -> JSONResponse:
        body = await request.body()
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"len": len(body), "body": body.decode("latin-1")[:200]})

    async def do_login(request: Request) -> JSONResponse:
        get_session(request).login("alice")
        return JSONResponse({"ok": True})

    async def any_method(request: Request) -> JSONResponse:
        if request.method in {"POST", "DELETE"}:
            request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"method": request.method})

    async def hook(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("hooked")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return [
        Route("/page", page),
        Route("/token", token),
        Route("/state", state),
        Route("/submit", submit, methods=["POST"]),
        Route("/raw", raw, methods=["POST", "PUT", "DELETE"]),
        Route("/login", do_login, methods=["POST"]),
        Route("/item", any_method, methods=["GET", "HEAD", "OPTIONS", "POST", "DELETE"]),
        Route("/hooks/in", hook, methods=["POST"]),
        WebSocketRoute("/ws", ws),
    ]


class Harness:
    def __init__(
        self, store: Store | None = None, *, proxies: TrustedProxies | None = None, **csrf: Any
    ) -> None:
        self.clock = FrozenClock()
        self.sink = RecordingAuditSink()
        self.keyring = KeyRing.generate()
        auditor = Auditor(IdentifierHasher(self.keyring), self.clock, self.sink)
        self.store = store if store is not None else MemoryStore(clock=self.clock)
        self.app = Starlette(
            routes=make_routes(),
            middleware=[
                Middleware(
                    SessionMiddleware,
                    store=self.store,
                    clock=self.clock,
                    auditor=auditor,
                    production=False,
                ),
                Middleware(
                    CSRFMiddleware,
                    config=CSRFConfig(**csrf),
                    keyring=self.keyring,
                    auditor=auditor,
                    clock=self.clock,
                    production=False,
                    proxies=proxies,
                ),
            ],
        )

    def client(self) -> TestClient:
        return TestClient(self.app, base_url=HTTPS)

    def reasons(self) -> list[str]:
        return [str(e.details["reason"]) for e in self.events()]

    def events(self) -> list[AuditEvent]:
        return [e for e in self.sink.events if e.name == "malicious_csrf"]


@pytest.fixture(params=["memory", "sqlite"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "sqlite":
        return Harness(SQLiteStore(tmp_path / "bastion.db"))
    return Harness()


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with harness.client() as client:
        yield client


def fetch_token(client: TestClient) -> str:
    response = client.get("/token")
    assert response.status_code == 200
    token: str = response.json()["token"]
    return token


def refused(response: httpx.Response, reason: str, status: int = 403) -> None:
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason
    assert response.headers["cache-control"] == "no-store"


def state(client: TestClient) -> int:
    n: int = client.get("/state").json()["n"]
    return n


# -- passes decided by headers


def test_same_origin_fetch_metadata_passes_without_a_token(client: TestClient) -> None:
    response = client.post(
        "/submit", data={"a": "1"}, headers={"Sec-Fetch-Site": "same-origin", **JSON}
    )
    assert response.status_code == 200
    assert response.json()["fields"] == {"a": "1"}


def test_same_origin_with_null_origin_passes(client: TestClient) -> None:
    headers = {"Sec-Fetch-Site": "same-origin", "Origin": "null", **JSON}
    assert client.post("/submit", data={"a": "1"}, headers=headers).status_code == 200


def test_matching_origin_passes_for_browsers_without_fetch_metadata(client: TestClient) -> None:
    headers = {"Origin": "https://testserver", **JSON}
    assert client.post("/submit", data={"a": "1"}, headers=headers).status_code == 200


def test_trusted_origin_lifts_a_cross_site_refusal() -> None:
    harness = Harness(trusted_origins=("https://*.partner.example",))
    with harness.client() as client:
        headers = {"Sec-Fetch-Site": "cross-site", "Origin": "https://app.partner.example"}
        assert client.post("/submit", data={"a": "1"}, headers=headers).status_code == 200
        headers["Origin"] = "https://partner.example.evil.example"
        refused(client.post("/submit", headers={**headers, **JSON}), "cross_site")


# -- the attack cases


def test_cross_site_form_post_is_refused(harness: Harness, client: TestClient) -> None:
    before = state(client)
    response = client.post(
        "/submit",
        data={"amount": "1000"},
        headers={"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example", **JSON},
    )
    refused(response, "cross_site")
    assert state(client) == before
    event = harness.events()[-1]
    assert event.details["reason"] == "cross_site"
    assert event.outcome == "blocked"


def test_same_site_subdomain_post_is_refused(client: TestClient) -> None:
    headers = {"Sec-Fetch-Site": "same-site", "Origin": "https://evil.testserver", **JSON}
    refused(client.post("/submit", data={"a": "1"}, headers=headers), "same_site")


def test_origin_of_another_port_is_refused(client: TestClient) -> None:
    headers = {"Origin": "https://testserver:8443", **JSON}
    refused(client.post("/submit", data={"a": "1"}, headers=headers), "origin_mismatch")
    headers = {"Sec-Fetch-Site": "same-site", "Origin": "https://testserver:8443", **JSON}
    refused(client.post("/submit", data={"a": "1"}, headers=headers), "same_site")


def test_missing_origin_and_referer_over_https_without_token_is_refused(
    client: TestClient,
) -> None:
    refused(client.post("/submit", data={"a": "1"}, headers=JSON), "token_missing")


def test_foreign_referer_over_https_is_refused(client: TestClient) -> None:
    headers = {"Referer": "https://evil.example/page", **JSON}
    refused(client.post("/submit", data={"a": "1"}, headers=headers), "referer_mismatch")


def test_token_of_another_session_is_refused(harness: Harness) -> None:
    with harness.client() as attacker, harness.client() as victim:
        attacker_token = fetch_token(attacker)
        fetch_token(victim)  # the victim has a session of their own
        response = victim.post(
            "/submit", data={"csrf_token": attacker_token, "a": "1"}, headers=JSON
        )
        refused(response, "token_incorrect")
        response = victim.post("/raw", headers={"X-CSRF-Token": attacker_token, **JSON})
        refused(response, "token_incorrect")


def test_token_without_any_session_is_refused(harness: Harness) -> None:
    with harness.client() as attacker, harness.client() as victim:
        response = victim.post("/submit", data={"csrf_token": fetch_token(attacker)}, headers=JSON)
        refused(response, "no_session")


def test_token_in_query_string_only_is_refused(client: TestClient) -> None:
    token = fetch_token(client)
    response = client.post(f"/submit?csrf_token={token}", data={"a": "1"}, headers=JSON)
    refused(response, "token_in_query")


@pytest.mark.parametrize(
    "trick",
    [
        {"headers": {"X-HTTP-Method-Override": "DELETE"}},
        {"headers": {"X-HTTP-Method": "POST"}},
        {"headers": {"X-Method-Override": "put"}},
        {"params": {"_method": "DELETE"}},
    ],
)
def test_method_override_of_a_safe_method_is_refused(
    client: TestClient, trick: dict[str, Any]
) -> None:
    before = state(client)
    response = client.get(
        "/item", params=trick.get("params"), headers={**trick.get("headers", {}), **JSON}
    )
    refused(response, "method_override")
    assert state(client) == before


def test_method_override_on_a_cross_site_post_is_refused(client: TestClient) -> None:
    headers = {"Sec-Fetch-Site": "cross-site", "X-HTTP-Method-Override": "GET", **JSON}
    refused(client.post("/item", data={"_method": "GET"}, headers=headers), "cross_site")


def test_text_plain_json_post_is_refused(client: TestClient) -> None:
    token = fetch_token(client)
    body = '{"csrf_token": "' + token + '", "amount": 1000}'
    response = client.post("/raw", content=body, headers={"Content-Type": "text/plain", **JSON})
    refused(response, "token_missing")
    response = client.post(
        "/raw", content=body, headers={"Content-Type": "application/json", **JSON}
    )
    refused(response, "token_missing")


@pytest.mark.parametrize("token", ["tökén", "\u00ff" * 86, "abc\u2028"])
def test_non_ascii_token_is_refused(client: TestClient, token: str) -> None:
    fetch_token(client)
    response = client.post("/submit", data={"csrf_token": token}, headers=JSON)
    refused(response, "token_malformed")
    response = client.post("/raw", headers={"X-CSRF-Token": token.encode("utf-8"), **JSON})
    refused(response, "token_malformed")


def test_truncated_and_garbage_tokens_are_malformed(client: TestClient) -> None:
    token = fetch_token(client)
    for bad in (token[:-1], token + "A", "x" * 5000, "", "..."):
        response = client.post("/submit", data={"csrf_token": bad}, headers=JSON)
        refused(response, "token_malformed")


@pytest.mark.asyncio
async def test_multipart_token_after_a_10_mb_file_is_413_without_reading_it_all() -> None:
    harness = Harness()
    boundary = "----bastion-boundary"
    sent = {"bytes": 0}
    chunk = b"x" * 65536

    async def body() -> AsyncIterator[bytes]:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        sent["bytes"] += len(head)
        yield head
        for _ in range(160):  # 10 MiB
            sent["bytes"] += len(chunk)
            yield chunk
        tail = (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            f"whatever\r\n--{boundary}--\r\n"
        ).encode()
        sent["bytes"] += len(tail)
        yield tail

    transport = httpx.ASGITransport(app=harness.app)
    async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as client:
        response = await client.post(
            "/submit",
            content=body(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}", **JSON},
        )
    refused(response, "body_too_large", 413)
    # The middleware stopped after the 1 MiB cap (plus a chunk in flight), not at 10 MiB.
    assert sent["bytes"] < 2 * 1024 * 1024
    assert harness.reasons() == ["body_too_large"]


def multipart(fields: list[tuple[str, str, str | None]], boundary: str = "b0undary") -> bytes:
    parts = []
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n")
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def test_multipart_token_is_found_and_the_body_replayed(client: TestClient) -> None:
    token = fetch_token(client)
    body = multipart([("a", "1", None), ("csrf_token", token, None), ("doc", "file data", "d.txt")])
    response = client.post(
        "/submit",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b0undary", **JSON},
    )
    assert response.status_code == 200, response.text
    assert response.json()["fields"] == {"a": "1", "csrf_token": token}
    assert response.json()["files"] == {"doc": 9}


def test_multipart_token_in_a_file_part_does_not_count(client: TestClient) -> None:
    token = fetch_token(client)
    body = multipart([("csrf_token", token, "t.txt")])
    response = client.post(
        "/submit",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b0undary", **JSON},
    )
    refused(response, "token_missing")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n\r\n"),
        ("multipart/form-data; boundary=zz", b"no delimiter at all"),
        ("multipart/form-data; boundary=zz", b"--zz\r\nContent-Disposition: form-data"),
        ("multipart/form-data; boundary=zz", b"--zzGARBAGE\r\n"),
    ],
)
def test_broken_multipart_is_400_not_500(
    client: TestClient, content_type: str, body: bytes
) -> None:
    fetch_token(client)
    response = client.post("/submit", content=body, headers={"Content-Type": content_type, **JSON})
    refused(response, "body_malformed", 400)


def test_urlencoded_token_passes_and_the_body_is_replayed_unchanged(client: TestClient) -> None:
    token = fetch_token(client)
    body = f"a=1&csrf_token={token}&b=%C3%A9+x".encode()
    response = client.post(
        "/raw",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", **JSON},
    )
    assert response.status_code == 200
    assert response.json() == {"len": len(body), "body": body.decode("latin-1")}


def test_header_token_passes_for_json(client: TestClient) -> None:
    token = fetch_token(client)
    response = client.post("/raw", json={"x": 1}, headers={"X-CSRF-Token": token})
    assert response.status_code == 200
    assert response.json()["body"] == '{"x":1}'


def test_tokens_are_masked_per_response(client: TestClient) -> None:
    first, second = fetch_token(client), fetch_token(client)
    assert first != second
    for token in (first, second):
        assert client.post("/raw", headers={"X-CSRF-Token": token}).status_code == 200


def test_jinja_globals_render_a_safe_hidden_input(client: TestClient) -> None:
    response = client.get("/page")
    assert response.status_code == 200
    match = TOKEN_IN_PAGE.search(response.text)
    assert match is not None, response.text  # Markup: not escaped into &lt;input
    posted = client.post("/submit", data={"csrf_token": match.group(1)})
    assert posted.status_code == 200


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_safe_methods_pass_without_token_and_change_nothing(
    client: TestClient, method: str
) -> None:
    before = state(client)
    response = client.request(method, "/item", headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200
    assert "set-cookie" not in response.headers  # the middleware created no session
    assert state(client) == before


def test_login_rotates_the_token(harness: Harness, client: TestClient) -> None:
    old = fetch_token(client)
    assert client.post("/login", headers={"X-CSRF-Token": old}).status_code == 200
    refused(client.post("/raw", headers={"X-CSRF-Token": old, **JSON}), "token_incorrect")
    new = fetch_token(client)
    assert client.post("/raw", headers={"X-CSRF-Token": new}).status_code == 200


def test_refusal_is_html_for_a_browser_and_json_otherwise(client: TestClient) -> None:
    browser = {"Sec-Fetch-Site": "cross-site", "Accept": "text/html,*/*;q=0.8"}
    response = client.post("/submit", headers=browser)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "cross_site" in response.text
    api = client.post("/submit", headers={"Sec-Fetch-Site": "cross-site"})  # Accept: */*
    assert (api.status_code, api.headers["content-type"]) == (403, "application/json")
    assert api.json()["reason"] == "cross_site"


def test_exempt_routes_skip_the_checks() -> None:
    harness = Harness(exempt=("/hooks/*",))
    with harness.client() as client:
        headers = {"Sec-Fetch-Site": "cross-site"}
        assert client.post("/hooks/in", headers=headers).text == "hooked"
        assert client.post("/submit", headers={**headers, **JSON}).status_code == 403


def test_bearer_requests_skip_only_when_opted_in() -> None:
    with Harness().client() as client:
        response = client.post("/raw", headers={"Authorization": "Bearer abc", **JSON})
        refused(response, "token_missing")
    with Harness(skip_authenticated=True).client() as client:
        assert client.post("/raw", headers={"Authorization": "Bearer abc"}).status_code == 200
        assert client.post("/raw", headers={"X-API-Key": "k"}).status_code == 200
        response = client.post("/raw", headers={"Authorization": "Basic YTpi", **JSON})
        refused(response, "token_missing")


def test_log_only_lets_the_request_through_and_audits(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness(log_only=True)
    with caplog.at_level("WARNING", logger="bastion.security.csrf"), harness.client() as client:
        assert "log_only=True" in caplog.text  # logged once, when the app starts
        response = client.post("/submit", data={"a": "1"}, headers={"Sec-Fetch-Site": "cross-site"})
        assert response.status_code == 200
        assert response.json()["fields"] == {"a": "1"}
    assert harness.reasons() == ["cross_site"]
    assert harness.events()[0].outcome == "failure"
    assert "would refuse POST /submit: cross_site" in caplog.text


@pytest.mark.asyncio
async def test_forwarded_headers_are_believed_only_from_trusted_proxies() -> None:
    forwarded = {
        "X-Forwarded-Host": "shop.example",
        "X-Forwarded-Proto": "https",
        "Origin": "https://shop.example",
        **JSON,
    }

    async def post(harness: Harness, peer: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=harness.app, client=(peer, 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5") as client:
            return await client.post("/raw", headers=forwarded)

    refused(await post(Harness(), "10.0.0.1"), "origin_mismatch")
    proxied = Harness(proxies=TrustedProxies(["10.0.0.0/8"]))
    assert (await post(proxied, "10.0.0.1")).status_code == 200
    refused(await post(proxied, "192.0.2.7"), "origin_mismatch")


@pytest.mark.asyncio
async def test_the_audit_event_names_the_client_a_trusted_proxy_forwarded() -> None:
    async def refused_from(harness: Harness, peer: str) -> AuditEvent:
        transport = httpx.ASGITransport(app=harness.app, client=(peer, 4000))
        async with httpx.AsyncClient(transport=transport, base_url=HTTPS) as client:
            response = await client.post(
                "/raw",
                headers={"Sec-Fetch-Site": "cross-site", "X-Forwarded-For": "198.51.100.7"},
            )
        refused(response, "cross_site")
        return harness.events()[-1]

    proxied = Harness(proxies=TrustedProxies(["10.0.0.0/8"]))
    hasher = IdentifierHasher(proxied.keyring)
    event = await refused_from(proxied, "10.0.0.1")
    assert event.client_ip == hasher.hash("198.51.100.7", kind="client_ip")
    # A peer that is not a trusted proxy is the client, whatever it forwards.
    event = await refused_from(proxied, "192.0.2.7")
    assert event.client_ip == hasher.hash("192.0.2.7", kind="client_ip")


def test_websocket_handshake_is_checked_by_origin(client: TestClient) -> None:
    # Starlette's test client always uses the ws:// scheme, so the page origin is http://. It
    # offers the websocket.http.response extension: the refusal is a real 403.
    with client.websocket_connect("/ws", headers={"Origin": "http://testserver"}) as ws:
        assert ws.receive_text() == "hello"
    headers = {"Origin": "https://evil.example", "Accept": "application/json"}
    with pytest.raises(WebSocketDenialResponse) as info:
        with client.websocket_connect("/ws", headers=headers):
            pass
    assert info.value.status_code == 403
    assert info.value.headers["cache-control"] == "no-store"
    assert info.value.json()["reason"] == "websocket_origin"


def test_websocket_refusal_without_the_extension_is_a_close_1008(client: TestClient) -> None:
    app = client.app

    async def without_extension(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "extensions": {}}, receive, send)  # type: ignore[operator]

    with TestClient(without_extension) as plain:
        with pytest.raises(WebSocketDisconnect) as info:
            with plain.websocket_connect("/ws", headers={"Origin": "https://evil.example"}):
                pass
    assert info.value.code == 1008


def test_configuration_errors_name_the_setting() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"public_origins": ("example.com",)}, "public_origins"),
        ({"public_origins": "https://example.com"}, "public_origins"),
        ({"trusted_origins": ("https://x.example/path",)}, "trusted_origins"),
        ({"exempt": ("hooks",)}, "exempt"),
        ({"header_name": "X CSRF"}, "header_name"),
        ({"field_name": "a b"}, "field_name"),
        ({"max_body_bytes": 10}, "max_body_bytes"),
        ({"log_only": "yes"}, "log_only"),
        ({"token_source": "cookie"}, "token_source"),
    ]
    for kwargs, setting in cases:
        with pytest.raises(ConfigurationError) as info:
            CSRFConfig(**kwargs)
        assert info.value.setting == setting
    with pytest.raises(ConfigurationError) as info:
        CSRFMiddleware(
            Starlette(),
            config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
            production=False,
        )
    assert info.value.setting == "keyring"
    with pytest.raises(ConfigurationError) as info:
        CSRFMiddleware(Starlette(), config=CSRFConfig(development=True), production=True)
    assert info.value.setting == "development"
    with pytest.raises(ConfigurationError) as info:
        CSRFMiddleware(Starlette(), proxies=("10.0.0.0/8",), production=False)  # type: ignore[arg-type]
    assert info.value.setting == "proxies"


def test_session_source_without_session_middleware_says_how_to_fix() -> None:
    app = Starlette(routes=make_routes(), middleware=[Middleware(CSRFMiddleware, production=False)])
    with TestClient(app, base_url=HTTPS) as client, pytest.raises(ConfigurationError) as info:
        client.post("/raw", headers={"X-CSRF-Token": "x" * 86})
    assert "SessionMiddleware" in str(info.value)


# -- double submit (no server sessions) ------------------------------------------------------------


def double_submit_app(keyring: KeyRing) -> Starlette:
    async def token(request: Request) -> JSONResponse:
        return JSONResponse({"token": csrf_token(request), "input": csrf_input(request)})

    async def act(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("done")

    def identity(scope: Any) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-user":
                return str(value.decode())
        return None

    return Starlette(
        routes=[Route("/token", token), Route("/act", act, methods=["POST"])],
        middleware=[
            Middleware(
                CSRFMiddleware,
                config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
                keyring=keyring,
                identity=identity,
                production=False,
            )
        ],
    )


def test_double_submit_cookie_is_bound_to_the_identity() -> None:
    keyring = KeyRing.generate()
    with TestClient(double_submit_app(keyring), base_url=HTTPS) as client:
        response = client.get("/token", headers={"X-User": "alice"})
        set_cookie = response.headers["set-cookie"]
        assert set_cookie.startswith("__Host-csrf=")
        assert "Secure" in set_cookie
        assert "SameSite=Strict" in set_cookie
        token = response.json()["token"]
        ok = client.post("/act", headers={"X-CSRF-Token": token, "X-User": "alice"})
        assert ok.text == "done"
        cookie = client.cookies["__Host-csrf"]
        assert client.post("/act", headers={"X-CSRF-Token": cookie, "X-User": "alice"}).text == (
            "done"
        )
        # After login the identity changes: the old cookie and its tokens stop verifying.
        refused(
            client.post("/act", headers={"X-CSRF-Token": token, "X-User": "bob", **JSON}),
            "no_session",
        )
        # A cookie planted by a sibling subdomain, minted for the attacker's own identity:
        client.get("/token", headers={"X-User": "mallory"})
        planted = client.cookies["__Host-csrf"]
        client.cookies.set("__Host-csrf", planted, domain="testserver")
        refused(
            client.post("/act", headers={"X-CSRF-Token": planted, "X-User": "alice", **JSON}),
            "no_session",
        )


def test_a_request_that_needs_no_token_reads_no_cookie_and_no_identity() -> None:
    # A safe method, and a POST that Fetch Metadata decides, are decided before anything else
    # about the request is read: the identity function runs, and the double-submit cookie is
    # verified, only for a request that makes or checks a token.
    asked: list[str] = []

    async def page(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("page")

    async def token(request: Request) -> PlainTextResponse:
        return PlainTextResponse(csrf_token(request))

    async def act(_request: Request) -> PlainTextResponse:
        return PlainTextResponse("done")

    def identity(scope: Any) -> str | None:
        asked.append(scope["path"])
        return "alice"

    app = Starlette(
        routes=[Route("/page", page), Route("/token", token), Route("/act", act, methods=["POST"])],
        middleware=[
            Middleware(
                CSRFMiddleware,
                config=CSRFConfig(token_source=TokenSource.DOUBLE_SUBMIT),
                keyring=KeyRing.generate(),
                identity=identity,
                production=False,
            )
        ],
    )
    with TestClient(app, base_url=HTTPS) as client:
        issued = client.get("/token").text
        assert asked == ["/token"]
        assert client.get("/page").text == "page"
        same_origin = {"Sec-Fetch-Site": "same-origin"}
        assert client.post("/act", headers=same_origin).text == "done"
        assert asked == ["/token"]
        assert client.post("/act", headers={"X-CSRF-Token": issued}).text == "done"
        assert asked == ["/token", "/act"]
        refused(client.post("/act", headers={"Sec-Fetch-Site": "cross-site", **JSON}), "cross_site")
        assert asked == ["/token", "/act"]


def test_double_submit_refuses_a_token_for_another_cookie() -> None:
    keyring = KeyRing.generate()
    app = double_submit_app(keyring)
    with TestClient(app, base_url=HTTPS) as mine, TestClient(app, base_url=HTTPS) as theirs:
        their_token = theirs.get("/token").json()["token"]
        mine.get("/token")
        refused(mine.post("/act", headers={"X-CSRF-Token": their_token, **JSON}), "token_incorrect")


# -- FastAPI ---------------------------------------------------------------------------------------


def fastapi_app(store: Store) -> FastAPI:
    app = FastAPI()

    @app.get("/token")
    async def token(request: FastAPIRequest) -> dict[str, str]:
        return {"token": csrf_token(request)}

    @app.post("/transfer")
    async def transfer(request: FastAPIRequest, amount: int = Form()) -> dict[str, int]:
        request.session["sent"] = request.session.get("sent", 0) + amount
        return {"sent": request.session["sent"]}

    @app.get("/page", response_class=HTMLResponse)
    async def page(request: FastAPIRequest) -> str:
        return f"<form>{csrf_input(request)}</form>"

    app.add_middleware(CSRFMiddleware, production=False)
    app.add_middleware(SessionMiddleware, store=store, production=False)
    return app


def test_fastapi_form_route(tmp_path: Path) -> None:
    app = fastapi_app(SQLiteStore(tmp_path / "fa.db"))
    with TestClient(app, base_url=HTTPS) as client:
        refused(
            client.post(
                "/transfer",
                data={"amount": "5"},
                headers={"Sec-Fetch-Site": "cross-site", **JSON},
            ),
            "cross_site",
        )
        refused(client.post("/transfer", data={"amount": "5"}, headers=JSON), "token_missing")
        token = client.get("/token").json()["token"]
        response = client.post("/transfer", data={"amount": "5", "csrf_token": token})
        assert response.json() == {"sent": 5}
        page = client.get("/page").text
        match = TOKEN_IN_PAGE.search(page)
        assert match is not None
        response = client.post("/transfer", data={"amount": "2", "csrf_token": match.group(1)})
        assert response.json() == {"sent": 7}


def test_redis_store_run(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    harness = Harness(store)
    # One client (one event loop for the Redis connections); the attacker is the same client
    # with its own cookie jar swapped in.
    with harness.client() as client:
        attacker_token = fetch_token(client)
        client.cookies.clear()
        token = fetch_token(client)
        assert client.post("/raw", headers={"X-CSRF-Token": token}).status_code == 200
        refused(
            client.post("/raw", headers={"X-CSRF-Token": attacker_token, **JSON}),
            "token_incorrect",
        )
        assert client.post("/login", headers={"X-CSRF-Token": token}).status_code == 200
        refused(client.post("/raw", headers={"X-CSRF-Token": token, **JSON}), "token_incorrect")
        portal = client.portal
        assert portal is not None
        portal.call(store.aclose)


def test_a_config_that_is_not_a_csrf_config_is_refused_by_both_middlewares() -> None:
    from bastion.wsgi import CSRFMiddleware as WSGICSRFMiddleware  # noqa: PLC0415

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    for middleware in (CSRFMiddleware, WSGICSRFMiddleware):
        with pytest.raises(ConfigurationError, match="CSRFConfig") as info:
            middleware(app, config={"log_only": True}, production=False)  # type: ignore[arg-type]
        assert info.value.setting == "config"
