"""Request limits through the front door: ``Bastion(limits=...)`` and ``protect()`` around real
Starlette, FastAPI and Flask apps, and the WSGI layer on its own.

The WSGI body timeout runs on the injected clock: the test's stream moves a FrozenClock as the
"client" sends, so nothing sleeps.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
from fastapi import FastAPI
from fastapi import Request as FastAPIRequest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

import bastion.flask
from bastion.asgi import protect
from bastion.asgi.limits import RequestLimitsMiddleware
from bastion.config import Bastion
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig
from bastion.core.environment import Environment
from bastion.core.keys import KeyRing
from bastion.core.request_limits import RequestLimitExceeded, RequestLimits, RouteLimits
from bastion.stores.memory import MemoryStore
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi import protect as wsgi_protect
from bastion.wsgi.limits import RequestLimitsMiddleware as WSGIRequestLimits

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from starlette.requests import Request

HTTPS = "https://localhost"
JSON = {"Accept": "application/json"}


def auditor(sink: RecordingAuditSink, clock: FrozenClock | None = None) -> Auditor:
    return Auditor(IdentifierHasher(KeyRing.generate()), clock or FrozenClock(), sink)


def reasons(sink: RecordingAuditSink, name: str = "input_validation_fail") -> list[str]:
    return [str(e.details["reason"]) for e in sink.events if e.name == name]


# -- Starlette and FastAPI -----------------------------------------------------------------


def starlette_app(seen: list[int]) -> Starlette:
    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"bytes": len(body)})

    async def form(request: Request) -> JSONResponse:
        fields = await request.form()
        return JSONResponse({"fields": len(fields)})

    return Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/upload", echo, methods=["POST"]),
            Route("/form", form, methods=["POST"]),
        ]
    )


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=HTTPS)


async def chunks(size: int, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b"x" * size


@pytest.mark.asyncio
async def test_protect_caps_bodies_by_default_and_per_route() -> None:
    sink = RecordingAuditSink()
    seen: list[int] = []
    config = Bastion(
        csrf=None,
        auditor=auditor(sink),
        limits=RequestLimits(
            max_body_bytes=1000, routes={"/upload": RouteLimits(max_body_bytes=10_000)}
        ),
    )
    async with client(protect(starlette_app(seen), config)) as http:
        assert (await http.post("/echo", content=b"x" * 1000, headers=JSON)).status_code == 200
        declared = await http.post("/echo", content=b"x" * 1001, headers=JSON)
        streamed = await http.post("/echo", content=chunks(400, 5), headers=JSON)
        upload = await http.post("/upload", content=chunks(4000, 2), headers=JSON)
    for refused in (declared, streamed):
        assert refused.status_code == 413
        assert refused.json()["error"] == "body_too_large"
        assert refused.headers["cache-control"] == "no-store"
        assert refused.headers["x-content-type-options"] == "nosniff"  # inside the headers layer
    assert upload.status_code == 200
    assert upload.json() == {"bytes": 8000}
    assert seen == [1000, 8000]  # neither refused body reached the endpoint
    assert reasons(sink) == ["body_too_large", "body_too_large"]
    assert [e.details.get("declared_bytes") for e in sink.events] == [1001, None]


@pytest.mark.asyncio
async def test_the_limit_comes_before_csrf_reads_the_form() -> None:
    """A 2 MiB form: refused by the limits layer from its Content-Length; CSRF never reads it."""
    sink = RecordingAuditSink()
    config = Bastion(store=MemoryStore(), auditor=auditor(sink), environment=Environment.TEST)
    async with client(protect(starlette_app([]), config)) as http:
        response = await http.post(
            "/form",
            content=b"csrf_token=x&data=" + b"a" * (2 * 1024 * 1024),
            headers={**JSON, "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert sink.names() == ["input_validation_fail"]  # no malicious_csrf: CSRF read nothing


@pytest.mark.asyncio
async def test_limits_none_turns_the_layer_off(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []
    with caplog.at_level(logging.WARNING, logger="bastion.security.protect"):
        app = protect(starlette_app(seen), Bastion(csrf=None, limits=None).build())
    assert "limits=None" in caplog.text
    async with client(app) as http:
        response = await http.post("/echo", content=b"x" * (2 * 1024 * 1024), headers=JSON)
    assert response.status_code == 200
    assert seen == [2 * 1024 * 1024]


def test_protect_places_the_limits_between_bearer_and_sessions() -> None:
    runtime = Bastion(store=MemoryStore(), headers=None, environment=Environment.TEST).build()
    stack = protect(starlette_app([]), runtime)
    assert isinstance(stack, RequestLimitsMiddleware)
    assert type(stack._app).__name__ == "SessionMiddleware"


@pytest.mark.asyncio
async def test_fastapi_body_over_the_cap() -> None:
    api = FastAPI()

    @api.post("/items")
    async def create(request: FastAPIRequest) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    config = Bastion(csrf=None, limits=RequestLimits(max_body_bytes=100))
    async with client(protect(api, config)) as http:
        ok = await http.post("/items", content=b"{}", headers=JSON)
        refused = await http.post("/items", content=chunks(60, 3), headers=JSON)
    assert ok.json() == {"bytes": 2}
    assert refused.status_code == 413
    assert refused.json()["error"] == "body_too_large"


# -- WSGI ------------------------------------------------------------------------------------


class Body(io.RawIOBase):
    """A body sent by a client: ``size`` bytes on demand, counting what the server gave the
    app; each read moves ``clock`` by ``pace`` seconds (a slow client)."""

    def __init__(self, size: int, clock: FrozenClock | None = None, pace: float = 0.0) -> None:
        self.left = size
        self.read_bytes = 0
        self.reads = 0
        self.clock = clock
        self.pace = pace

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.clock is not None:
            self.clock.advance(self.pace)
        n = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= n
        self.read_bytes += n
        return b"x" * n

    def readline(self, size: int | None = -1) -> bytes:
        return self.read(40 if size is None or size < 0 else min(size, 40))


def environ(body: Body, *, length: int | None = None, path: str = "/") -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "REMOTE_ADDR": "203.0.113.9",
        "HTTP_ACCEPT": "application/json",
        "wsgi.input": body,
        "wsgi.input_terminated": length is None,  # chunked: the server ends the stream
    }
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    return env


class Recorder:
    """A server's start_response, which (as PEP 3333 allows) takes a second call with
    exc_info before the headers are sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], object]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: object = None) -> Any:
        self.calls.append((status, headers, exc_info))
        return lambda data: None

    @property
    def status(self) -> str:
        return self.calls[-1][0]

    @property
    def headers(self) -> dict[str, str]:
        return {name.lower(): value for name, value in self.calls[-1][1]}


def reader(how: str, *, catch: bool = False, start_first: bool = False) -> Any:
    def app(env: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if start_first:
            start_response("200 OK", [("Content-Type", "text/plain")])
        stream = env["wsgi.input"]
        try:
            if how == "read":
                data = stream.read()
            elif how == "chunks":
                data = b""
                while part := stream.read(8192):
                    data += part
            elif how == "lines":
                data = b"".join(stream)
            else:
                data = b"".join(stream.readlines())
        except RequestLimitExceeded:
            if not catch:
                raise
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"the app's own answer"]
        if not start_first:
            start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(len(data)).encode()]

    return app


def wsgi_layer(
    app: Any, sink: RecordingAuditSink, clock: FrozenClock | None = None, **limits: Any
) -> WSGIRequestLimits:
    clock = clock or FrozenClock()
    return WSGIRequestLimits(
        app, RequestLimits(**limits), auditor=auditor(sink, clock), clock=clock
    )


def test_wsgi_declared_length_over_the_cap_is_refused_unread() -> None:
    sink = RecordingAuditSink()
    body = Body(5000)
    start = Recorder()
    result = wsgi_layer(reader("read"), sink, max_body_bytes=1000)(
        environ(body, length=5000), start
    )
    assert start.status == "413 Content Too Large"
    assert b"body_too_large" in b"".join(result)
    assert start.headers["cache-control"] == "no-store"
    assert "connection" not in start.headers  # hop-by-hop: the server's
    assert body.reads == 0
    assert sink.events[0].details["declared_bytes"] == 5000


@pytest.mark.parametrize("how", ["read", "chunks", "lines", "readlines"])
def test_wsgi_chunked_body_is_stopped_one_byte_past_the_cap(how: str) -> None:
    sink = RecordingAuditSink()
    body = Body(10 * 1024 * 1024)
    start = Recorder()
    result = wsgi_layer(reader(how), sink, max_body_bytes=1000)(environ(body), start)
    assert start.status == "413 Content Too Large"
    assert b'"error": "body_too_large"' in b"".join(result)
    assert body.read_bytes == 1001  # never more than one byte past the cap
    assert reasons(sink) == ["body_too_large"]


@pytest.mark.parametrize("size", [0, 999, 1000])
def test_wsgi_bodies_within_the_cap_pass(size: int) -> None:
    start = Recorder()
    result = wsgi_layer(reader("chunks"), RecordingAuditSink(), max_body_bytes=1000)(
        environ(Body(size)), start
    )
    assert start.status == "200 OK"
    assert b"".join(result) == str(size).encode()


def test_wsgi_apps_own_answer_is_replaced() -> None:
    start = Recorder()
    result = wsgi_layer(reader("read", catch=True), RecordingAuditSink(), max_body_bytes=10)(
        environ(Body(100)), start
    )
    assert [call[0] for call in start.calls] == ["413 Content Too Large"]  # the 400 dropped
    assert b"own answer" not in b"".join(result)


def test_wsgi_a_started_response_is_replaced_with_exc_info() -> None:
    start = Recorder()
    wsgi_layer(reader("read", start_first=True), RecordingAuditSink(), max_body_bytes=10)(
        environ(Body(100)), start
    )
    assert [call[0] for call in start.calls] == ["200 OK", "413 Content Too Large"]
    exc_info = start.calls[1][2]
    assert isinstance(exc_info, tuple)
    assert isinstance(exc_info[1], RequestLimitExceeded)


def test_wsgi_slow_body_is_408_on_the_injected_clock() -> None:
    sink = RecordingAuditSink()
    clock = FrozenClock()
    body = Body(100_000, clock=clock, pace=1.0)  # one second per 8 KiB read
    start = Recorder()
    result = wsgi_layer(reader("chunks"), sink, clock, body_timeout=2.5)(environ(body), start)
    assert start.status == "408 Request Timeout"
    assert b"body_timeout" in b"".join(result)
    assert body.reads == 3  # the read that returned after the deadline, and no more
    assert reasons(sink) == ["body_timeout"]


def test_wsgi_body_in_time_passes_and_a_late_read_after_its_end_is_not_timed() -> None:
    clock = FrozenClock()

    def app(env: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        data = env["wsgi.input"].read()
        clock.advance(60)  # the app works long after the whole body arrived
        assert env["wsgi.input"].read() == b""
        start_response("200 OK", [])
        return [data]

    start = Recorder()
    result = wsgi_layer(app, RecordingAuditSink(), clock, body_timeout=2.0)(
        environ(Body(10), length=10), start
    )
    assert start.status == "200 OK"
    assert b"".join(result) == b"x" * 10


def test_wsgi_says_it_cannot_enforce_the_handler_timeout(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bastion.security.limits"):
        WSGIRequestLimits(reader("read"))
    assert "handler_timeout is not enforced under WSGI" in caplog.text


def test_wsgi_protect_puts_the_limits_inside_the_headers() -> None:
    wrapped = wsgi_protect(
        reader("read"), Bastion(csrf=None, limits=RequestLimits(max_body_bytes=10))
    )
    start = Recorder()
    wrapped(environ(Body(100)), start)
    assert start.status == "413 Content Too Large"
    assert start.headers["x-content-type-options"] == "nosniff"


# -- Flask -------------------------------------------------------------------------------


def flask_app(sink: RecordingAuditSink, **limits: Any) -> flask.Flask:
    app = flask.Flask(__name__)
    seen: list[str] = []
    app.config["SEEN"] = seen

    @app.post("/submit")
    def submit() -> Any:
        seen.append(flask.request.form.get("data", ""))
        return {"ok": True}

    @app.post("/raw")
    def raw() -> Any:
        return {"bytes": len(flask.request.get_data())}

    @app.post("/hook")
    def hook() -> Any:  # CSRF-exempt: the view itself reads the form
        seen.append(flask.request.form.get("data", ""))
        return {"ok": True}

    bastion.flask.protect(
        app,
        Bastion(
            store=MemoryStore(),
            csrf=CSRFConfig(exempt=("/hook",)),
            auditor=auditor(sink),
            environment=Environment.TEST,
            limits=RequestLimits(**limits),
        ),
    )
    return app


def test_flask_form_over_the_cap_is_refused_before_csrf(caplog: pytest.LogCaptureFixture) -> None:
    sink = RecordingAuditSink()
    app = flask_app(sink, max_body_bytes=1000)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post(
            "/submit", base_url=HTTPS, data={"data": "a" * 2000}, headers=JSON
        )
    assert response.status_code == 413
    assert response.get_json()["error"] == "body_too_large"
    assert sink.names() == ["input_validation_fail"]
    assert app.config["SEEN"] == []
    assert "Exception on" not in caplog.text


def test_flask_chunked_upload_stops_at_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    """No Content-Length: the view's form parser reads through the counted stream, which stops
    one byte past the cap; Flask answers the error without logging a crash, and the view never
    sees a cut form."""
    sink = RecordingAuditSink()
    app = flask_app(sink, max_body_bytes=1000)
    body = Body(10 * 1024 * 1024)
    with caplog.at_level(logging.ERROR):
        response = app.test_client().post(
            "/hook",
            base_url=HTTPS,
            headers={**JSON, "Content-Type": "application/x-www-form-urlencoded"},
            environ_overrides={
                "wsgi.input": body,
                "wsgi.input_terminated": True,
                "CONTENT_LENGTH": "",  # chunked: no length (the test client would send 0)
            },
        )
    assert response.status_code == 413
    assert response.get_json()["error"] == "body_too_large"
    assert body.read_bytes == 1001
    assert reasons(sink) == ["body_too_large"]
    assert app.config["SEEN"] == []
    assert "Exception on" not in caplog.text


def test_flask_body_within_the_cap_is_served() -> None:
    app = flask_app(RecordingAuditSink(), max_body_bytes=1000)
    http = app.test_client()
    response = http.post(
        "/raw", base_url=HTTPS, data=b"x" * 500, headers={**JSON, "X-CSRF-Token": "-"}
    )
    # The CSRF check refuses the bogus token: the limits let the body through to it.
    assert response.status_code == 403
    assert response.get_json()["reason"] != "body_too_large"
