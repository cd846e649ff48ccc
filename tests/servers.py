"""Real servers for tests: a free loopback port, and an ASGI app under uvicorn in a thread.

Servers listen on 127.0.0.1 only and are stopped by the code that started them.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["free_port", "uvicorn_thread"]


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
