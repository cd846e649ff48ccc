"""SQLite connections shared by the SQLite store's key-value side and its rate-limit counters.

:func:`open_connection` opens a file in WAL mode within a deadline, :func:`bound_lock_wait`
bounds how long the next statements wait for another writer, :class:`ThreadConnections` keeps
one connection per calling thread (closed when the thread ends), and :func:`check_settings`
validates the settings every SQLite-backed bastion store shares. See
:mod:`bastion.stores.sqlite` for the guarantees these give.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final, Literal

from bastion.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["ThreadConnections", "bound_lock_wait", "check_settings", "open_connection"]

logger = logging.getLogger("bastion.stores.sqlite")

_SYNCHRONOUS: Final = {
    "full": "PRAGMA synchronous = FULL",
    "normal": "PRAGMA synchronous = NORMAL",
}


def check_settings(*, timeout: object, synchronous: object, purge_every: object) -> None:
    """Validate the settings of a SQLite store (its key-value side and its rate-limit counters
    share them): ``timeout`` finite seconds > 0,
    ``synchronous`` ``"full"`` or ``"normal"``, ``purge_every`` a whole number of writes >= 0.
    Raises :class:`~bastion.errors.ConfigurationError` naming the setting."""
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise ConfigurationError(
            f"timeout must be a finite number of seconds > 0, got {timeout!r}",
            setting="timeout",
        )
    if not isinstance(synchronous, str) or synchronous not in _SYNCHRONOUS:
        raise ConfigurationError(
            f"synchronous must be 'full' or 'normal', got {synchronous!r}",
            setting="synchronous",
        )
    if isinstance(purge_every, bool) or not isinstance(purge_every, int) or purge_every < 0:
        raise ConfigurationError(
            f"purge_every must be a whole number of writes >= 0, got {purge_every!r}",
            setting="purge_every",
        )


def open_connection(
    path: Path, *, deadline: float, synchronous: Literal["full", "normal"]
) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, opened within ``deadline`` (``time.monotonic()``).

    Shared by the key-value connections and the rate-limit counters' connections. Switching a
    fresh file to WAL needs an exclusive lock, and
    SQLite does not wait for it (no busy handler): connections opening a fresh file at the same
    moment get an immediate ``SQLITE_BUSY``. They retry here until the deadline, so that race is
    not reported as a lock held for the whole timeout. The connection may be used by one
    thread at a time; which thread is the caller's business (``check_same_thread=False``, so
    that :class:`ThreadConnections` can close it when its thread ends).
    """
    conn = sqlite3.connect(
        path,
        timeout=max(0.0, deadline - time.monotonic()),
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        _switch_to_wal(conn, path, deadline)
        conn.execute(_SYNCHRONOUS[synchronous])
    except BaseException:
        conn.close()
        raise
    return conn


def _switch_to_wal(conn: sqlite3.Connection, path: Path, deadline: float) -> None:
    # Both the reading and the setting of the journal mode can meet an exclusive lock that
    # SQLite does not wait for (another connection switching the mode, or the last connection
    # of another process checkpointing and removing the WAL as it closes): retry until the
    # deadline.
    while True:
        try:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", sqlite3.SQLITE_BUSY) & 0xFF
            if code not in {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}:
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.002)
            continue
        if str(mode).lower() != "wal":
            raise _no_wal(path, mode)
        return


def _no_wal(path: Path, mode: object) -> StoreError:
    return StoreError(
        f"SQLite store {str(path)!r} cannot use WAL mode (journal mode stays {mode!r}); put "
        "the file on a local file system that supports it"
    )


def bound_lock_wait(conn: sqlite3.Connection, deadline: float) -> None:
    """Let the next statements on ``conn`` wait for another writer's lock only until
    ``deadline``: an operation that queued behind others gets what is left of its timeout,
    not a fresh one, so queued writes fail within the timeout instead of one timeout each."""
    remaining = max(0, math.ceil((deadline - time.monotonic()) * 1000))
    conn.execute(f"PRAGMA busy_timeout = {remaining}")


class _Held:
    """A thread's connection, referenced only from that thread's ``threading.local``."""

    __slots__ = ("__weakref__", "conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()


def _release(conn: sqlite3.Connection, pid: int, inherited: list[sqlite3.Connection]) -> None:
    if os.getpid() != pid:
        # A forked child: SQLite forbids using or closing the parent's connection here, and
        # letting it be collected would close it. Keep it referenced.
        inherited.append(conn)
        return
    try:
        conn.close()
    except sqlite3.Error:  # pragma: no cover - close() fails only on misuse
        logger.warning("closing a finished thread's SQLite connection failed", exc_info=True)


class ThreadConnections:
    """One connection per calling thread, closed when that thread ends.

    Threads that come and go (a threaded WSGI server, anyio's worker threads) each open a
    connection on first use; when the thread ends, its ``threading.local`` entry is dropped and
    a :func:`weakref.finalize` callback closes the connection, so finished threads leave no
    descriptors behind (a plain list of every connection made kept each one open until the
    store closed). :meth:`close_all` closes the connections of threads still alive. In a
    forked child, connections opened by the parent are kept referenced and never touched.
    """

    __slots__ = ("_held", "_inherited", "_local", "_lock", "_opener")

    def __init__(self, opener: Callable[[], sqlite3.Connection]) -> None:
        self._opener = opener
        self._local = threading.local()
        self._lock = threading.Lock()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._inherited: list[sqlite3.Connection] = []

    def get(self) -> sqlite3.Connection:
        """The calling thread's connection, opened on first use (or after a fork)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and held.pid == os.getpid():
            return held.conn
        conn = self._opener()
        held = _Held(conn)
        weakref.finalize(held, _release, conn, held.pid, self._inherited)
        self._local.held = held  # a parent's entry, if any, is released (kept) by finalize
        with self._lock:
            self._held.add(held)
        return conn

    def close_current(self) -> None:
        """Close the calling thread's connection, if it has one; the next call reopens."""
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None:
            with self._lock:
                self._held.discard(held)
            del held  # the finalizer closes it (or keeps it, in a forked child)

    def close_all(self) -> None:
        """Close every live thread's connection. Threads reopen on next use."""
        with self._lock:
            held, self._held = list(self._held), weakref.WeakSet()
        self._local = threading.local()
        for entry in held:
            if entry.pid == os.getpid():
                # Closing twice is harmless; the finalizer's close later does nothing.
                _release(entry.conn, entry.pid, self._inherited)

    def __len__(self) -> int:
        """Connections of live threads in this process (for tests and diagnostics)."""
        with self._lock:
            return sum(1 for entry in self._held if entry.pid == os.getpid())
