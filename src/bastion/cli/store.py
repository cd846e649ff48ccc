"""``bastion store ping URL``, ``bastion store gc URL`` and ``bastion store migrate URL``."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from bastion.cli._common import close_store, open_existing_store, scheme_of
from bastion.stores.base import SupportsPurge
from bastion.stores.url import redact_url

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parsers", "gc", "migrate", "ping"]

_PING_KEY = "bastion:cli:ping"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = commands.add_parser(
        "store",
        help="check or clean a store",
        description="Check that a store answers, or purge its expired entries.",
    )
    actions = store.add_subparsers(dest="action", required=True, metavar="ACTION")
    ping_parser = actions.add_parser(
        "ping",
        help="one round trip to the store; prints ok and the latency",
        description=(
            "Read one key from the store (one round trip) and print 'ok' with the latency. "
            "Exits 1 with a one-line error when the store cannot be reached."
        ),
    )
    ping_parser.add_argument("url", metavar="URL", help="store URL: sqlite:///path, redis://...")
    gc_parser = actions.add_parser(
        "gc",
        help="purge expired entries where the store keeps them",
        description=(
            "Delete expired rows from a SQLite store and say how many went. Redis expires "
            "keys itself and memory:// lives in one process, so for those there is nothing "
            "to do from the command line."
        ),
    )
    gc_parser.add_argument("url", metavar="URL", help="store URL: sqlite:///path, redis://...")
    migrate_parser = actions.add_parser(
        "migrate",
        help="create or upgrade a PostgreSQL store's schema now",
        description=(
            "Create or upgrade bastion's tables and functions in a PostgreSQL database (the "
            "store also does it on first use, under an advisory lock). Run it ahead of a "
            "deployment whose application role may not create tables. Other stores need "
            "nothing: SQLite files migrate themselves, Redis has no schema."
        ),
    )
    migrate_parser.add_argument("url", metavar="URL", help="store URL: postgresql://...")


def ping(url: str) -> str:
    """One ``get`` against the store at ``url``: ``ok (<latency> ms)``."""

    async def run() -> float:
        store = open_existing_store(url)
        try:
            started = time.perf_counter()
            await store.get(_PING_KEY)
            return time.perf_counter() - started
        finally:
            await close_store(store)

    elapsed = asyncio.run(run())
    return f"ok {redact_url(url)} ({elapsed * 1000:.2f} ms)"


def gc(url: str) -> str:
    """Purge expired entries of the store at ``url`` and say what was done."""
    scheme = scheme_of(url)
    if scheme in {"redis", "rediss", "redis+cluster", "redis+sentinel"}:
        # Still open it, so that a malformed URL is reported as such.
        asyncio.run(_open_and_close(url))
        return (
            f"nothing to do: Redis expires keys itself (every key bastion writes with a "
            f"lifetime has a TTL) at {redact_url(url)}"
        )
    if scheme == "memory":
        asyncio.run(_open_and_close(url))
        return "nothing to do: a memory:// store lives inside one process and purges itself"

    async def run() -> int:
        store = open_existing_store(url)
        try:
            if not isinstance(store, SupportsPurge):
                return -1
            return await store.purge_expired()
        finally:
            await close_store(store)

    count = asyncio.run(run())
    if count < 0:
        return f"nothing to do: the store at {redact_url(url)} has no purge operation"
    noun = "entry" if count == 1 else "entries"
    return f"purged {count} expired {noun} from {redact_url(url)}"


def migrate(url: str) -> str:
    """Create or upgrade the schema of the PostgreSQL store at ``url``."""
    if scheme_of(url) not in {"postgresql", "postgres"}:
        asyncio.run(_open_and_close(url))
        return f"nothing to do: only PostgreSQL stores have a schema to migrate ({redact_url(url)})"
    from bastion.stores.postgres import PostgresStore  # noqa: PLC0415 (the postgres extra)

    store = open_existing_store(url)
    try:
        if not isinstance(store, PostgresStore):  # pragma: no cover - the scheme says it is
            return f"nothing to do at {redact_url(url)}"
        version = store.migrate()
    finally:
        asyncio.run(close_store(store))
    return f"schema version {version} at {redact_url(url)}"


async def _open_and_close(url: str) -> None:
    await close_store(open_existing_store(url))
