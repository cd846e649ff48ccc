"""Adversarial checks of the request limits: lying lengths, framing the server lets through,
many tiny chunks, ``Expect: 100-continue``, bodies on GET and HEAD, under real servers.

A declared ``Content-Length`` is a claim by the client, and under ``wsgi.input_terminated``
(werkzeug's server with ``Transfer-Encoding: chunked``) the server does not hold the stream to
it: the layer must count every byte it hands the app, whatever the header said.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import bastion.flask
from bastion.asgi import protect
from bastion.asgi.limits import RequestLimitsMiddleware
from bastion.config import Bastion
from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.csrf import CSRFConfig
from bastion.core.keys import KeyRing
from bastion.core.request_limits import RequestLimits, declared_length
from bastion.errors import AuditUnavailable
from bastion.testing.audit import RecordingAuditSink
from bastion.wsgi import protect as wsgi_protect
from bastion.wsgi.limits import RequestLimitsMiddleware as WSGIRequestLimits
from servers import connect, uvicorn_thread, werkzeug_thread

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Iterable, Iterator

    from starlette.requests import Request

CAP = 1000


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of one response (read to its Content-Length or to the close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"connection closed before a response: {data!r}"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length >= 0 and len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return int(lines[0].split()[1]), body


def auditor(sink: RecordingAuditSink) -> Auditor:
    return Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(), sink)


# -- WSGI: a Content-Length the stream does not keep to -----------------------------------


def counting_app(seen: list[int]) -> Any:
    """A WSGI app that reads its body in small pieces to the end (a streaming upload)."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        total = 0
        while chunk := stream.read(100):
            total += len(chunk)
        seen.append(total)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(total).encode()]

    return app


def environ(body: bytes, length: str | None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/upload",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_ACCEPT": "application/json",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,  # the server ends the stream (chunked), not the length
        "wsgi.errors": io.StringIO(),
    }
    if length is not None:
        env["CONTENT_LENGTH"] = length
    return env


class Recorder:
    def __init__(self) -> None:
        self.status = ""

    def __call__(self, status: str, headers: Any, exc_info: object = None) -> Any:
        self.status = status
        return lambda _data: None


@pytest.mark.parametrize("length", ["0", "5", "999"])
def test_wsgi_a_declared_length_below_the_body_does_not_stop_the_count(length: str) -> None:
    sink = RecordingAuditSink()
    seen: list[int] = []
    layer = WSGIRequestLimits(
        counting_app(seen),
        RequestLimits(max_body_bytes=CAP, body_timeout=None, handler_timeout=None),
        auditor=auditor(sink),
    )
    recorder = Recorder()
    body = b"".join(layer(environ(b"x" * 100_000, length), recorder))
    assert recorder.status == "413 Content Too Large"
    assert body.startswith(b'{"error": "body_too_large"')
    assert seen == []  # the app never finished reading the 100 KB
    [event] = sink.events
    assert event.details["reason"] == "body_too_large"
    assert event.details["received_bytes"] == CAP + 1


def test_wsgi_a_true_declared_length_is_still_served() -> None:
    seen: list[int] = []
    layer = WSGIRequestLimits(
        counting_app(seen),
        RequestLimits(max_body_bytes=CAP, body_timeout=None, handler_timeout=None),
        auditor=auditor(RecordingAuditSink()),
    )
    recorder = Recorder()
    env = environ(b"y" * CAP, str(CAP))
    del env["wsgi.input_terminated"]
    assert b"".join(layer(env, recorder)) == b"1000"
    assert recorder.status == "200 OK"
    assert seen == [CAP]


# -- the same through werkzeug's real server: Content-Length: 0 with a chunked body ---------


@pytest.fixture(scope="module")
def flask_server() -> Iterator[tuple[int, list[int]]]:
    seen: list[int] = []
    app = flask.Flask(__name__)

    @app.route("/upload", methods=["GET", "POST"])
    def upload() -> str:
        total = 0
        while chunk := flask.request.stream.read(100):
            total += len(chunk)
        seen.append(total)
        return str(total)

    config = Bastion(
        store="memory://",
        csrf=CSRFConfig(exempt=("/upload",)),
        headers=None,
        limits=RequestLimits(max_body_bytes=CAP),
    )
    bastion.flask.protect(app, config)
    with werkzeug_thread(app) as port:
        yield port, seen


def test_flask_real_server_content_length_zero_with_a_chunked_body_is_capped(
    flask_server: tuple[int, list[int]],
) -> None:
    port, seen = flask_server
    seen.clear()
    chunk = b"x" * 4000
    with connect(port) as sock:
        # Both framings: werkzeug's server reads the chunks (wsgi.input_terminated) and passes
        # CONTENT_LENGTH "0" on to the app.
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
            b"Transfer-Encoding: chunked\r\nAccept: application/json\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(chunk), chunk)
            + b"0\r\n\r\n"
        )
        status, body = read_response(sock)
    assert (status, body[:26]) == (413, b'{"error": "body_too_large"')
    assert seen == []


@pytest.mark.parametrize(
    "head",
    [
        b"GET /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n",
        (
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\nContent-Length: 10\r\n"
        ),
    ],
)
def test_flask_real_server_get_with_a_body_and_expect_with_a_small_length_are_capped(
    flask_server: tuple[int, list[int]], head: bytes
) -> None:
    port, seen = flask_server
    seen.clear()
    chunk = b"x" * 4000
    with connect(port) as sock:
        sock.sendall(head + b"Accept: application/json\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
        data = b""
        while b'"body_too_large"' not in data:
            part = sock.recv(65536)
            assert part, data
            data += part
    final = data.rpartition(b"HTTP/1.1 ")[2]  # after werkzeug's own "100 Continue", if any
    assert final.startswith(b"413 ")
    assert seen == []


# -- ASGI under a real uvicorn: the same framing, and more ways to send a body ----------------


def starlette_upload(seen: list[int]) -> Starlette:
    async def upload(request: Request) -> PlainTextResponse:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        seen.append(total)
        return PlainTextResponse(str(total))

    return Starlette(routes=[Route("/upload", upload, methods=["GET", "HEAD", "POST"])])


def asgi_app(seen: list[int]) -> Any:
    app = starlette_upload(seen)
    limits = RequestLimits(max_body_bytes=CAP, body_timeout=0.3, handler_timeout=5)
    return RequestLimitsMiddleware(app, limits, auditor=auditor(RecordingAuditSink()))


@pytest.fixture(scope="module")
def uvicorn_server() -> Iterator[tuple[int, list[int]]]:
    seen: list[int] = []
    with uvicorn_thread(asgi_app(seen), http="h11") as port:
        yield port, seen


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    ],
)
def test_uvicorn_content_length_zero_with_a_chunked_body_is_capped(
    uvicorn_server: tuple[int, list[int]], framing: bytes
) -> None:
    port, seen = uvicorn_server
    seen.clear()
    chunk = b"x" * 4000
    with connect(port) as sock:
        # h11 reads the chunks and the layer is shown "content-length: 0" in the scope.
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
            + framing
            + b"\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
        )
        status, body = read_response(sock)
    assert (status, body[:26]) == (413, b'{"error": "body_too_large"')
    assert seen == []


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_uvicorn_many_one_byte_chunks_are_counted(uvicorn_server: tuple[int, list[int]]) -> None:
    port, seen = uvicorn_server
    seen.clear()
    with connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Accept: application/json\r\n\r\n" + b"1\r\nx\r\n" * (CAP + 1) + b"0\r\n\r\n"
        )
        status, body = read_response(sock)
        assert (status, body[:26]) == (413, b'{"error": "body_too_large"')
        assert closed_by_server(sock)
    assert seen == []


def test_uvicorn_a_trickled_chunked_body_gets_408(uvicorn_server: tuple[int, list[int]]) -> None:
    port, seen = uvicorn_server
    seen.clear()
    with connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Accept: application/json\r\n\r\n1\r\nx\r\n"
        )  # one byte, then nothing: the 0.3 s body deadline answers, not the test's clock
        status, body = read_response(sock)
        assert (status, body[:24]) == (408, b'{"error": "body_timeout"')
        assert closed_by_server(sock)
    assert seen == []


@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_uvicorn_get_and_head_with_a_declared_body_over_the_cap_get_413(
    uvicorn_server: tuple[int, list[int]], method: bytes
) -> None:
    port, seen = uvicorn_server
    seen.clear()
    with connect(port) as sock:
        sock.sendall(
            method + b" /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n"
            b"Accept: application/json\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data:
            part = sock.recv(65536)
            assert part
            data += part
        assert data.startswith(b"HTTP/1.1 413 ")
    assert seen == []


def test_uvicorn_get_with_a_chunked_body_over_the_cap_gets_413(
    uvicorn_server: tuple[int, list[int]],
) -> None:
    port, seen = uvicorn_server
    seen.clear()
    chunk = b"x" * (CAP + 1)
    with connect(port) as sock:
        sock.sendall(
            b"GET /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Accept: application/json\r\n\r\n" + b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk)
        )
        status, body = read_response(sock)
    assert (status, body[:26]) == (413, b'{"error": "body_too_large"')
    assert seen == []


def test_uvicorn_expect_continue_with_a_small_length_then_a_chunked_flood_is_capped(
    uvicorn_server: tuple[int, list[int]],
) -> None:
    port, seen = uvicorn_server
    seen.clear()
    chunk = b"x" * 3000
    with connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            b"Transfer-Encoding: chunked\r\nContent-Length: 10\r\n"
            b"Accept: application/json\r\n\r\n"
        )
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # the app read: the server asked
        sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk))
        status, body = read_response(sock)
    assert (status, body[:26]) == (413, b'{"error": "body_too_large"')
    assert seen == []


def test_uvicorn_a_body_within_the_cap_is_served(uvicorn_server: tuple[int, list[int]]) -> None:
    port, seen = uvicorn_server
    seen.clear()
    with connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n" + b"y" * CAP
        )
        assert read_response(sock) == (200, b"1000")
    assert seen == [CAP]


@pytest.mark.parametrize(
    ("value", "length"),
    [
        ("5", 5),
        (b"5", 5),
        (" 5\t", 5),
        ("0" * 30 + "5", 5),  # RFC 9110 allows leading zeros: still five bytes
        ("0" * 30, 0),
        ("9" * 20, 2**63),
        ("1" + "0" * 19, 2**63),
        ("+5", None),
        ("-5", None),
        ("5, 5", None),
        ("0x10", None),
        ("\u0665", None),  # an Arabic-Indic five: not ASCII
        ("", None),
        (None, None),
    ],
)
def test_declared_length_readings(value: str | bytes | None, length: int | None) -> None:
    assert declared_length(value) == length


# -- a refusal the audit trail cannot record (fail-closed) ------------------------------------


class RefusingSink:
    """A fail-closed trail that cannot take the limits layer's events right now."""

    def __init__(self) -> None:
        self.refused: list[str] = []

    def emit(self, event: Any) -> None:
        if event.name == "input_validation_fail":
            self.refused.append(str(event.details["reason"]))
            raise AuditUnavailable("the audit trail is full")


def refusing_auditor(sink: RefusingSink) -> Auditor:
    return Auditor(IdentifierHasher(KeyRing.generate()), FrozenClock(), sink)  # type: ignore[arg-type]


async def oversized_chunks() -> AsyncIterator[bytes]:
    for _ in range(3):
        yield b"x" * 600


@pytest.mark.asyncio
async def test_asgi_a_cut_body_that_cannot_be_audited_is_503_not_413() -> None:
    sink = RefusingSink()
    seen: list[int] = []
    config = Bastion(
        csrf=None, auditor=refusing_auditor(sink), limits=RequestLimits(max_body_bytes=CAP)
    )
    app = protect(starlette_upload(seen), config.build())
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="https://localhost") as http:
        answer = await http.post(
            "/upload", content=oversized_chunks(), headers={"Accept": "application/json"}
        )
    assert answer.status_code == 503
    assert answer.json()["error"] == "audit_unavailable"
    assert sink.refused == ["body_too_large"]
    assert seen == []


def test_flask_a_cut_body_that_cannot_be_audited_is_503_not_413() -> None:
    sink = RefusingSink()
    app = flask.Flask(__name__)

    @app.post("/upload")
    def upload() -> str:
        return str(len(flask.request.get_data()))

    config = Bastion(
        store="memory://",
        csrf=CSRFConfig(exempt=("/upload",)),
        auditor=refusing_auditor(sink),
        limits=RequestLimits(max_body_bytes=CAP),
    )
    bastion.flask.protect(app, config)
    response = app.test_client().post(
        "/upload",
        input_stream=io.BytesIO(b"x" * 3 * CAP),
        headers={"Accept": "application/json"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 503
    assert response.get_json()["error"] == "audit_unavailable"
    assert sink.refused == ["body_too_large"]


def test_wsgi_a_cut_body_that_cannot_be_audited_is_503_not_413() -> None:
    sink = RefusingSink()
    seen: list[int] = []
    config = Bastion(
        store="memory://",
        csrf=None,
        auditor=refusing_auditor(sink),
        limits=RequestLimits(max_body_bytes=CAP),
    )
    app = wsgi_protect(counting_app(seen), config)
    recorder = Recorder()
    body = b"".join(app(environ(b"x" * 5 * CAP, None), recorder))
    assert recorder.status.startswith("503 ")
    assert b'"audit_unavailable"' in body
    assert sink.refused == ["body_too_large"]
    assert seen == []
