"""``bastion password check`` and ``bastion password hash``: the password read from stdin.

The password never comes from the command line itself: argv is visible to other users in the
process list and lands in shell history. On a terminal it is read without echo.
"""

from __future__ import annotations

import getpass
import sys
from typing import TYPE_CHECKING

from bastion.cli._common import CommandError

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parsers", "check_password", "hash_password", "read_password"]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    password = commands.add_parser(
        "password",
        help="check a password against the policy, or hash it",
        description=(
            "Check or hash a password read from standard input (one line; on a terminal it "
            "is asked for without echo). Never pass a password as an argument."
        ),
    )
    actions = password.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="print the policy verdict with reasons; exit 0 if acceptable, 1 if refused",
        description=(
            "Check the password on stdin against bastion's default policy (NIST SP 800-63B-4: "
            "at least 15 characters, or 8 with a second factor; not on the shipped blocklist; "
            "not the user's own words; not repetitive). Exit 0 when acceptable, 1 when refused."
        ),
    )
    check.add_argument(
        "--user-input",
        action="append",
        default=[],
        metavar="WORD",
        help="the account's own words (user name, e-mail), refused in the password; repeatable",
    )
    check.add_argument(
        "--site-word",
        action="append",
        default=[],
        metavar="WORD",
        help="the site's name or brand, refused in the password; repeatable",
    )
    check.add_argument(
        "--second-factor",
        action="store_true",
        help="the account has a second factor (lowers the minimum length)",
    )
    actions.add_parser(
        "hash",
        help="print the Argon2id hash of the password on stdin",
        description=(
            "Hash the password on stdin with Argon2id (bastion's default OWASP profile) and "
            "print the PHC string, e.g. to seed an account."
        ),
    )


def read_password() -> str:
    """One password: without echo on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    line = sys.stdin.readline()
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    if not line:
        raise CommandError("no password on stdin; pipe one line, e.g. from a file", exit_code=2)
    return line


def check_password(
    password: str, *, user_inputs: list[str], site_words: list[str], second_factor: bool
) -> tuple[bool, str]:
    """The verdict on ``password``: whether it is acceptable, and the text to print."""
    from bastion.passwords import default_policy  # noqa: PLC0415 (loads the 2 MB blocklist)

    policy = default_policy(site_words=tuple(site_words))
    result = policy.check(password, user_inputs=user_inputs, has_second_factor=second_factor)
    if result.ok:
        return True, "ok: the password meets the policy"
    lines = ["refused:"]
    lines.extend(f"  - {reason.code}: {reason.message}" for reason in result.reasons)
    return False, "\n".join(lines)


def hash_password(password: str) -> str:
    """The Argon2id PHC string of ``password``."""
    from bastion.passwords import PasswordHasher  # noqa: PLC0415 (imports argon2 only here)

    return PasswordHasher().hash(password)
