"""Key rotation of stored ciphertexts: ``rotate_table`` and ``bastion crypto rotate``, on a real
SQLite file and a real PostgreSQL server.

Rows are written under key 1, then rotated to key 2 in batches; every row is then read with a
ring that no longer holds key 1. Progress is checked batch by batch, a dry run writes nothing,
an unreadable row is counted and left alone, and a row the application rewrites during the
walk is not overwritten.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from bastion.cli import main
from bastion.core.crypto import decode_text, key_id_of
from bastion.crypto import EncryptionService
from bastion.crypto.rotation import RotationReport, encrypted_tables, rotate_table
from bastion.testing.postgres_server import INSTALL_HINT, PostgresServer, find_initdb
from crypto_models import NEW_ONLY, ORIGINAL, ROTATED, Base, Customer, Visit

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Engine

    from bastion.core.crypto import RowKey

ROWS = 25
TABLE: sa.Table = Customer.__table__  # type: ignore[assignment]


def require_postgres() -> None:
    if find_initdb() is not None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{INSTALL_HINT} (CI=true: a missing service fails the run)")
    pytest.skip(INSTALL_HINT)


@pytest.fixture(scope="module")
def postgres() -> Iterator[tuple[Engine, str]]:
    require_postgres()
    with PostgresServer() as server:
        engine = sa.create_engine(server.sqlalchemy_url)
        yield engine, server.sqlalchemy_url
        engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Engine, str]:
    if request.param == "postgresql":
        found: tuple[Engine, str] = request.getfixturevalue("postgres")
        return found
    url = f"sqlite:///{tmp_path_factory.mktemp('crypto-rotate') / 'app.sqlite3'}"
    return sa.create_engine(url), url


@pytest.fixture
def db(database: tuple[Engine, str]) -> Engine:
    engine = database[0]
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    crypto = EncryptionService(ORIGINAL)
    rows = [
        {
            "id": pk,
            "name": f"c{pk}",
            "phone": None
            if pk % 5 == 0
            else crypto.encrypt_field(f"555-{pk:04}", **at(pk, "phone")),
            "address": crypto.encrypt_field(f"{pk} Main St", **at(pk, "address")),
        }
        for pk in range(1, ROWS + 1)
    ]
    with engine.begin() as conn:
        conn.execute(TABLE.insert(), rows)
    return engine


def at(pk: RowKey, column: str) -> dict[str, Any]:
    return {"table": "customers", "row": pk, "column": column}


def stored(db: Engine) -> list[sa.Row[Any]]:
    with db.connect() as conn:
        return list(conn.execute(sa.select(TABLE).order_by(TABLE.c.id)).all())


def key_ids(db: Engine, column: str) -> list[int | None]:
    return [
        None if getattr(r, column) is None else key_id_of(decode_text(getattr(r, column)))
        for r in stored(db)
    ]


def test_encrypted_tables_lists_the_encrypted_columns() -> None:
    assert encrypted_tables(Base.metadata) == {
        "customers": ("phone", "address"),
        "visits": ("note",),
    }


def test_a_composite_key_is_walked_in_row_value_order(db: Engine) -> None:
    visits: sa.Table = Visit.__table__  # type: ignore[assignment]
    old = EncryptionService(ORIGINAL)
    keys = [("east", 2), ("east", 10), ("north", 1), ("west", 1), ("west", 3)]
    with db.begin() as conn:
        conn.execute(
            visits.insert(),
            [
                {
                    "clinic": clinic,
                    "number": number,
                    "note": old.encrypt_field(
                        f"{clinic}-{number}", table="visits", row=(clinic, number), column="note"
                    ),
                }
                for clinic, number in keys
            ],
        )
    seen: list[RotationReport] = []
    report = rotate_table(
        db, visits, EncryptionService(ROTATED), batch_size=2, progress=seen.append
    )
    assert [r.scanned for r in seen] == [2, 4, 5]
    assert (report.rewritten, report.failed) == (5, 0)
    reader = EncryptionService(NEW_ONLY)
    with db.connect() as conn:
        rows = conn.execute(sa.select(visits).order_by(visits.c.clinic, visits.c.number)).all()
    assert [(r.clinic, r.number) for r in rows] == keys
    for row in rows:
        key = (row.clinic, row.number)
        assert reader.decrypt_field(row.note, table="visits", row=key, column="note") == (
            f"{row.clinic}-{row.number}"
        )


def test_batches_move_every_row_to_the_current_key(db: Engine) -> None:
    seen: list[RotationReport] = []
    report = rotate_table(
        db, TABLE, EncryptionService(ROTATED), batch_size=10, progress=seen.append
    )
    assert [r.scanned for r in seen] == [10, 20, 25]
    assert [r.rewritten for r in seen] == [10, 20, 25]
    assert report == RotationReport(table="customers", total=25, scanned=25, stale=25, rewritten=25)
    assert report.done
    assert set(key_ids(db, "address")) == {2}
    assert set(key_ids(db, "phone")) == {2, None}
    reader = EncryptionService(NEW_ONLY)  # key 1 can go now
    for row in stored(db):
        assert reader.decrypt_field(row.address, **at(row.id, "address")) == f"{row.id} Main St"
        if row.phone is not None:
            assert reader.decrypt_field(row.phone, **at(row.id, "phone")) == f"555-{row.id:04}"
    again = rotate_table(db, TABLE, EncryptionService(ROTATED), batch_size=10)
    assert (again.scanned, again.stale, again.rewritten) == (25, 0, 0)


def test_a_dry_run_counts_and_writes_nothing(db: Engine) -> None:
    before = stored(db)
    report = rotate_table(db, TABLE, EncryptionService(ROTATED), batch_size=7, dry_run=True)
    assert (report.scanned, report.stale, report.rewritten, report.failed) == (25, 25, 0, 0)
    assert stored(db) == before


def test_an_unreadable_row_is_counted_and_left_alone(db: Engine) -> None:
    with db.begin() as conn:  # row 4's address moved into row 3: not authentic there
        conn.execute(
            sa.text(
                "UPDATE customers SET address = "
                "(SELECT address FROM customers WHERE id = 4) WHERE id = 3"
            )
        )
    report = rotate_table(db, TABLE, EncryptionService(ROTATED), batch_size=10)
    assert (report.rewritten, report.failed, report.stale) == (24, 1, 25)
    ids = key_ids(db, "address")
    assert ids[2] == 1  # row 3 untouched
    assert ids.count(2) == 24


class RacingService:
    """Rotates like the real service, but the application rewrites row 5 (under the current
    key) between the walk's read and its write."""

    def __init__(self, db: Engine) -> None:
        self.real = EncryptionService(ROTATED)
        self.db = db

    def needs_rotation(self, token: str) -> bool:
        return self.real.needs_rotation(token)

    def rotate_field(self, token: str, *, table: str, row: RowKey, column: str) -> str:
        if row == 5 and column == "address":
            fresh = self.real.encrypt_field("5 New Road", **at(5, "address"))
            with self.db.begin() as conn:
                conn.execute(TABLE.update().where(TABLE.c.id == 5).values(address=fresh))
        return self.real.rotate_field(token, table=table, row=row, column=column)


def test_a_row_changed_during_the_walk_is_not_overwritten(db: Engine) -> None:
    # Row 5 opens the second batch: on SQLite the walk holds no write lock yet, so the
    # application's write goes through, as it would between two statements on PostgreSQL.
    report = rotate_table(db, TABLE, RacingService(db), batch_size=4)  # type: ignore[arg-type]
    assert (report.rewritten, report.skipped) == (24, 1)
    row = stored(db)[4]
    assert (
        EncryptionService(NEW_ONLY).decrypt_field(row.address, **at(5, "address")) == "5 New Road"
    )


def test_the_cli_rotates_with_progress(
    db: Engine, database: tuple[Engine, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = database[1]
    options = ["--database", url, "--metadata", "crypto_models:Base", "--batch-size", "10"]
    code = main(["crypto", "rotate", *options, "--policy", "crypto_models:ROTATED", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.splitlines() == [
        "customers: 25/25 rows read (100%), 25 under old keys, 0 unreadable",
        "visits: 0/0 rows read (100%), 0 under old keys, 0 unreadable",
        "current key: 2; dry run, nothing written",
    ]
    assert set(key_ids(db, "address")) == {1}
    code = main(["crypto", "rotate", *options, "--policy", "crypto_models:ROTATED"])
    out, err = capsys.readouterr()
    assert code == 0
    assert err.splitlines() == [
        "customers: 10/25 rows (40%), 10 re-encrypted, 0 changed meanwhile, 0 failed",
        "customers: 20/25 rows (80%), 20 re-encrypted, 0 changed meanwhile, 0 failed",
        "customers: 25/25 rows (100%), 25 re-encrypted, 0 changed meanwhile, 0 failed",
    ]
    assert out.splitlines() == [
        "customers: 25/25 rows (100%), 25 re-encrypted, 0 changed meanwhile, 0 failed",
        "visits: 0/0 rows (100%), 0 re-encrypted, 0 changed meanwhile, 0 failed",
        "current key: 2; done",
    ]
    assert set(key_ids(db, "address")) == {2}


def test_the_cli_exits_1_when_a_row_does_not_decrypt(
    db: Engine, database: tuple[Engine, str], capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--database", database[1], "--metadata", "crypto_models:Base"]
    code = main(["crypto", "rotate", *options, "--policy", "crypto_models:NEW_ONLY"])
    out, _ = capsys.readouterr()
    assert code == 1  # key 1 is gone from this ring: no row can be read
    assert out.splitlines()[0] == (
        "customers: 25/25 rows (100%), 0 re-encrypted, 0 changed meanwhile, 25 failed"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--metadata", "crypto_models", "--policy", "crypto_models:ROTATED"], "module:attribute"),
        (
            ["--metadata", "no_such_module:Base", "--policy", "crypto_models:ROTATED"],
            "cannot import",
        ),
        (["--metadata", "crypto_models:Nope", "--policy", "crypto_models:ROTATED"], "no attribute"),
        (["--metadata", "crypto_models:Base", "--policy", "crypto_models:OLD"], "--policy must"),
        (
            ["--metadata", "crypto_models:Plain", "--policy", "crypto_models:ROTATED"],
            "no EncryptedString columns",
        ),
        (
            ["--metadata", "crypto_models:ROTATED", "--policy", "crypto_models:ROTATED"],
            "--metadata must",
        ),
        (
            [
                "--metadata",
                "crypto_models:Base",
                "--policy",
                "crypto_models:ROTATED",
                "--table",
                "x",
            ],
            "--table x: no such table",
        ),
        (
            [
                "--metadata",
                "crypto_models:Base",
                "--policy",
                "crypto_models:ROTATED",
                "--batch-size",
                "0",
            ],
            "--batch-size must be at least 1",
        ),
    ],
)
def test_cli_input_errors_exit_2(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["crypto", "rotate", "--database", "sqlite://", *options])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("bastion crypto rotate: ")
    assert message in err
    assert len(err.splitlines()) == 1
