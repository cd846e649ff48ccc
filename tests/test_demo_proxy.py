"""`bastion demo` under its real server: a spoofed X-Forwarded-For does not change the client.

uvicorn believes ``X-Forwarded-For`` from loopback by default and rewrites the client address
before bastion sees it, so every local client could pick its own rate-limit key. The demo turns
the server's rewriting off; bastion decides the address from its own trusted-proxy setting
(none in the demo).
"""

from __future__ import annotations

import functools
import os
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import pytest

from bastion.demo import PASSWORD_SETTING
from servers import free_port, http_ready, server_process

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
    store = f"sqlite:///{tmp_path / 'demo.db'}"
    command = [sys.executable, "-m", "bastion.cli", "demo", "--port", str(port), "--store", store]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "demo.log"
    ready = functools.partial(http_ready, base + "/healthz", b"ok")
    with server_process(command, ready=ready, log=log, env=env):
        # POST /register is limited to 10 a minute per client; each request claims another
        # address. Rate limits run before CSRF, so the tokenless posts are counted, then 403.
        answers = [
            post(base, "/register", {"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(11)
        ]
    statuses = [status for status, _ in answers]
    assert statuses == [403] * 10 + [429], log.read_text(errors="replace")
    remaining = [headers["ratelimit"] for _, headers in answers[:10]]
    assert [item.split('"signup";r=')[1].split(";")[0] for item in remaining] == [
        str(n) for n in range(9, -1, -1)
    ]
    assert "Traceback" not in log.read_text(errors="replace")
