"""`bastion demo` under its real server: a spoofed X-Forwarded-For does not change the client.

uvicorn believes ``X-Forwarded-For`` from loopback by default and rewrites the client address
before bastion sees it, so every local client could pick its own rate-limit key. The demo turns
the server's rewriting off; bastion decides the address from its own trusted-proxy setting
(none in the demo).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

from bastion.demo import PASSWORD_SETTING
from servers import free_port

if TYPE_CHECKING:
    from pathlib import Path


def post(base: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(base + path, data=b"username=x", method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Accept", "application/json")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers)


@pytest.mark.slow
def test_a_spoofed_forwarded_for_does_not_change_the_rate_limit_key(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PASSWORD_SETTING: "a long demo password 42"}
    env.pop("ENV", None)
    env.pop("BASTION_ENV", None)
    command = [sys.executable, "-m", "bastion.cli", "demo", "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--store", f"sqlite:///{tmp_path / 'demo.db'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                    assert resp.read() == b"ok"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, "the demo exited early"
                assert time.monotonic() < deadline, "the demo did not answer within 30 s"
                time.sleep(0.1)
        # POST /register is limited to 10 a minute per client; each request claims another
        # address. Rate limits run before CSRF, so the tokenless posts are counted, then 403.
        answers = [
            post(base, "/register", {"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(11)
        ]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    statuses = [status for status, _ in answers]
    assert statuses == [403] * 10 + [429], out.decode()
    remaining = [headers["ratelimit"] for _, headers in answers[:10]]
    assert [item.split('"signup";r=')[1].split(";")[0] for item in remaining] == [
        str(n) for n in range(9, -1, -1)
    ]
    assert "Traceback" not in out.decode()
