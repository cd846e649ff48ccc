"""The ``bastion`` command line: ``bastion demo``, ``bastion secret``, ``bastion --version``."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from bastion import __version__

__all__ = ["main"]


def _loopback(host: str) -> str:
    """argparse type: the demo serves plain HTTP, so it only binds loopback addresses."""
    if host == "localhost":
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--host {host!r} is not an IP address") from None
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(
            f"--host {host} is not a loopback address; the demo serves plain HTTP in "
            "development mode and binds only 127.0.0.1, ::1 or localhost"
        )
    return host


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the protected example app on loopback",
        description=(
            "Serve bastion's demo app (sessions, CSRF, strict headers with CSP nonces, rate "
            "limits, login throttling, TOTP, API keys, audit page) over plain HTTP on a "
            "loopback address, in bastion's development mode. Prints the URL and the seeded "
            "accounts 'demo' and 'admin' with their password; set BASTION_DEMO_PASSWORD to "
            "choose it (otherwise a random one per start)."
        ),
    )
    demo.add_argument("--host", type=_loopback, default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument(
        "--store",
        default="sqlite:///bastion-demo.db",
        help="store URL: sqlite:///path (default sqlite:///bastion-demo.db), memory://, redis://",
    )

    secret = commands.add_parser("secret", help="print a new random secret key (32 bytes)")
    secret.add_argument("--bytes", type=int, default=32, help="length in bytes (minimum 32)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "secret":
        from bastion.core.keys import SecretKey  # noqa: PLC0415 (keeps `bastion --help` light)

        if args.bytes < 32:
            print("bastion secret: --bytes must be at least 32", file=sys.stderr)
            return 2
        print(SecretKey.generate(args.bytes).to_text())
        return 0
    from bastion.demo import serve  # noqa: PLC0415 (imports uvicorn only for the demo)

    return serve(host=args.host, port=args.port, store_url=args.store)
