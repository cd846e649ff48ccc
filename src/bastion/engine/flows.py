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
commands counts round trips; the one exception is :class:`CompareAndSetRead` on a store
without ``compare_and_set_read``, which the drivers run as a compare-and-set then gets.
:class:`Pause` is no store call: a compare-and-set loop yields it to back off after a lost race
(``asyncio.sleep`` in the async driver, ``time.sleep`` in the sync one).

:class:`GetMany` reads several keys in one store call on a store with the
:class:`~bastion.stores.base.SupportsGetMany` capability (the three bastion stores: one ``MGET``
on Redis, whose keys must then share a hash tag for Redis Cluster); on any other store the
drivers read the keys one ``get`` at a time, so there it costs one round trip per key.

Every read-modify-write of one key goes through :func:`update`, the one bounded
compare-and-set loop: the contention policy (how many attempts, how long to back off between
them, what happens when they run out) lives there and nowhere else.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeAlias, TypeVar

from bastion.errors import StoreBusy, StoreError

if TYPE_CHECKING:
    from bastion.stores.base import Store, SyncStore

__all__ = [
    "CAS_ATTEMPTS",
    "UNREAD",
    "CompareAndSet",
    "CompareAndSetRead",
    "Delete",
    "Done",
    "Flow",
    "Follow",
    "Get",
    "GetMany",
    "Pause",
    "Set",
    "Write",
    "backoff",
    "drive",
    "drive_async",
    "drive_sync",
    "update",
]

_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


@dataclass(frozen=True, slots=True)
class Get:
    key: str


@dataclass(frozen=True, slots=True)
class GetMany:
    """Read ``keys`` together; the result is a list with the value (or ``None``) of each."""

    keys: tuple[str, ...]


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
class CompareAndSetRead:
    """Compare-and-set ``key`` and read ``read`` in one store call where the store can
    (:class:`~bastion.stores.base.SupportsCompareAndSetRead`: one Redis script), else as a
    compare-and-set then a get. The result is ``(won, current, read_value)``: ``current`` is
    the live value of ``key`` afterwards (``value`` when it won), so a loop that lost need not
    read it again."""

    key: str
    expected: bytes | None
    value: bytes
    ttl: float | None
    read: str


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


Command: TypeAlias = Get | GetMany | Set | Delete | CompareAndSet | CompareAndSetRead | Pause
Flow: TypeAlias = Generator[Command, Any, _T]
"""A generator that yields commands, receives their results, and returns a ``_T``."""

CAS_ATTEMPTS: Final = 32
"""Compare-and-set attempts :func:`update` makes before it gives up with ``StoreBusy``: with
:func:`backoff` between them, about 0.7 s of waiting in all on average, far longer than any
honest burst of writers to one key keeps a record busy."""

UNREAD: Final[Any] = object()
"""The default of :func:`update`'s ``current``: the value has not been read yet."""


@dataclass(frozen=True, slots=True)
class Write(Generic[_T_co]):
    """An :func:`update` step: compare-and-set ``value`` (``ttl`` overrides the update's), and
    return ``result`` when it lands."""

    value: bytes
    result: _T_co
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Done(Generic[_T_co]):
    """An :func:`update` step: nothing to write; the update returns ``result``."""

    result: _T_co


@dataclass(frozen=True, slots=True)
class Follow:
    """An :func:`update` step: the value read points elsewhere (a renewal tombstone); read and
    update ``key`` instead, without backing off (no race was lost). It uses up an attempt, so a
    chain of pointers stays bounded."""

    key: str


Step: TypeAlias = "Write[_T] | Done[_T] | Follow"
Change: TypeAlias = Callable[[str, "bytes | None"], "Step[_T] | Flow[Step[_T]]"]
"""What :func:`update` applies: ``change(key, current)`` gives the next step, directly or as a
flow (when deciding needs store commands of its own)."""


def update(
    key: str,
    change: Change[_T],
    *,
    ttl: float | None = None,
    attempts: int = CAS_ATTEMPTS,
    current: bytes | None = UNREAD,
    what: str = "a stored value",
) -> Flow[_T]:
    """Read ``key``, let ``change`` decide, compare-and-set what it wrote; on a lost race back
    off (:func:`backoff`) and start over, at most ``attempts`` times.

    ``current`` is the value the caller already holds for ``key`` (read earlier in the same
    flow): the first attempt uses it instead of reading again. When every attempt loses, the
    update raises :class:`~bastion.errors.StoreBusy` (a ``StoreUnavailable``: the adapters
    answer 503 with ``Retry-After``), naming ``what`` it was updating; a flow that holds
    something to undo catches it, undoes, and re-raises.
    """
    lost = False
    for attempt in range(attempts):
        if lost:
            yield backoff(attempt)
        if attempt or current is UNREAD:
            current = yield Get(key)
        step = change(key, current)
        if isinstance(step, Generator):
            step = yield from step
        if type(step) is Done:
            return step.result
        if type(step) is Follow:
            key, lost = step.key, False  # no race was lost: read the successor at once
            continue
        if type(step) is not Write:
            raise StoreError(f"an update step must be Write, Done or Follow, got {step!r}")
        written = ttl if step.ttl is None else step.ttl
        if (yield CompareAndSet(key, current, step.value, written)):
            return step.result
        lost = True
    raise StoreBusy(
        f"{what} changed during each of {attempts} compare-and-set attempts, backing off "
        "between them; too many requests are writing it at once, try again"
    )


def _unknown(command: object) -> StoreError:
    return StoreError(f"a flow yielded {command!r}, which is not a store command")


def _cas_read_sync(
    store: SyncStore, c: CompareAndSetRead
) -> tuple[bool, bytes | None, bytes | None]:
    native = getattr(store, "compare_and_set_read", None)
    if native is not None:
        return native(c.key, c.expected, c.value, c.ttl, c.read)  # type: ignore[no-any-return]
    won = store.compare_and_set(c.key, c.expected, c.value, c.ttl)
    current = c.value if won else store.get(c.key)
    return won, current, store.get(c.read)


async def _cas_read_async(
    store: Store, c: CompareAndSetRead
) -> tuple[bool, bytes | None, bytes | None]:
    native = getattr(store, "compare_and_set_read", None)
    if native is not None:
        return await native(c.key, c.expected, c.value, c.ttl, c.read)  # type: ignore[no-any-return]
    won = await store.compare_and_set(c.key, c.expected, c.value, c.ttl)
    current = c.value if won else await store.get(c.key)
    return won, current, await store.get(c.read)


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
                elif type(command) is GetMany:
                    many = getattr(store, "get_many", None)
                    keys = command.keys
                    result = [store.get(k) for k in keys] if many is None else many(keys)
                elif type(command) is CompareAndSetRead:
                    result = _cas_read_sync(store, command)
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


async def drive(flow: Flow[_T], store: Store, inline: SyncStore | None) -> _T:
    """Run ``flow`` from async code: on ``inline`` (the store's nonblocking sync side, from
    :func:`~bastion.stores.base.inline_side`) when there is one, else awaited on ``store``."""
    if inline is not None:
        return drive_sync(flow, inline)
    return await drive_async(flow, store)


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
                elif type(command) is GetMany:
                    many = getattr(store, "get_many", None)
                    keys = command.keys
                    result = (
                        [await store.get(k) for k in keys] if many is None else await many(keys)
                    )
                elif type(command) is CompareAndSetRead:
                    result = await _cas_read_async(store, command)
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
