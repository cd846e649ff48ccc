"""``bastion audit query|verify|purge --store URL``: read, check and prune the stored audit trail.

The chain's key and the identifier hashes are derived from the app's key ring, read like the
app reads it (``BASTION_SECRET_KEY`` or ``BASTION_SECRET_KEY_FILE``, with
``BASTION_PREVIOUS_SECRET_KEYS`` during a rotation; see ``Bastion.from_env``). Output is
ASCII: every value read from the store is escaped before it is printed, so a row edited to
carry terminal escapes or line breaks cannot forge output lines or drive the terminal.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from bastion.cli._common import CommandError, scheme_of
from bastion.core.audit import clean_text

if TYPE_CHECKING:
    import argparse

    from bastion.audit import AuditRecord, AuditTrail
    from bastion.core.keys import KeyRing

__all__ = ["add_parsers", "parse_moment", "purge", "query", "run", "verify"]

_RELATIVE: Final = re.compile(r"(\d{1,9})([smhd])", re.ASCII)
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_FORMATS: Final = ("lines", "ecs", "table")
_HEAD: Final = re.compile(r"(\d{1,18}):([0-9a-f]{64})", re.ASCII)


def parse_moment(text: str, *, now: float) -> float:
    """``text`` as seconds since the epoch: ISO 8601 (``2026-12-03T08:00:00Z``; a time
    without a zone is UTC) or an age before ``now`` (``90s``, ``15m``, ``2h``, ``7d``)."""
    relative = _RELATIVE.fullmatch(text.strip())
    if relative is not None:
        return now - int(relative.group(1)) * _UNITS[relative.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"{clean_text(text, 40)!r} is neither ISO 8601 (2026-12-03T08:00:00Z) nor an age "
            "(90s, 15m, 2h, 7d)",
            exit_code=2,
        ) from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _keyring() -> KeyRing:
    from bastion.config import Bastion  # noqa: PLC0415 (keeps `bastion --help` light)

    ring = Bastion.from_env().keyring
    if ring is None:
        raise CommandError(
            "no key: set BASTION_SECRET_KEY (or BASTION_SECRET_KEY_FILE) to the app's key; "
            "the chain's key and the user hashes are derived from it",
            exit_code=2,
        )
    return ring


def _open(url: str) -> AuditTrail:
    from bastion.audit import AuditTrail  # noqa: PLC0415 (lazy, as above)

    if scheme_of(url) == "sqlite":
        path = Path(url.strip()[len("sqlite:///") :])
        if not path.is_file():
            raise CommandError(f"no SQLite database at {clean_text(str(path), 200)}")
    return AuditTrail.for_tools(url, keyring=_keyring())


def _cell(value: object) -> str:
    return "-" if value is None else clean_text(str(value), 200)


def _line(record: AuditRecord, output: str) -> str:
    if output == "ecs":
        data = record.to_ecs()
    elif output == "lines":
        data = {"seq": record.seq, **record.to_dict()}
    else:
        details = " ".join(f"{key}={_cell(value)}" for key, value in record.details.items())
        when = record.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        cells = (str(record.seq), when, record.event, record.outcome, record.user)
        return "  ".join([*map(_cell, cells), _cell(record.request_id), details]).rstrip()
    # ensure_ascii escapes controls and non-ASCII; DEL is the one control JSON leaves as is.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True).replace("\x7f", "\\u007f")


def query(args: argparse.Namespace) -> str:
    """The matching events, newest first, one per line."""
    import time  # noqa: PLC0415

    now = time.time()
    trail = _open(args.store)
    try:
        found = trail.query(
            event=args.event or None,
            user=args.user,
            user_hash=args.user_hash or None,
            outcome=args.outcome or None,
            since=None if args.since is None else parse_moment(args.since, now=now),
            until=None if args.until is None else parse_moment(args.until, now=now),
            limit=args.limit,
        )
    finally:
        trail.close()
    return "\n".join(_line(record, args.format) for record in found) or "(no events)"


def _expected(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    found = _HEAD.fullmatch(text.strip())
    if found is None:
        raise CommandError(
            "--expect-head must be SEQ:MAC as verify prints it (e.g. 120:3f9a...)", exit_code=2
        )
    return int(found.group(1)), found.group(2)


def verify(url: str, expect_head: str | None = None) -> tuple[int, str]:
    """Exit code 0 and a summary when the chain holds; 1 and the first broken link if not."""
    expect = _expected(expect_head)
    trail = _open(url)
    try:
        report = trail.verify(expect=expect)
    finally:
        trail.close()
    summary = (
        f"{report.events} events in {report.segments} segments "
        f"({report.purged_segments} purged); head {report.head_seq}:{report.head_mac or '-'}"
    )
    if report.broken is None:
        return 0, f"ok: {summary}"
    return 1, f"BROKEN at {report.broken}; checked {summary}"


def purge(url: str, before: str) -> str:
    import time  # noqa: PLC0415

    moment = parse_moment(before, now=time.time())
    trail = _open(url)
    try:
        count = trail.purge(before=moment)
        trail.flush()
    finally:
        trail.close()
    return f"purged {count} sealed segments older than {_cell(before)}"


def run(args: argparse.Namespace) -> int:
    """Run ``bastion audit ACTION``; the exit status."""
    if args.action == "verify":
        code, text = verify(args.store, args.expect_head)
        print(text)
        return code
    print(query(args) if args.action == "query" else purge(args.store, args.before))
    return 0


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser(
        "audit",
        help="query, verify or purge the stored audit trail",
        description=(
            "The stored audit trail (AuditPolicy(store=...)). Needs the app's key in "
            "BASTION_SECRET_KEY: the chain is MACed and users are hashed with keys derived "
            "from it."
        ),
    )
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    searching = actions.add_parser(
        "query",
        help="print stored events, newest first",
        description="Print stored events matching every filter given, newest first.",
    )
    checking = actions.add_parser(
        "verify",
        help="check the hash chain; exit 1 at the first broken link",
        description=(
            "Recompute every MAC of the chain, seals and purge marks; print a summary and the "
            "head (keep it elsewhere to detect a cut tail later), or the first broken link "
            "(exit 1)."
        ),
    )
    pruning = actions.add_parser(
        "purge",
        help="delete sealed segments older than --before",
        description="Delete whole sealed segments older than --before; verify keeps passing.",
    )
    for parser in (searching, checking, pruning):
        parser.add_argument(
            "--store",
            required=True,
            metavar="URL",
            help="sqlite:///path, postgresql://..., redis://...",
        )
    searching.add_argument("--event", action="append", metavar="NAME", help="repeatable")
    searching.add_argument("--user", metavar="ID", help="a user id (hashed with the app's key)")
    searching.add_argument("--user-hash", action="append", metavar="DIGEST", help="repeatable")
    searching.add_argument("--outcome", action="append", choices=("success", "failure", "blocked"))
    searching.add_argument("--since", metavar="WHEN", help="ISO 8601 or an age: 90s, 2h, 7d")
    searching.add_argument("--until", metavar="WHEN", help="as --since; exclusive")
    searching.add_argument("--limit", type=int, default=100)
    searching.add_argument("--format", choices=_FORMATS, default="lines")
    checking.add_argument(
        "--expect-head",
        metavar="SEQ:MAC",
        help="a head printed by an earlier verify: fail if the trail no longer reaches it",
    )
    pruning.add_argument("--before", required=True, metavar="WHEN", help="ISO 8601 or an age")
