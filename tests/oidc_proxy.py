"""A tampering HTTP proxy in front of the test OpenID Provider (tests/oidc_support.py).

A threaded ``http.server`` on 127.0.0.1 forwards each request, Host header included, to the
provider and returns its answer, unless a test has installed a rewrite for the request's path:
then the answer passes through that function first (an edited ID token, garbage, a 503, a
connection closed unanswered). The provider's issuer is this proxy's origin, so every URL the
provider advertises leads here. ``rewrite_request(path, fn)`` edits a request's body before it
is forwarded (a token request without its PKCE verifier). Every request is logged in
``requests`` (method, path), so a test can count discovery or JWKS fetches.

HTTP/1.0 with one request per connection: nothing stays open when the proxy stops.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["DropConnection", "Exchange", "TamperingProxy", "drop_connection"]

# Headers that belong to one connection (RFC 9110 7.6.1), never forwarded; the body's length
# and encoding are set again for the body actually sent.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "accept-encoding",
        "content-encoding",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One forwarded request and the provider's answer, as a rewrite sees and returns it."""

    method: str
    path: str  # with the query string
    request_body: bytes
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class DropConnection(Exception):
    """Raised by a rewrite: close the client's connection without an answer."""


def drop_connection(exchange: Exchange) -> Exchange:
    """A rewrite that answers nothing (a provider that went away mid-request)."""
    raise DropConnection(exchange.path)


class TamperingProxy:
    """Forwards to ``upstream`` (host, port); ``rewrite(path, fn)`` edits answers for ``path``."""

    def __init__(self) -> None:
        self.upstream: tuple[str, int] | None = None
        self.requests: list[tuple[str, str]] = []
        self._rules: list[tuple[str, Callable[[Exchange], Exchange]]] = []
        self._request_rules: list[tuple[str, Callable[[bytes], bytes]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        if self._server is not None:
            return
        handler = type("_BoundHandler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @contextlib.contextmanager
    def rewrite(self, path: str, edit: Callable[[Exchange], Exchange]) -> Iterator[None]:
        """Within the block, answers for ``path`` (the path without its query) go through
        ``edit``; rewrites of one path apply in the order they were installed."""
        rule = (path, edit)
        with self._lock:
            self._rules.append(rule)
        try:
            yield
        finally:
            with self._lock:
                self._rules.remove(rule)

    @contextlib.contextmanager
    def rewrite_request(self, path: str, edit: Callable[[bytes], bytes]) -> Iterator[None]:
        """Within the block, the body of a request for ``path`` goes through ``edit`` before
        it is forwarded (what a client that drops a parameter would send)."""
        rule = (path, edit)
        with self._lock:
            self._request_rules.append(rule)
        try:
            yield
        finally:
            with self._lock:
                self._request_rules.remove(rule)

    def request_rules_for(self, path: str) -> list[Callable[[bytes], bytes]]:
        with self._lock:
            return [edit for rule_path, edit in self._request_rules if rule_path == path]

    def rules_for(self, path: str) -> list[Callable[[Exchange], Exchange]]:
        with self._lock:
            return [edit for rule_path, edit in self._rules if rule_path == path]


class _Handler(BaseHTTPRequestHandler):
    proxy: ClassVar[TamperingProxy]
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's name)
        """Quiet: the tests read ``proxy.requests`` instead."""

    def _forward(self) -> None:
        proxy = self.proxy
        proxy.requests.append((self.command, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        for edit_request in proxy.request_rules_for(self.path.split("?", 1)[0]):
            body = edit_request(body)
        exchange = self._ask_upstream(body)
        try:
            for edit in proxy.rules_for(self.path.split("?", 1)[0]):
                exchange = edit(exchange)
        except DropConnection:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response_only(exchange.status)
        for name, value in exchange.headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(exchange.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(exchange.body)

    def _ask_upstream(self, body: bytes) -> Exchange:
        def answer(status: int, text: bytes) -> Exchange:
            return Exchange(
                method=self.command,
                path=self.path,
                request_body=body,
                status=status,
                headers=[("Content-Type", "text/plain")],
                body=text,
            )

        upstream = self.proxy.upstream
        if upstream is None:
            return answer(503, b"the provider is starting")
        headers = {
            name: value for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP
        }
        if body:
            headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection(*upstream, timeout=10)
        try:
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            return Exchange(
                method=self.command,
                path=self.path,
                request_body=body,
                status=response.status,
                headers=response.getheaders(),
                body=response.read(),
            )
        except OSError as error:
            return answer(502, f"the provider is unreachable: {error}".encode())
        finally:
            connection.close()

    # http.server dispatches on do_<METHOD>: every method is forwarded.
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _forward  # noqa: N815
