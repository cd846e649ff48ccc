"""``bastion demo`` start-up failures through the real entry point (a subprocess of ``bastion``).

Every failure is one line on stderr with a documented exit code and no traceback, and nothing
of the banner (URL, passwords) is printed before the server listens on the port it names.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bastion.demo import PASSWORD_SETTING
from servers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

SEED = "correct horse battery staple violin"


def program() -> list[str]:
    script = Path(sys.executable).with_name("bastion")  # the installed console script
    return [str(script)] if script.exists() else [sys.executable, "-m", "bastion.cli"]


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PASSWORD_SETTING: SEED}
    env.pop("ENV", None)
    env.pop("BASTION_ENV", None)
    return env


def demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*program(), "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=environment(),
    )


def assert_failed_start(
    done: subprocess.CompletedProcess[str], code: int, *needles: str, only_line: bool = True
) -> None:
    """Exit ``code``, one ``bastion demo:`` error line (the last), no traceback, no banner."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stdout == ""  # no URL, no password
    assert SEED not in done.stderr
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("bastion demo:")]
    assert len(errors) == 1, done.stderr
    assert lines[-1] == errors[0]
    if only_line:
        assert len(lines) == 1, done.stderr
    else:  # before it, only bastion's logged start-up warnings
        assert all(re.match(r"bastion[.\w]* WARNING ", line) for line in lines[:-1]), lines
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path, port: str) -> None:
    done = demo("--port", port, "--store", "memory://", cwd=tmp_path)
    assert_failed_start(done, 2, f"--port {port} is outside 0-65535")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_port_in_use_is_a_failed_start(tmp_path: Path, busy_port: int) -> None:
    done = demo("--port", str(busy_port), "--store", "memory://", cwd=tmp_path)
    assert_failed_start(done, 1, f"cannot listen on 127.0.0.1:{busy_port}", "in use", "--port 0")


def test_an_unreachable_redis_is_a_failed_start(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = demo("--port", "0", "--store", f"redis://127.0.0.1:{port}/0", cwd=tmp_path)
    assert_failed_start(done, 1, f"127.0.0.1:{port}", "unavailable", only_line=False)


def test_a_sqlite_path_in_a_missing_directory_is_a_failed_start(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "demo.db"
    done = demo("--port", "0", "--store", f"sqlite:///{missing}", cwd=tmp_path)
    assert_failed_start(done, 1, str(missing), "directory exists", only_line=False)
    assert not missing.parent.exists()


def test_a_malformed_store_url_is_a_usage_error(tmp_path: Path) -> None:
    done = demo("--port", "0", "--store", "bogus://x", cwd=tmp_path)
    assert_failed_start(done, 2, "scheme 'bogus' is not supported")


def test_the_help_documents_the_exit_codes(tmp_path: Path) -> None:
    done = demo("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "exit codes:" in done.stdout
    for line in ("0  stopped", "1  could not start", "2  bad input"):
        assert line in done.stdout


@pytest.mark.slow
def test_port_0_prints_the_real_port_once_it_listens(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*program(), "demo", "--port", "0", "--store", "memory://"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the banner: the server listens by then
        match = re.fullmatch(r"bastion demo: http://127\.0\.0\.1:(\d+)/\n", first)
        assert match, first
        port = int(match.group(1))
        assert port != 0
        # No retry: the banner is printed only once the server serves on that port.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.read() == b"ok"
        banner = [proc.stdout.readline() for _ in range(4)]
        assert any(f"password: {SEED}" in line for line in banner)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
