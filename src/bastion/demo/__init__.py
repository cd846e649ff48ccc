"""``bastion demo``: a small Starlette app with every bastion protection on (``make demo``).

It uses only bastion's public API, so it doubles as the reference example: read
:mod:`bastion.demo.app` for the composition and the handlers, :mod:`bastion.demo.users` for a
user store on the bastion store, :mod:`bastion.demo.support` for the audit ring buffer and the
friendly error pages.

Plain HTTP on loopback is bastion's explicit development mode: the session cookie goes without
``Secure`` (``SessionConfig(development=True, secure=False)``), bastion logs a warning at start,
and ``ENV=production`` refuses to start it. ``bastion demo`` binds loopback addresses only.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Final

from bastion.core.environment import read_setting
from bastion.errors import BastionError
from bastion.stores import open_store
from bastion.stores.url import redact_url

if TYPE_CHECKING:
    from bastion.demo.app import DemoApp

__all__ = ["PASSWORD_SETTING", "SERVER_PROXY", "banner", "build_demo", "serve"]

PASSWORD_SETTING = "BASTION_DEMO_PASSWORD"  # noqa: S105 (a variable name, not a password)
"""The environment variable that sets the seeded accounts' password."""


SERVER_PROXY: Final[dict[str, Any]] = {"proxy_headers": False, "forwarded_allow_ips": []}
"""uvicorn's proxy settings for the demo: it rewrites nothing from ``X-Forwarded-For``.

uvicorn believes ``X-Forwarded-*`` from 127.0.0.1 by default and rewrites the client address
before any middleware runs, so on loopback every client could choose its own address and with
it its rate-limit and login-throttle keys. The client address is bastion's decision
(:class:`~bastion.core.ratelimit.ClientIP` with its ``trusted_proxies``, none in the demo);
the server must not decide it first.
"""


def build_demo(store_url: str, *, seed_password: str | None = None) -> DemoApp:
    """The demo app for ``store_url`` (its rate limits in the same place: the SQLite file,
    the Redis server, or memory). Imports Starlette and Jinja2, the ``demo`` extra."""
    from bastion.demo.app import DemoApp  # noqa: PLC0415 (the demo extra, imported on use)
    from bastion.stores.ratelimit import open_ratelimit_store  # noqa: PLC0415

    store = open_store(store_url)
    ratelimit = open_ratelimit_store(store_url)
    return DemoApp(
        store,
        ratelimit=ratelimit,
        seed_password=seed_password,
        store_label=redact_url(store_url),
    )


def banner(app: DemoApp, url: str) -> str:
    """What ``bastion demo`` prints at start: the URL and the seeded accounts' passwords."""
    lines = [f"bastion demo: {url}", f"  store: {app.store_label}"]
    lines.extend(f"  user {a.username!r} ({a.role}), password: {a.password}" for a in app.seeded)
    lines.append(
        f"  (set {PASSWORD_SETTING} to choose the password; development mode: plain HTTP on "
        "loopback only)"
    )
    lines.append("press Ctrl+C to stop")
    return "\n".join(lines)


def serve(*, host: str, port: int, store_url: str) -> int:
    """Run the demo with uvicorn until interrupted. Returns the process exit code."""
    try:
        import uvicorn  # noqa: PLC0415 (the demo extra; imported only when serving)
    except ImportError:
        print("bastion demo needs uvicorn: pip install 'bastion[demo]'", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    try:
        app = build_demo(store_url, seed_password=read_setting(PASSWORD_SETTING))
    except ImportError as exc:
        needs = f"bastion demo needs the demo extra ({exc.name}): pip install 'bastion[demo]'"
        print(needs, file=sys.stderr)
        return 2
    except BastionError as exc:
        print(f"bastion demo: {exc}", file=sys.stderr)
        return 2
    shown = "localhost" if host == "localhost" else (f"[{host}]" if ":" in host else host)
    print(banner(app, f"http://{shown}:{port}/"), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False, **SERVER_PROXY)
    return 0
