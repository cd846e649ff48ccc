"""The example app behind ``make demo``: in-process over ASGI, and once as a real server."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from bastion.core.cookies import parse_cookie
from bastion.core.keys import KeyRing
from bastion.core.signing import Signer
from bastion.demo import COOKIE_NAME, DemoApp
from bastion.errors import StoreUnavailable
from bastion.stores.memory import MemoryStore

if TYPE_CHECKING:
    from pathlib import Path

Headers = list[tuple[bytes, bytes]]


async def call(app: DemoApp, path: str = "/", method: str = "GET", cookie: str | None = None):
    headers: Headers = [(b"host", b"127.0.0.1")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("utf-8")))
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "client": ("127.0.0.1", 5000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], sent[1]
    return start["status"], dict(start["headers"]), body["body"]


def visits(body: bytes) -> int:
    text = body.decode()
    return int(text.split('<p class="n">', 1)[1].split("<", 1)[0])


def cookie_value(headers: dict[bytes, bytes]) -> str:
    line = headers[b"set-cookie"].decode()
    name, _, rest = line.partition("=")
    assert name == COOKIE_NAME
    return rest.split(";", 1)[0]


@pytest.fixture
def app() -> DemoApp:
    return DemoApp(MemoryStore(), keyring=KeyRing.generate(), store_label="memory://")


@pytest.mark.asyncio
async def test_first_visit_gets_a_hardened_signed_cookie(app: DemoApp) -> None:
    status, headers, body = await call(app)
    assert status == 200
    line = headers[b"set-cookie"].decode()
    assert line.startswith(COOKIE_NAME + "=")
    for attribute in ("Path=/", "Secure", "HttpOnly", "SameSite=Lax"):
        assert attribute in line.split("; ")
    assert "Domain" not in line
    assert visits(body) == 1


@pytest.mark.asyncio
async def test_counter_is_server_side_and_increments(app: DemoApp) -> None:
    _, headers, _ = await call(app)
    cookie = f"{COOKIE_NAME}={cookie_value(headers)}"
    _, headers2, body2 = await call(app, cookie=cookie)
    _, _, body3 = await call(app, cookie=cookie)
    assert b"set-cookie" not in headers2  # a verified visitor keeps its ID
    assert (visits(body2), visits(body3)) == (2, 3)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "presented",
    [
        "not-a-signed-value",
        "\u2000garbage",
        "x" * 9000,
        # signed for another purpose with the same kind of key: still refused
        Signer(KeyRing.generate(), "demo-visitor").sign(b"A" * 32),
    ],
)
async def test_bad_cookie_is_replaced_and_audited(
    app: DemoApp, presented: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bastion.audit")
    status, headers, body = await call(app, cookie=f"{COOKIE_NAME}={presented}")
    assert status == 200
    assert cookie_value(headers) != presented
    assert visits(body) == 1
    names = [r.getMessage() for r in caplog.records if r.name == "bastion.audit"]
    assert any('"input_validation_fail"' in line for line in names)
    assert all(presented[:20] not in line for line in names)


@pytest.mark.asyncio
async def test_headers_and_nonce(app: DemoApp) -> None:
    _, first, body = await call(app)
    _, second, _ = await call(app)
    csp = first[b"content-security-policy"].decode()
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp
    nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'nonce="{nonce}"'.encode() in body
    assert second[b"content-security-policy"] != first[b"content-security-policy"]
    assert first[b"x-content-type-options"] == b"nosniff"
    assert b"server" not in first


@pytest.mark.asyncio
async def test_other_routes(app: DemoApp) -> None:
    assert (await call(app, "/healthz"))[::2] == (200, b"ok")
    assert (await call(app, "/nope"))[0] == 404
    status, headers, _ = await call(app, "/", method="POST")
    assert (status, headers[b"allow"]) == (405, b"GET")


@pytest.mark.asyncio
async def test_concurrent_visits_are_all_counted(app: DemoApp) -> None:
    _, headers, _ = await call(app)
    cookie = f"{COOKIE_NAME}={cookie_value(headers)}"
    await asyncio.gather(*(call(app, cookie=cookie) for _ in range(30)))
    _, _, body = await call(app, cookie=cookie)
    assert visits(body) == 32


class DownStore(MemoryStore):
    async def get(self, key: str) -> bytes | None:
        raise StoreUnavailable("store at test:0 is down")


@pytest.mark.asyncio
async def test_store_outage_is_a_503_not_a_traceback() -> None:
    app = DemoApp(DownStore(), keyring=KeyRing.generate(), store_label="down://")
    status, headers, body = await call(app)
    assert status == 503
    assert b"set-cookie" not in headers
    assert b"Traceback" not in body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_bastion_demo_serves_on_loopback(tmp_path: Path) -> None:
    """`bastion demo` as `make demo` runs it: a real uvicorn server on a free loopback port."""
    port = _free_port()
    db = tmp_path / "demo.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion.cli",
            "demo",
            "--port",
            str(port),
            "--store",
            f"sqlite:///{db}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                    assert resp.read() == b"ok"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, "the demo exited early"
                assert time.monotonic() < deadline, "the demo did not answer within 20 s"
                time.sleep(0.1)
        with urllib.request.urlopen(base + "/", timeout=5) as resp:
            set_cookie = resp.headers["set-cookie"]
            first = visits(resp.read())
        token = parse_cookie(set_cookie.split(";", 1)[0])[COOKIE_NAME]
        request = urllib.request.Request(base + "/", headers={"Cookie": f"{COOKIE_NAME}={token}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            second = visits(resp.read())
            assert resp.headers["server"] is None
        assert (first, second) == (1, 2)
        assert db.exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/".encode() in out
    assert b"Traceback" not in out


def test_demo_refuses_a_public_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "demo", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr


def test_bastion_secret_prints_a_fresh_key() -> None:
    outputs = {
        subprocess.run(
            [sys.executable, "-m", "bastion.cli", "secret"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(outputs) == 2
    assert all(len(text) >= 43 for text in outputs)  # 32 bytes of base64url
