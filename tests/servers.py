"""Real servers for tests: a free loopback port, an ASGI app under uvicorn in a thread, a WSGI
app under werkzeug's server in a thread, a raw client socket, and a server command in its own
process.

Servers listen on 127.0.0.1 only and are stopped by the code that started them.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from pathlib import Path

__all__ = [
    "connect",
    "free_port",
    "http_ready",
    "server_process",
    "uvicorn_thread",
    "werkzeug_thread",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def uvicorn_thread(app: Any, *, start_within: float = 10.0, **config: Any) -> Iterator[int]:
    """``app`` under a real uvicorn server in a thread on a free loopback port; yields the port.

    ``config`` goes to ``uvicorn.Config`` (``ws=``, ``ssl_certfile=``, ...); logging defaults to
    warnings and the lifespan protocol to off. The server is asked to exit and joined on leaving.
    """
    import uvicorn  # noqa: PLC0415 (the demo extra; imported only by the tests that serve)

    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "off")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_within
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, f"uvicorn did not start within {start_within} s"
            time.sleep(0.02)  # polling a starting server, not waiting for a time window
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive(), "uvicorn did not stop within 10 s"


@contextmanager
def werkzeug_thread(app: Any) -> Iterator[int]:
    """``app`` (WSGI) under werkzeug's real threaded server on a free loopback port; yields the
    port. The server is shut down and joined on leaving."""
    from werkzeug.serving import make_server  # noqa: PLC0415 (only the WSGI server tests)

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        thread.join(timeout=10)


def connect(port: int) -> socket.socket:
    """A raw client connection to 127.0.0.1:``port`` (no Nagle delay, a 10 s timeout), for
    requests a client library would not send."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def http_ready(url: str, body: bytes | None = None) -> None:
    """Raise unless ``url`` answers (with exactly ``body``, when given): a ``ready=`` probe."""
    import urllib.request  # noqa: PLC0415

    with urllib.request.urlopen(url, timeout=2) as response:
        if body is not None and response.read() != body:
            raise ConnectionError(f"{url} is not ready yet")


@contextmanager
def server_process(
    command: Sequence[str],
    *,
    ready: Callable[[], object],
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    start_within: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (a server on loopback) in its own process until ``ready()`` stops
    raising ``OSError`` (or an ``http.client`` / httpx error, all ``Exception``); its output
    goes to ``log``, quoted when it does not start. Terminated (killed after 15 s) on leaving."""
    import pytest  # noqa: PLC0415 (tests only)

    with log.open("wb") as out:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + start_within
            while True:
                try:
                    ready()
                    break
                except Exception:
                    if server.poll() is not None or time.monotonic() > deadline:
                        out.flush()
                        text = log.read_text(errors="replace")
                        pytest.fail(f"{' '.join(command[:4])} ... did not start: {text[-2000:]}")
                    time.sleep(0.1)  # polling a starting server, not waiting for a time window
            yield server
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
