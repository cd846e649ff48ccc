"""README: "Server and X-Powered-By are removed", checked on real servers.

The middleware removes what the app sent; the header a server adds after the app (uvicorn's
``server: uvicorn``, werkzeug's ``Server: Werkzeug/x Python/y``) is out of reach of any ASGI or
WSGI layer and is switched off in the server, as README says: uvicorn ``server_header=False``
(``--no-server-header``), werkzeug a request handler whose ``send_response`` leaves it out.
"""

from __future__ import annotations

import http.client
import threading
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from werkzeug.serving import WSGIRequestHandler, make_server

from bastion.asgi.headers import SecurityHeadersMiddleware
from bastion.wsgi.headers import SecurityHeadersMiddleware as WSGISecurityHeadersMiddleware
from servers import free_port, uvicorn_thread

if TYPE_CHECKING:
    from starlette.requests import Request


def fetch(port: int) -> dict[str, list[str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        names: dict[str, list[str]] = {}
        for name, value in response.getheaders():
            names.setdefault(name.lower(), []).append(value)
        return names
    finally:
        connection.close()


async def fingerprinted(_request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok", headers={"Server": "MyApp/1.0", "X-Powered-By": "Express"})


ASGI_APP = SecurityHeadersMiddleware(Starlette(routes=[Route("/", fingerprinted)]))


def test_uvicorn_without_its_server_header_sends_no_fingerprint() -> None:
    with uvicorn_thread(ASGI_APP, server_header=False) as port:
        headers = fetch(port)
    assert "server" not in headers
    assert "x-powered-by" not in headers
    assert headers["x-content-type-options"] == ["nosniff"]


def test_uvicorn_default_adds_its_own_server_header_after_the_middleware() -> None:
    # Why README says to switch it off in uvicorn: the app's header is gone, uvicorn's is not.
    with uvicorn_thread(ASGI_APP) as port:
        headers = fetch(port)
    assert headers["server"] == ["uvicorn"]
    assert "x-powered-by" not in headers


class NoServerHeader(WSGIRequestHandler):
    """README's werkzeug handler: ``send_response`` without the ``Server`` line."""

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())


def wsgi_app(_environ: Any, start_response: Any) -> list[bytes]:
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Server", "MyApp/1.0"), ("X-Powered-By", "PHP/8")],
    )
    return [b"ok"]


def serve_wsgi(handler: type[WSGIRequestHandler] | None) -> dict[str, list[str]]:
    port = free_port()
    app = WSGISecurityHeadersMiddleware(wsgi_app)
    server = make_server("127.0.0.1", port, app, request_handler=handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        return fetch(port)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


def test_werkzeug_with_the_readme_handler_sends_no_fingerprint() -> None:
    headers = serve_wsgi(NoServerHeader)
    assert "server" not in headers
    assert "x-powered-by" not in headers
    assert headers["x-content-type-options"] == ["nosniff"]


def test_werkzeug_default_adds_its_own_server_header() -> None:
    headers = serve_wsgi(None)
    [server] = headers["server"]
    assert server.startswith("Werkzeug/")
    assert "MyApp" not in server
    assert "x-powered-by" not in headers
