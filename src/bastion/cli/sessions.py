"""``bastion sessions list USER --store URL`` and ``bastion sessions revoke USER --store URL``.

Session records and the per-user index are keyed by SHA-256 handles of the session IDs, not by
anything secret, so no key ring is needed to read or revoke them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bastion.cli._common import close_store, format_time, open_existing_store

if TYPE_CHECKING:
    import argparse

    from bastion.engine.sessions import SessionEngine, SessionInfo
    from bastion.stores.base import Store

__all__ = ["add_parsers", "list_sessions", "revoke_sessions"]


def _engine(store: Store) -> SessionEngine:
    """An engine that judges liveness leniently.

    Listing prunes index entries whose record the engine judges dead. The command line does
    not know the app's lifetimes, so it judges with the longest ones allowed: an entry is
    dropped only when its record is gone from the store (records leave the store a few minutes
    after their deadline), never because the app runs with longer timeouts than the defaults.
    Imported here so that ``bastion --help`` does not load the engine.
    """
    from bastion.core.cookies import MAX_AGE_LIMIT  # noqa: PLC0415 (lazy, see above)
    from bastion.core.sessions import SessionConfig  # noqa: PLC0415
    from bastion.engine.sessions import SessionEngine  # noqa: PLC0415

    lenient = SessionConfig(
        idle_timeout=MAX_AGE_LIMIT,
        absolute_lifetime=MAX_AGE_LIMIT,
        persistent_idle_timeout=MAX_AGE_LIMIT,
        persistent_absolute_lifetime=MAX_AGE_LIMIT,
    )
    return SessionEngine(store, config=lenient)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sessions = commands.add_parser(
        "sessions",
        help="list or revoke a user's sessions",
        description="The per-user session registry: list a user's sessions, or revoke them.",
    )
    actions = sessions.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="list a user's sessions",
        description=(
            "List USER's sessions, oldest first: handle (a hash of the session ID, not the "
            "ID), created, last seen (UTC), IP address and user agent. Sessions whose record "
            "is still in the store are shown, even when the app's idle timeout has passed."
        ),
    )
    revoke = actions.add_parser(
        "revoke",
        help="revoke a user's sessions (all, or one with --handle)",
        description=(
            "Delete USER's sessions from the store: the next request with any of their "
            "cookies starts logged out, and an in-flight request cannot write them back."
        ),
    )
    for parser in (listing, revoke):
        parser.add_argument("user", metavar="USER", help="the user ID the app passed to login()")
        parser.add_argument(
            "--store", required=True, metavar="URL", help="store URL: sqlite:///path, redis://..."
        )
    revoke.add_argument(
        "--handle", metavar="HANDLE", help="revoke only this session (a handle from 'list')"
    )


def _row(info: SessionInfo) -> str:
    return "  ".join(
        (
            info.handle,
            format_time(info.created_at),
            format_time(info.last_seen),
            info.ip or "-",
            info.user_agent or "-",
        )
    )


def list_sessions(user: str, store_url: str) -> str:
    """A table of ``user``'s sessions, or a line saying there are none."""

    async def run() -> list[SessionInfo]:
        store = open_existing_store(store_url)
        try:
            return await _engine(store).list_sessions(user)
        finally:
            await close_store(store)

    found = asyncio.run(run())
    if not found:
        return f"no sessions for user {user!r}"
    header = "  ".join(
        ("HANDLE".ljust(43), "CREATED".ljust(20), "LAST SEEN".ljust(20), "IP", "USER AGENT")
    )
    return "\n".join([header, *(_row(info) for info in found)])


def revoke_sessions(user: str, store_url: str, handle: str | None) -> str:
    """Revoke ``user``'s sessions (only ``handle`` when given) and say how many were live."""

    async def run() -> int:
        store = open_existing_store(store_url)
        try:
            engine = _engine(store)
            if handle is not None:
                return 1 if await engine.revoke(user, handle) else 0
            return await engine.revoke_all(user)
        finally:
            await close_store(store)

    count = asyncio.run(run())
    noun = "session" if count == 1 else "sessions"
    return f"revoked {count} {noun} of user {user!r}"
