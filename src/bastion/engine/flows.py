"""Store commands, generator flows, and the two drivers that run them.

Engine logic is written once, as generators that *yield* store commands and receive each
command's result. A flow does no I/O itself, so the same flow serves an ASGI app (driven by
:func:`drive_async` on a :class:`~bastion.stores.base.Store`) and a WSGI app (driven by
:func:`drive_sync` on a :class:`~bastion.stores.base.SyncStore`)::

    def read_twice(key: str) -> Flow[bytes | None]:
        first = yield Get(key)
        return first if first is not None else (yield Get(key + ":fallback"))

    value = await drive_async(read_twice("k"), store)       # in a coroutine
    value = drive_sync(read_twice("k"), store.sync)         # in a WSGI worker thread

A store error raised by a command is thrown into the flow at its ``yield``, so a flow may catch
it; an uncaught one propagates to the caller unchanged (``StoreUnavailable`` stays
``StoreUnavailable``). Each store command is exactly one store call, so counting yielded store
commands counts round trips. :class:`Pause` is no store call: a compare-and-set loop yields it
to back off after a lost race (``asyncio.sleep`` in the async driver, ``time.sleep`` in the
sync one).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

from bastion.errors import StoreError

if TYPE_CHECKING:
    from bastion.stores.base import Store, SyncStore

__all__ = [
    "CompareAndSet",
    "Delete",
    "Flow",
    "Get",
    "Pause",
    "Set",
    "backoff",
    "drive_async",
    "drive_sync",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Get:
    key: str


@dataclass(frozen=True, slots=True)
class Set:
    key: str
    value: bytes
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class CompareAndSet:
    key: str
    expected: bytes | None
    value: bytes
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before the next command (a backoff; no store call)."""

    seconds: float


BACKOFF_BASE: Final = 0.002
BACKOFF_CAP: Final = 0.05


def backoff(attempt: int) -> Pause:
    """The pause before attempt ``attempt`` (1, 2, ...) of a compare-and-set loop: full jitter
    under an exponential ceiling (2 ms doubling, at most 50 ms), so racing writers spread out.
    A loop that still loses after its bound raises :class:`~bastion.errors.StoreBusy` (503)."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 16))
    return Pause(ceiling * secrets.randbelow(1024) / 1024)


Command: TypeAlias = Get | Set | Delete | CompareAndSet | Pause
Flow: TypeAlias = Generator[Command, Any, _T]
"""A generator that yields commands, receives their results, and returns a ``_T``."""


def _unknown(command: object) -> StoreError:
    return StoreError(f"a flow yielded {command!r}, which is not a store command")


def drive_sync(flow: Flow[_T], store: SyncStore) -> _T:
    """Run ``flow`` to completion against a synchronous store."""
    send = flow.send
    result: Any
    try:
        command = send(None)
        while True:
            try:
                if type(command) is Get:
                    result = store.get(command.key)
                elif type(command) is CompareAndSet:
                    result = store.compare_and_set(
                        command.key, command.expected, command.value, command.ttl
                    )
                elif type(command) is Delete:
                    result = store.delete(command.key)
                elif type(command) is Set:
                    store.set(command.key, command.value, command.ttl)
                    result = None
                elif type(command) is Pause:
                    time.sleep(command.seconds)
                    result = None
                else:
                    flow.close()
                    raise _unknown(command)
            except StoreError as exc:
                command = flow.throw(exc)
                continue
            command = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def drive_async(flow: Flow[_T], store: Store) -> _T:
    """Run ``flow`` to completion against an async store."""
    send = flow.send
    result: Any
    try:
        command = send(None)
        while True:
            try:
                if type(command) is Get:
                    result = await store.get(command.key)
                elif type(command) is CompareAndSet:
                    result = await store.compare_and_set(
                        command.key, command.expected, command.value, command.ttl
                    )
                elif type(command) is Delete:
                    result = await store.delete(command.key)
                elif type(command) is Set:
                    await store.set(command.key, command.value, command.ttl)
                    result = None
                elif type(command) is Pause:
                    await asyncio.sleep(command.seconds)
                    result = None
                else:
                    flow.close()
                    raise _unknown(command)
            except StoreError as exc:
                command = flow.throw(exc)
                continue
            command = send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
