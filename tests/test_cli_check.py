"""``bastion check URL`` against real apps on free 127.0.0.1 ports.

The bastion-protected app is tests/observatory_app.py (the strict preset), served over HTTPS
with a throwaway CA (the helpers of tests/test_observatory.py); it must grade A+, and, when the
real MDN Observatory scanner is installed, with the same score and per-test results. A bare
Starlette app must grade F with the expected findings.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

import node_tools
import test_observatory as observatory
from observatory_app import app as strict_app
from servers import uvicorn_thread

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from starlette.requests import Request
    from starlette.types import ASGIApp


def bastion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def serve(app: ASGIApp, **ssl: str) -> Iterator[int]:
    """``app`` under uvicorn in a thread on a free port (HTTPS when ``ssl`` names files)."""
    with uvicorn_thread(app, ws="none", server_header=False, **ssl) as port:
        yield port


@pytest.fixture
def strict_https(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca, cert, key = observatory._make_certificates(tmp_path)
    for port in serve(strict_app, ssl_certfile=str(cert), ssl_keyfile=str(key)):
        yield port, ca


async def bare_home(_request: Request) -> Response:
    response = PlainTextResponse("hello")
    response.set_cookie("sessionid", "abc", secure=False, httponly=False, samesite=None)
    return response


async def off_host(_request: Request) -> Response:
    return RedirectResponse("https://bastion-check-elsewhere.invalid/", status_code=302)


@pytest.fixture
def bare_http() -> Iterator[int]:
    app = Starlette(routes=[Route("/", bare_home), Route("/away", off_host)])
    yield from serve(app)


def parse(stdout: str) -> tuple[int, str, dict[str, str]]:
    match = re.search(r"^score (-?\d+), grade (\S+)$", stdout, re.MULTILINE)
    assert match, stdout
    rows = re.findall(r"^(?:pass|FAIL)\s+[+-]\d+\s+(\S+)\s+(\S+)", stdout, re.MULTILINE)
    return int(match[1]), match[2], dict(rows)


def test_strict_bastion_app_grades_a_plus(strict_https: tuple[int, Path]) -> None:
    port, ca = strict_https
    url = f"https://127.0.0.1:{port}/"
    done = bastion("check", url, "--ca-file", str(ca), "--no-http-probe", "--min-grade", "A+")
    assert done.returncode == 0, done.stdout + done.stderr
    score, grade, found = parse(done.stdout)
    assert grade == "A+"
    assert score >= 130
    assert "FAIL" not in done.stdout
    assert found["content-security-policy"] == "csp-implemented-with-no-unsafe-default-src-none"
    assert found["cookies"] == "cookies-secure-with-httponly-sessions-and-samesite"
    assert found["strict-transport-security"] == "hsts-implemented-max-age-at-least-six-months"
    assert found["x-frame-options"] == "x-frame-options-implemented-via-csp"


def test_untrusted_certificate_is_one_line(strict_https: tuple[int, Path]) -> None:
    port, _ca = strict_https
    done = bastion("check", f"https://127.0.0.1:{port}/", "--no-http-probe")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "TLS certificate not trusted" in done.stderr
    assert "--ca-file" in done.stderr


def test_bare_app_grades_f_with_findings(bare_http: int) -> None:
    done = bastion("check", f"http://127.0.0.1:{bare_http}/")
    assert done.returncode == 0, done.stderr
    score, grade, found = parse(done.stdout)
    assert (score, grade) == (0, "F")
    assert found == {
        "content-security-policy": "csp-not-implemented",
        "cookies": "cookies-session-without-secure-flag",
        "cross-origin-resource-sharing": "cross-origin-resource-sharing-not-implemented",
        "redirection": "redirection-missing",
        "referrer-policy": "referrer-policy-not-implemented",
        "strict-transport-security": "hsts-not-implemented-no-https",
        "x-content-type-options": "x-content-type-options-not-implemented",
        "x-frame-options": "x-frame-options-not-implemented",
        "cross-origin-resource-policy": "corp-not-implemented",
    }
    assert "fix: add Secure to the session cookie" in done.stdout
    assert "fix: send X-Content-Type-Options: nosniff" in done.stdout


def test_min_grade_fails_ci(bare_http: int) -> None:
    done = bastion("check", f"http://127.0.0.1:{bare_http}/", "--min-grade", "B")
    assert done.returncode == 1
    assert done.stdout.rstrip().endswith("grade F is below --min-grade B")


def test_redirect_off_host_is_not_followed(bare_http: int) -> None:
    done = bastion("check", f"http://127.0.0.1:{bare_http}/away")
    # Following it would fail: the target's host name cannot resolve.
    assert done.returncode == 0, done.stderr
    assert "(HTTP 302)" in done.stdout
    _score, _grade, found = parse(done.stdout)
    assert found["redirection"] == "redirection-off-host-from-http"


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("not a url",), 2, "is not an http:// or https:// URL"),
        (("ftp://127.0.0.1/",), 2, "is not an http:// or https:// URL"),
        (("http://127.0.0.1:1/",), 1, "connection refused"),
        (("http://bastion-check.invalid/",), 1, "cannot fetch"),
        (("http://127.0.0.1:1/", "--timeout", "0"), 2, "--timeout must be between"),
        (("https://127.0.0.1:1/", "--ca-file", "/nonexistent/ca.pem"), 1, "--ca-file"),
    ],
)
def test_errors_are_one_line(args: tuple[str, ...], code: int, needle: str) -> None:
    done = bastion("check", *args)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("bastion check: ")
    assert needle in lines[0]


def test_min_grade_must_be_a_grade() -> None:
    done = bastion("check", "http://127.0.0.1:1/", "--min-grade", "Z")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


@pytest.mark.slow
def test_same_score_as_the_real_observatory(strict_https: tuple[int, Path]) -> None:
    scan = observatory._scanner()
    port, ca = strict_https
    env = {**os.environ, "NODE_EXTRA_CA_CERTS": str(ca)}
    scanned = subprocess.run(
        [str(node_tools.node()), str(scan), f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=observatory.SCAN_TIMEOUT,
        env=env,
        check=False,
    )
    report: dict[str, Any] = json.loads(scanned.stdout)
    assert "error" not in report, report
    done = bastion("check", f"https://127.0.0.1:{port}/", "--ca-file", str(ca))
    assert done.returncode == 0, done.stderr
    score, grade, found = parse(done.stdout)
    assert (score, grade) == (report["scan"]["score"], report["scan"]["grade"])
    theirs = {name: test["result"] for name, test in report["tests"].items() if name in found}
    assert theirs == found


# -- IPv6 literals and probes that fail


def _ipv6_loopback_port() -> int | None:
    """A free port on ::1, or None when the machine has no IPv6 loopback."""
    if not socket.has_ipv6:
        return None
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port: int = probe.getsockname()[1]
            return port
    except OSError:
        return None


@contextmanager
def uvicorn_on_ipv6(app: ASGIApp, port: int, **config: Any) -> Iterator[int]:
    """``app`` under uvicorn in a thread on [::1]:port (tests/servers.py listens on IPv4)."""
    import uvicorn  # noqa: PLC0415 (the demo extra; imported only by the tests that serve)

    server = uvicorn.Server(
        uvicorn.Config(
            app, host="::1", port=port, log_level="warning", lifespan="off", ws="none", **config
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start on ::1 within 10 s"
            time.sleep(0.02)  # polling a starting server, not waiting for a time window
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_an_ipv6_literal_url_is_checked(tmp_path: Path) -> None:
    port = _ipv6_loopback_port()
    if port is None:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    ca, cert, key = observatory._make_certificates(tmp_path, ips=("127.0.0.1", "::1"))
    with uvicorn_on_ipv6(
        strict_app, port, server_header=False, ssl_certfile=str(cert), ssl_keyfile=str(key)
    ):
        # With the plain-HTTP probe on: http://[::1]/ (port 80) answers nothing, which is
        # graded, not a reason to stop.
        done = bastion("check", f"https://[::1]:{port}/", "--ca-file", str(ca))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"https://[::1]:{port}/ (HTTP 200)" in done.stdout
    score, grade, found = parse(done.stdout)
    assert (score, grade) == (135, "A+")
    assert found["redirection"] == "redirection-not-needed-no-http"


async def malformed_for_origin(request: Request) -> Response:
    # Answers the cross-origin probe (a preflight with Origin) with a redirect to a malformed URL.
    if "origin" in request.headers:
        return Response(status_code=302, headers={"Location": "https://[::1/"})
    return PlainTextResponse("hello")


def test_a_failing_probe_does_not_end_the_run() -> None:
    app = Starlette(routes=[Route("/", malformed_for_origin, methods=["GET", "OPTIONS"])])
    for port in serve(app):
        done = bastion("check", f"http://127.0.0.1:{port}/")
    assert done.returncode == 0, done.stdout + done.stderr
    _score, _grade, found = parse(done.stdout)
    assert found["cross-origin-resource-sharing"] == (
        "cross-origin-resource-sharing-not-implemented"
    )


async def cookie_then_login(request: Request) -> Response:
    if request.url.path == "/":
        response = RedirectResponse("/login", status_code=302)
        response.set_cookie("sessionid", "abc", secure=False, httponly=False, samesite=None)
        return response
    return PlainTextResponse("login")


def test_a_cookie_set_by_a_redirect_is_graded() -> None:
    app = Starlette(routes=[Route("/", cookie_then_login), Route("/login", cookie_then_login)])
    for port in serve(app):
        done = bastion("check", f"http://127.0.0.1:{port}/")
    assert done.returncode == 0, done.stderr
    assert f"http://127.0.0.1:{port}/login (HTTP 200)" in done.stdout
    _score, _grade, found = parse(done.stdout)
    assert found["cookies"] == "cookies-session-without-secure-flag"


async def preflight_echo(request: Request) -> Response:
    if request.method == "OPTIONS":
        origin = request.headers.get("origin", "")
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
            },
        )
    return PlainTextResponse("hello")


def test_the_cors_probe_is_a_preflight_as_the_observatory_sends() -> None:
    # Echoing any Origin with credentials only on preflights is caught.
    app = Starlette(routes=[Route("/", preflight_echo, methods=["GET", "OPTIONS"])])
    for port in serve(app):
        done = bastion("check", f"http://127.0.0.1:{port}/")
    assert done.returncode == 0, done.stderr
    _score, _grade, found = parse(done.stdout)
    assert found["cross-origin-resource-sharing"] == (
        "cross-origin-resource-sharing-implemented-with-universal-access"
    )
