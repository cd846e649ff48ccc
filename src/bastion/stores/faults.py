"""One classification of store faults, shared by every backend.

The key-value stores and the rate-limit stores, on SQLite and on Redis, translate what their
driver raised through the functions here, so that the same fault is the same typed error
everywhere (see the tree in :mod:`bastion.errors`): a read-only SQLite file is a
:class:`~bastion.errors.StoreReadOnly` for sessions and for rate limits alike, and both answer
503 with ``Retry-After`` (or the limit's failure policy). Only a caller's own mistake (a bad
key, TTL or value, a closed store) stays a plain :class:`~bastion.errors.StoreError`.

Messages name the store and what it was doing, never a password or a stored value.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Final

from bastion.errors import (
    StoreBusy,
    StoreConnectionError,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreIOError,
    StoreReadOnly,
    StoreTimeout,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "postgres_fault",
    "redis_py_fault",
    "redis_reply_fault",
    "socket_fault",
    "sqlite_fault",
]

_SQLITE_FAULTS: Final[dict[int, tuple[type[StoreUnavailable], str]]] = {
    sqlite3.SQLITE_BUSY: (StoreBusy, "stayed locked by another connection"),
    sqlite3.SQLITE_LOCKED: (StoreBusy, "stayed locked by another connection"),
    sqlite3.SQLITE_PROTOCOL: (StoreBusy, "stayed locked by another connection"),
    sqlite3.SQLITE_READONLY: (StoreReadOnly, "refuses writes"),
    sqlite3.SQLITE_PERM: (StoreReadOnly, "refuses writes"),
    sqlite3.SQLITE_FULL: (StoreFull, "is full"),
    sqlite3.SQLITE_IOERR: (StoreIOError, "failed with an I/O error"),
    sqlite3.SQLITE_CANTOPEN: (StoreIOError, "cannot be opened"),
    sqlite3.SQLITE_NOTADB: (StoreCorrupt, "is not a usable SQLite database"),
    sqlite3.SQLITE_CORRUPT: (StoreCorrupt, "is not a usable SQLite database"),
}

_SQLITE_ADVICE: Final[dict[type[StoreUnavailable], str]] = {
    StoreBusy: "shorten the other writer's transactions or raise the store's timeout",
    StoreReadOnly: "check that this process may write the file and its directory, and that the "
    "file system is mounted read-write",
    StoreFull: "free disk space (or raise the database's page limit)",
    StoreIOError: "check that the file's directory exists, that this process may write it, "
    "and the disk",
    StoreCorrupt: "restore it from a backup or point the store at a new file",
}


def sqlite_fault(
    exc: sqlite3.Error, where: str, action: str, timeout: float, path: Path | None = None
) -> StoreError:
    """The typed error for ``exc``, raised by SQLite while ``action`` (``"writing a key"``).

    ``where`` names the store (``"SQLite store '/var/lib/app.db'"``); ``timeout`` is its lock
    timeout, quoted in the busy message. ``path``, the database file, lets a file that cannot
    be opened be told apart: on a read-only file system, or not writable by this process, it
    is :class:`StoreReadOnly` (SQLite reports only "unable to open" for a WAL database there).
    """
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary is None and isinstance(exc, sqlite3.OperationalError):
        # Errors raised before SQLite gave a code (older drivers): read the message.
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            primary = sqlite3.SQLITE_BUSY
        elif "readonly" in text or "read-only" in text:
            primary = sqlite3.SQLITE_READONLY
        elif "unable to open" in text:
            primary = sqlite3.SQLITE_CANTOPEN
        elif "disk" in text:
            primary = sqlite3.SQLITE_FULL if "full" in text else sqlite3.SQLITE_IOERR
    fault = _SQLITE_FAULTS.get(primary) if primary is not None else None
    if fault is None:
        return StoreError(f"{where} failed while {action}: {exc}")
    kind, what = fault
    if kind is StoreIOError and path is not None and _read_only(path):
        kind, what = _SQLITE_FAULTS[sqlite3.SQLITE_READONLY]
    if kind is StoreBusy:
        what = f"{what} for more than timeout={timeout:g} s"
    return kind(f"{where} {what} while {action} ({exc}); {_SQLITE_ADVICE[kind]}")


def _read_only(path: Path) -> bool:
    """Whether ``path`` (or, when it does not exist, its directory) cannot be written."""
    target = path if path.exists() else path.parent
    try:
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return target.exists() and not os.access(target, os.W_OK)


# Redis error replies, by their first word, that mean "the server cannot serve this now".
_REDIS_FAULTS: Final[dict[str, tuple[type[StoreUnavailable], str]]] = {
    "LOADING": (StoreUnavailable, "the server is still loading its data set"),
    "MASTERDOWN": (StoreUnavailable, "the replica has lost its primary"),
    "TRYAGAIN": (StoreUnavailable, "the cluster is moving this slot"),
    "CLUSTERDOWN": (StoreUnavailable, "the cluster is not serving this slot"),
    "READONLY": (StoreReadOnly, "the server is a replica (a failover in progress?)"),
    "OOM": (StoreFull, "the server reached maxmemory"),
    "MISCONF": (StoreIOError, "the server cannot persist to its disk"),
    "BUSY": (StoreBusy, "a script is still running on the server"),
    "NOAUTH": (StoreConnectionError, "check the URL's user name and password"),
    "WRONGPASS": (StoreConnectionError, "check the URL's user name and password"),
    "NOPERM": (StoreConnectionError, "the user lacks a permission"),
}

_REACHABLE: Final = "check that the server is running and reachable from this host"


def _unavailable(
    kind: type[StoreUnavailable], where: str, operation: str, detail: str, advice: str
) -> StoreUnavailable:
    return kind(f"{where} is unavailable ({operation}): {detail}; {advice}")


def redis_reply_fault(code: str, where: str, operation: str, detail: str) -> StoreError:
    """The typed error for a Redis error reply whose first word is ``code``.

    ``where`` names the server (``"Redis at db.example:6379 db 0"``), ``detail`` the reply.
    Replies that are not a server fault (``WRONGTYPE``, a script error) are a plain
    :class:`StoreError`.
    """
    fault = _REDIS_FAULTS.get(code)
    if fault is None:
        return StoreError(f"{where} refused {operation}: {detail}")
    return _unavailable(fault[0], where, operation, detail, fault[1])


def socket_fault(exc: BaseException, where: str, operation: str, detail: str) -> StoreError | None:
    """The typed error for a network-level failure, or ``None`` when ``exc`` is not one.

    Timeouts (``TimeoutError``, ``socket.timeout``) become :class:`StoreTimeout`; every other
    ``OSError`` and ``EOFError`` (refused, reset, closed by the peer) a
    :class:`StoreConnectionError`.
    """
    if isinstance(exc, TimeoutError):
        return _unavailable(StoreTimeout, where, operation, detail, _REACHABLE)
    if isinstance(exc, OSError | EOFError):
        return _unavailable(StoreConnectionError, where, operation, detail, _REACHABLE)
    return None


def redis_py_fault(exc: BaseException, where: str, operation: str, detail: str) -> StoreError:
    """The typed error for what redis-py (sync or async) raised."""
    from redis import exceptions as redis_errors  # noqa: PLC0415 (only Redis stores need it)

    kind: type[StoreUnavailable]
    if isinstance(exc, redis_errors.TimeoutError):
        kind, advice = StoreTimeout, _REACHABLE
    elif isinstance(exc, redis_errors.BusyLoadingError):
        kind, advice = _REDIS_FAULTS["LOADING"]
    elif isinstance(exc, redis_errors.ReadOnlyError):
        kind, advice = _REDIS_FAULTS["READONLY"]
    elif isinstance(exc, redis_errors.ConnectionError):  # AuthenticationError included
        kind, advice = StoreConnectionError, _REACHABLE
    elif isinstance(exc, redis_errors.ClusterDownError | redis_errors.TryAgainError):
        kind, advice = _REDIS_FAULTS["CLUSTERDOWN"]
    elif isinstance(exc, redis_errors.OutOfMemoryError):  # redis-py drops the "OOM" word
        kind, advice = _REDIS_FAULTS["OOM"]
    elif isinstance(exc, redis_errors.NoPermissionError):
        kind, advice = _REDIS_FAULTS["NOPERM"]
    elif isinstance(exc, redis_errors.ResponseError):
        return redis_reply_fault(str(exc).split(" ", 1)[0], where, operation, detail)
    else:
        return socket_fault(exc, where, operation, detail) or StoreError(
            f"{where} failed {operation}: {detail}"
        )
    return _unavailable(kind, where, operation, detail, advice)


# PostgreSQL SQLSTATE classes and codes that mean "the server cannot serve this now".
_POSTGRES_FAULTS: Final[dict[str, tuple[type[StoreUnavailable], str]]] = {
    "57014": (StoreTimeout, "the statement ran past the store's timeout"),  # query_canceled
    "57P01": (StoreUnavailable, "the server is shutting down"),  # admin_shutdown
    "57P02": (StoreUnavailable, "the server crashed"),  # crash_shutdown
    "57P03": (StoreUnavailable, "the server is starting up or recovering"),  # cannot_connect_now
    "25006": (StoreReadOnly, "the server is a read-only standby"),  # read_only_sql_transaction
    "53100": (StoreFull, "the server's disk is full"),  # disk_full
    "53200": (StoreFull, "the server is out of memory"),  # out_of_memory
    "53300": (StoreUnavailable, "the server has too many connections"),  # too_many_connections
    "40001": (StoreBusy, "a concurrent transaction conflicted"),  # serialization_failure
    "40P01": (StoreBusy, "a deadlock was broken"),  # deadlock_detected
    "55P03": (StoreBusy, "a lock stayed taken"),  # lock_not_available
    "58030": (StoreIOError, "the server failed an I/O operation"),  # io_error
    "28P01": (StoreConnectionError, "check the URL's user name and password"),
    "28000": (StoreConnectionError, "check the URL's user name and password"),
}


def postgres_fault(exc: BaseException, where: str, operation: str) -> StoreError:
    """The typed error for what psycopg or its pool raised during ``operation``.

    Classified by SQLSTATE where the server sent one, else by kind: a pool that gave no
    connection in time is :class:`StoreTimeout`, a connection that failed or broke
    :class:`StoreConnectionError`. The message is psycopg's first line (it names neither the
    password nor a parameter's value)."""
    import psycopg  # noqa: PLC0415 (only PostgreSQL stores need it)
    from psycopg_pool import PoolTimeout  # noqa: PLC0415

    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    code = getattr(getattr(exc, "diag", None), "sqlstate", None) or getattr(exc, "sqlstate", None)
    fault = _POSTGRES_FAULTS.get(code) if isinstance(code, str) else None
    if fault is not None:
        return _unavailable(fault[0], where, operation, detail, fault[1])
    if isinstance(exc, PoolTimeout | TimeoutError):
        return _unavailable(StoreTimeout, where, operation, detail, _REACHABLE)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError | OSError):
        return _unavailable(StoreConnectionError, where, operation, detail, _REACHABLE)
    return StoreError(f"{where} refused {operation}: {detail}")
