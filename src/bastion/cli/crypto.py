"""``bastion crypto rotate``: re-encrypt ``EncryptedString`` columns under the current key.

::

    bastion crypto rotate --database postgresql://app@db/app \\
        --metadata myapp.models:Base --policy myapp.security:crypto_policy

``--metadata`` names the app's models (a declarative base, a ``MetaData`` or a ``Table``), which
say which columns are encrypted; ``--policy`` the ``CryptoPolicy`` whose current key the rows
move to (or an ``EncryptionService``, an object with a ``crypto`` attribute such as a
``Bastion``, or a function returning one of these); the old keys must still be in its ring.
Tables are walked in batches of ``--batch-size`` rows, one transaction each, with a progress
line per batch on stderr and one summary line per table on stdout. ``--dry-run`` counts the
rows still under old keys without writing (nor decrypting) anything. Rows the application
rewrites meanwhile are left as it wrote them. The exit status is 1 when a ciphertext did not
decrypt (each is audited and counted), so a script can stop before the old key is dropped.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.cli._common import CommandError

if TYPE_CHECKING:
    import argparse

    from bastion.crypto.rotation import RotationReport
    from bastion.crypto.service import EncryptionService

__all__ = ["add_parsers", "rotate"]


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    crypto = commands.add_parser(
        "crypto",
        help="field encryption: re-encrypt columns under the current key",
        description="Field encryption (bastion.crypto) administration.",
    )
    actions = crypto.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate_parser = actions.add_parser(
        "rotate",
        help="re-encrypt encrypted columns under the current data key, in batches",
        description=(__doc__ or "").split("\n\n")[-1].replace("``", "").replace("\n", " "),
    )
    rotate_parser.add_argument("--database", required=True, help="SQLAlchemy database URL")
    rotate_parser.add_argument(
        "--metadata", required=True, help="module:attribute of the models (Base, MetaData, Table)"
    )
    rotate_parser.add_argument(
        "--policy", required=True, help="module:attribute of the CryptoPolicy (new key first)"
    )
    rotate_parser.add_argument(
        "--table", action="append", default=None, help="only this table (repeatable)"
    )
    rotate_parser.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    rotate_parser.add_argument(
        "--dry-run", action="store_true", help="count the rows under old keys; write nothing"
    )
    rotate_parser.add_argument(
        "--app-dir", default=".", help="directory to import the modules from (default: .)"
    )


def _load(reference: str, option: str, app_dir: str) -> Any:
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"{option} must read module:attribute, got {reference!r}", exit_code=2)
    directory = str(Path(app_dir).resolve())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        value: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"{option}: cannot import {module_name}: {error}", exit_code=2) from None
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise CommandError(
                f"{option}: {module_name} has no attribute {attribute}", exit_code=2
            ) from None
    return value


def _service(value: object) -> EncryptionService:
    from bastion.crypto.policy import CryptoPolicy  # noqa: PLC0415 (keeps `bastion --help` light)
    from bastion.crypto.service import EncryptionService  # noqa: PLC0415

    for _ in range(3):
        if isinstance(value, EncryptionService):
            return value
        if isinstance(value, CryptoPolicy):
            return EncryptionService(value)
        if getattr(value, "crypto", None) is not None:
            value = value.crypto  # type: ignore[attr-defined]
        elif callable(value):
            value = value()
    raise CommandError(
        f"--policy must name a CryptoPolicy, an EncryptionService, an object with .crypto or a "
        f"function returning one; got {type(value).__name__}",
        exit_code=2,
    )


def _tables(value: object, only: list[str] | None) -> list[Any]:
    import sqlalchemy as sa  # noqa: PLC0415 (the sqlalchemy extra)

    metadata = getattr(value, "metadata", value)
    table = getattr(value, "__table__", value)  # a mapped class: its own table
    if isinstance(table, sa.Table):
        tables = [table]
    elif isinstance(metadata, sa.MetaData):
        tables = list(metadata.sorted_tables)
    else:
        raise CommandError(
            "--metadata must name a declarative base, a MetaData or a Table", exit_code=2
        )
    from bastion.crypto.sqlalchemy import EncryptedString  # noqa: PLC0415

    tables = [t for t in tables if any(isinstance(c.type, EncryptedString) for c in t.columns)]
    if only:
        unknown = sorted(set(only) - {t.name for t in tables})
        if unknown:
            raise CommandError(
                f"--table {', '.join(unknown)}: no such table with encrypted columns", exit_code=2
            )
        tables = [t for t in tables if t.name in only]
    if not tables:
        raise CommandError("the models have no EncryptedString columns", exit_code=2)
    return tables


def _line(report: RotationReport, *, dry_run: bool) -> str:
    share = 100 if report.total == 0 else report.scanned * 100 // report.total
    if dry_run:
        return (
            f"{report.table}: {report.scanned}/{report.total} rows read ({share}%), "
            f"{report.stale} under old keys, {report.failed} unreadable"
        )
    return (
        f"{report.table}: {report.scanned}/{report.total} rows ({share}%), "
        f"{report.rewritten} re-encrypted, {report.skipped} changed meanwhile, "
        f"{report.failed} failed"
    )


def rotate(args: argparse.Namespace) -> int:
    """Run ``bastion crypto rotate``; the exit status."""
    if args.batch_size < 1:
        raise CommandError("--batch-size must be at least 1", exit_code=2)
    import sqlalchemy as sa  # noqa: PLC0415 (the sqlalchemy extra)

    from bastion.crypto.rotation import rotate_table  # noqa: PLC0415

    crypto = _service(_load(args.policy, "--policy", args.app_dir))
    tables = _tables(_load(args.metadata, "--metadata", args.app_dir), args.table)
    try:
        engine = sa.create_engine(args.database)
    except (sa.exc.ArgumentError, ImportError) as error:
        raise CommandError(f"--database: {error}", exit_code=2) from None
    failed = 0
    try:
        for table in tables:
            report = rotate_table(
                engine,
                table,
                crypto,
                batch_size=args.batch_size,
                dry_run=args.dry_run,
                progress=lambda r: print(_line(r, dry_run=args.dry_run), file=sys.stderr),
            )
            print(_line(report, dry_run=args.dry_run))
            failed += report.failed
    except sa.exc.SQLAlchemyError as error:
        raise CommandError(f"database error: {type(error).__name__}: {error.args[0]}") from None
    finally:
        engine.dispose()
    key = crypto.current_key_id
    print(f"current key: {key}; " + ("dry run, nothing written" if args.dry_run else "done"))
    return 1 if failed else 0
