"""Shared pieces of the command line: the one-line error, store opening, time formatting."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bastion.errors import StoreUnavailable
from bastion.stores import open_store
from bastion.stores.url import redact_url

if TYPE_CHECKING:
    from bastion.stores.base import Store

__all__ = ["CommandError", "close_store", "format_time", "open_existing_store", "scheme_of"]


class CommandError(Exception):
    """A command failed in a way its user can fix; ``main`` prints the message on one line.

    ``exit_code`` is 1 for a failed check or an unreachable service, 2 for bad input.
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def scheme_of(url: str) -> str:
    try:
        return urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return ""


def open_existing_store(url: str) -> Store:
    """``open_store(url)``, refusing a SQLite path that does not exist yet.

    Opening a SQLite store creates its file; an administration command pointed at a mistyped
    path would otherwise report an empty, healthy store.
    """
    store = open_store(url)
    path = getattr(store, "path", None)
    if scheme_of(url) == "sqlite" and isinstance(path, Path) and not path.is_file():
        raise StoreUnavailable(
            f"no SQLite database at {path}; check the path in {redact_url(url)} "
            "(sqlite:///relative.db or sqlite:////absolute.db)"
        )
    return store


async def close_store(store: Store) -> None:
    """Close ``store``, ignoring failures of the close itself (the command's outcome stands)."""
    with contextlib.suppress(Exception):  # a failing close must not hide the result
        await store.aclose()


def format_time(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as ``YYYY-MM-DD HH:MM:SSZ`` in UTC."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")
