"""Request limits under a real uvicorn server, fed over a raw socket: a body that arrives too
slowly, an oversized chunked upload, a declared length over the cap with ``Expect:
100-continue``, and a slow handler; and a Flask app under werkzeug's real WSGI server, fed an
oversized chunked upload.

The deadlines are a few tenths of a second; each test waits for the server's answer (a socket
read with a generous timeout), never for a fixed time of its own.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import flask
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

import bastion.flask
from bastion.asgi import protect
from bastion.config import Bastion
from bastion.core.csrf import CSRFConfig
from bastion.core.request_limits import RequestLimits
from servers import connect, uvicorn_thread, werkzeug_thread

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Iterator

    from starlette.requests import Request

CAP = 1000


def make_app(seen: list[int]) -> Any:
    async def upload(request: Request) -> PlainTextResponse:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            seen.append(total)
        return PlainTextResponse(str(total))

    async def slow(request: Request) -> PlainTextResponse:
        await asyncio.sleep(30)  # the app hanging on something; cancelled by the layer
        return PlainTextResponse("too late")  # pragma: no cover

    async def stream(request: Request) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for part in (b"a", b"b", b"c"):
                await asyncio.sleep(0.2)  # the app streaming, past the handler's deadline
                yield part

        return StreamingResponse(parts(), media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/upload", upload, methods=["POST"]),
            Route("/slow", slow),
            Route("/stream", stream),
        ]
    )
    limits = RequestLimits(max_body_bytes=CAP, body_timeout=0.3, handler_timeout=0.3)
    return protect(app, Bastion(csrf=None, headers=None, limits=limits).build())


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, list[int]]]:
    seen: list[int] = []
    with uvicorn_thread(make_app(seen), http="h11") as port:
        yield port, seen


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The response's status, headers and body, read until the server closes or the body's
    length is in."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"connection closed before a response: {data!r}"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "-1"))
    while length >= 0 and len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return status, headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def test_a_slow_body_is_408_and_the_connection_closed(server: tuple[int, list[int]]) -> None:
    port, _ = server
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n"
            b"Accept: application/json\r\n\r\n" + b"x" * 10
        )  # ... and the other 90 bytes never come
        status, headers, body = read_response(sock)
        elapsed = time.monotonic() - started
        assert status == 408
        assert b'"error": "body_timeout"' in body
        assert headers["connection"] == "close"
        assert 0.25 < elapsed < 5  # the layer's deadline, not the server's or the test's
        assert closed_by_server(sock)


def test_an_oversized_chunked_upload_is_413_before_its_end(server: tuple[int, list[int]]) -> None:
    port, seen = server
    seen.clear()
    chunk = b"x" * 600
    with connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Accept: application/json\r\n\r\n"
        )
        for _ in range(2):  # 1200 bytes, past the 1000-byte cap; no terminating chunk sent
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            time.sleep(0.05)  # separate reads for the server: pacing the upload, not waiting
        status, headers, body = read_response(sock)
        assert status == 413
        assert b'"error": "body_too_large"' in body
        assert headers["connection"] == "close"
        assert closed_by_server(sock)
    assert seen == [600]  # the chunk that crossed the cap never reached the endpoint


def test_a_declared_length_over_the_cap_gets_413_not_100_continue(
    server: tuple[int, list[int]],
) -> None:
    port, seen = server
    seen.clear()
    with connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        status, _headers, body = read_response(sock)
        assert status == 413  # the first and only answer: the client never sends the 10 MB
        assert body.startswith(b'{"error": "body_too_large"')  # no Accept: JSON
        assert closed_by_server(sock)
    assert seen == []


def test_a_slow_handler_is_503_with_retry_after(server: tuple[int, list[int]]) -> None:
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n\r\n")
        status, headers, body = read_response(sock)
        assert status == 503
        assert headers["retry-after"] == "5"
        assert body.startswith(b"Service unavailable")
        # The connection stays usable: the request was whole, only the app was slow.
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc")
        assert read_response(sock)[:1] == (200,)


def test_a_streamed_response_outlives_the_handler_timeout(server: tuple[int, list[int]]) -> None:
    port, _ = server
    with connect(port) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while part := sock.recv(65536):
            data += part
    assert data.startswith(b"HTTP/1.1 200 ")
    body = data.partition(b"\r\n\r\n")[2]
    assert body == b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n"  # all three parts, chunked


# -- a real WSGI server: Flask under werkzeug's, which sets wsgi.input_terminated for chunked


@pytest.fixture(scope="module")
def flask_server() -> Iterator[tuple[int, list[int]]]:
    seen: list[int] = []
    app = flask.Flask(__name__)

    @app.post("/upload")
    def upload() -> str:
        data = flask.request.get_data()
        seen.append(len(data))
        return str(len(data))

    config = Bastion(
        store="memory://",
        csrf=CSRFConfig(exempt=("/upload",)),
        headers=None,
        limits=RequestLimits(max_body_bytes=CAP),
    )
    bastion.flask.protect(app, config)
    with werkzeug_thread(app) as port:
        yield port, seen


def test_flask_under_a_real_server_stops_a_chunked_upload_at_the_cap(
    flask_server: tuple[int, list[int]],
) -> None:
    port, seen = flask_server
    chunk = b"x" * 600
    with connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Accept: application/json\r\n\r\n"
        )
        for _ in range(2):  # past the cap; no terminating chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, _headers, body = read_response(sock)
    assert status == 413
    assert b'"error": "body_too_large"' in body
    assert seen == []  # the view never saw a cut body


def test_flask_under_a_real_server_serves_a_body_within_the_cap(
    flask_server: tuple[int, list[int]],
) -> None:
    port, _ = flask_server
    with connect(port) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3e8\r\n" + b"y" * 1000 + b"\r\n0\r\n\r\n"
        )
        status, _headers, body = read_response(sock)
    assert (status, body) == (200, b"1000")
