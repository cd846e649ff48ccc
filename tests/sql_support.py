"""Databases for the query-safety tests: a SQLite file and a throwaway PostgreSQL server
(``bastion.testing.PostgresServer``: initdb in a temporary directory). Without PostgreSQL the
PostgreSQL half skips locally and fails under ``CI=true``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from bastion.testing.postgres_server import INSTALL_HINT, PostgresServer, find_initdb

if TYPE_CHECKING:
    from collections.abc import Iterator


def require_postgres() -> None:
    if find_initdb() is not None:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{INSTALL_HINT} (CI=true: a missing service fails the run)")
    pytest.skip(INSTALL_HINT)


@pytest.fixture(scope="module", name="postgres")
def postgres_fixture() -> Iterator[PostgresServer]:
    """A PostgreSQL server for one test module (import this name; the fixture is ``postgres``)."""
    require_postgres()
    with PostgresServer() as server:
        yield server
