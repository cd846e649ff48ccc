"""``bastion check --timeout`` is a deadline for each request, not a bound on each read.

The peer is a real TCP server in a thread that sends a valid HTTP response head a few bytes
at a time, each read well within the timeout (a test peer, not a mock of the checker).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest

from bastion.cli._common import CommandError
from bastion.cli.check import observe

if TYPE_CHECKING:
    from collections.abc import Iterator

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Padding: "
    + b"x" * 40
    + b"\r\nContent-Length: 0\r\n\r\n"
)


@pytest.fixture
def trickling_http() -> Iterator[int]:
    """An HTTP server sending its response head at 5 bytes per 0.1 s (about 2.2 s in all)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                for start in range(0, len(HEAD), 5):
                    if stop.wait(0.1):
                        return
                    conn.sendall(HEAD[start : start + 5])
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_a_trickling_server_is_cut_off_at_the_deadline(trickling_http: int) -> None:
    began = time.monotonic()
    with pytest.raises(CommandError, match="timed out"):
        observe(f"http://127.0.0.1:{trickling_http}/", timeout=0.5, http_probe=False)
    assert time.monotonic() - began < 1.5  # each read came within 0.1 s: the old bound never hit


def test_a_slow_but_timely_server_is_still_graded(trickling_http: int) -> None:
    observation, url = observe(f"http://127.0.0.1:{trickling_http}/", timeout=10, http_probe=False)
    assert observation.status == 200
    assert url.endswith("/")
