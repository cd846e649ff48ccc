"""Batched re-encryption of ``EncryptedString`` columns under the current data key.

::

    report = rotate_table(engine, users_table, crypto, batch_size=500, progress=print)

The table is walked in primary-key order, ``batch_size`` rows per transaction (keyset
pagination, so a batch never re-reads rows and a long table never holds one long lock). Only
ciphertexts whose header names another key or algorithm are decrypted and re-encrypted; the
header is read without a key, so a dry run (``dry_run=True``) counts what is left to do without
decrypting anything. Each row is written with a compare-and-set (``WHERE column = <old
ciphertext>``): a row the application changed meanwhile was written under the current key
already and is counted as ``skipped``, never overwritten with older data.

A ciphertext that does not decrypt (moved, altered, or its key already dropped from the ring)
is counted as ``failed`` (and audited by the service), and the walk goes on: one bad row does
not stop the rotation of a table, and the report says how many need a look.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bastion.core.crypto.errors import DecryptionFailed
from bastion.crypto.service import Ciphertext
from bastion.crypto.sqlalchemy import EncryptedString

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.crypto.service import EncryptionService

__all__ = ["RotationReport", "encrypted_tables", "rotate_table"]


@dataclass(frozen=True, slots=True)
class RotationReport:
    """Where a rotation of one table stands (also handed to ``progress`` after each batch).

    ``scanned`` rows of ``total`` were read; ``stale`` of them held a ciphertext under an old
    key; ``rewritten`` were re-encrypted, ``skipped`` had changed meanwhile, ``failed`` did
    not decrypt. In a dry run nothing is rewritten and ``stale`` is what is left to do.
    """

    table: str
    total: int
    scanned: int = 0
    stale: int = 0
    rewritten: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def done(self) -> bool:
        return self.scanned >= self.total


def encrypted_tables(metadata: sa.MetaData) -> dict[str, tuple[str, ...]]:
    """The tables of ``metadata`` with ``EncryptedString`` columns, and those columns."""
    found: dict[str, tuple[str, ...]] = {}
    for table in metadata.sorted_tables:
        columns = tuple(c.name for c in table.columns if isinstance(c.type, EncryptedString))
        if columns:
            found[table.name] = columns
    return found


def _row_key(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else tuple(values)


def rotate_table(
    engine: sa.Engine,
    table: sa.Table,
    crypto: EncryptionService,
    *,
    columns: Sequence[str] | None = None,
    batch_size: int = 500,
    dry_run: bool = False,
    progress: Callable[[RotationReport], None] | None = None,
) -> RotationReport:
    """Re-encrypt the stale ciphertexts of ``table`` (see the module docstring)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    names = (
        tuple(columns)
        if columns is not None
        else tuple(c.name for c in table.columns if isinstance(c.type, EncryptedString))
    )
    targets = [table.c[name] for name in names]
    primary = tuple(table.primary_key.columns)
    if not primary:
        raise ValueError(f"table {table.name} has no primary key: ciphertexts are bound to it")
    with engine.connect() as conn:
        total = conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0
    report = RotationReport(table=table.name, total=total)
    last: tuple[Any, ...] | None = None
    key_expr = primary[0] if len(primary) == 1 else sa.tuple_(*primary)
    while True:
        query = sa.select(*primary, *targets).order_by(*primary).limit(batch_size)
        if last is not None:
            query = query.where(key_expr > (last[0] if len(primary) == 1 else sa.tuple_(*last)))
        with engine.begin() as conn:
            rows = conn.execute(query).all()
            for row in rows:
                report = _rotate_row(
                    conn,
                    table=table,
                    crypto=crypto,
                    primary=primary,
                    names=names,
                    row=row,
                    report=report,
                    dry_run=dry_run,
                )
        if not rows:
            break
        last = tuple(rows[-1][: len(primary)])
        report = replace(report, scanned=report.scanned + len(rows))
        if progress is not None:
            progress(report)
        if len(rows) < batch_size:
            break
    return report


def _rotate_row(
    conn: sa.Connection,
    *,
    table: sa.Table,
    crypto: EncryptionService,
    primary: tuple[sa.Column[Any], ...],
    names: tuple[str, ...],
    row: sa.Row[Any],
    report: RotationReport,
    dry_run: bool,
) -> RotationReport:
    keys = tuple(row[: len(primary)])
    row_key = _row_key(keys)
    new: dict[str, str] = {}
    old: dict[str, str] = {}
    try:
        for name, token in zip(names, row[len(primary) :], strict=True):
            if token is None or not crypto.needs_rotation(token):
                continue
            old[name] = token
            if not dry_run:
                new[name] = crypto.rotate_field(token, table=table.name, row=row_key, column=name)
    except DecryptionFailed:
        return replace(report, stale=report.stale + bool(old), failed=report.failed + 1)
    if not old:
        return report
    report = replace(report, stale=report.stale + 1)
    if dry_run:
        return report
    where = [col == value for col, value in zip(primary, keys, strict=True)]
    where += [table.c[name] == Ciphertext(value) for name, value in old.items()]
    result = conn.execute(table.update().where(*where).values(new))
    if result.rowcount == 1:
        return replace(report, rewritten=report.rewritten + 1)
    return replace(report, skipped=report.skipped + 1)
