"""The synchronous side of the Redis store (``RedisStore.sync``): see :class:`RedisSyncStore`."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Final, TypeVar

from redis import exceptions as redis_errors

from bastion.errors import StoreError
from bastion.stores._redis_scripts import (
    CAS_READ_SCRIPT,
    CAS_SCRIPT,
    CAS_SCRIPT_BYTES,
    CAS_SHA,
    CAS_SHA_BYTES,
    LUA_SCRIPTS,
    LUA_SHAS,
    cas_read_reply,
    script_command,
    ttl_to_milliseconds,
)
from bastion.stores._resp import ReplyFailure, checked, pack, resp_fault
from bastion.stores.base import check_value
from bastion.stores.faults import redis_py_fault

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import redis as redis_sync

    from bastion.core.ratelimit import Strategy
    from bastion.stores._resp import SyncTransport
    from bastion.stores.redis import RedisStore

__all__ = ["RedisSyncStore", "mget_reply", "translate_resp"]

_T = TypeVar("_T")


def translate_resp(store: RedisStore, operation: str, exc: Exception) -> StoreError:
    """The typed error for what the RESP transport raised during ``operation`` on ``store``."""
    return resp_fault(exc, f"Redis at {store._where}", operation, store._detail(exc))


def mget_reply(values: Any, count: int) -> list[bytes | None]:
    """Check an ``MGET`` reply: ``count`` items, each bytes or ``None``."""
    if (
        not isinstance(values, list)
        or len(values) != count
        or not all(value is None or isinstance(value, bytes) for value in values)
    ):
        raise StoreError(f"Redis returned a malformed MGET reply; expected {count} bulk strings")
    return values


class RedisSyncStore:
    """The synchronous side of a :class:`RedisStore` (``store.sync``).

    Its blocking ``redis.Redis`` client is built from the same URL and options on first use
    (only for stores made by :meth:`RedisStore.from_url`, or given ``sync_client=``), shared by
    the threads of a process (its pool is thread-safe), and rebuilt in a forked child, which
    must never reuse the parent's sockets. Same key layout, same CAS script, same error mapping.
    Danger: every call is a network round trip; do not call it from an event loop thread.
    """

    __slots__ = ("_client", "_factory", "_lock", "_pid", "_resp", "_store")

    def __init__(
        self,
        store: RedisStore,
        factory: Callable[[], redis_sync.Redis] | None,
        resp: SyncTransport | None = None,
    ) -> None:
        self._store = store
        self._factory = factory
        self._resp = resp
        self._lock = threading.Lock()
        self._client: redis_sync.Redis | None = None
        self._pid = 0

    @property
    def local(self) -> bool:
        return False

    nonblocking: Final = False
    """Every call is a network round trip."""

    def _connection(self) -> redis_sync.Redis:
        pid = os.getpid()
        client = self._client
        if client is not None and self._pid == pid:
            return client
        with self._lock:
            if self._factory is None:
                raise StoreError(
                    "this RedisStore has no synchronous side: build it with "
                    "RedisStore.from_url(...) or pass sync_client= to RedisStore(...)"
                )
            if self._client is None or self._pid != pid:
                # After a fork the parent's client is dropped unclosed: closing it would
                # shut sockets the parent still uses.
                self._client = self._factory()
                self._pid = pid
            return self._client

    def _run(self, operation: str, command: Callable[[redis_sync.Redis], _T]) -> _T:
        store = self._store
        try:
            return command(self._connection())
        except (redis_errors.RedisError, OSError) as exc:
            raise redis_py_fault(
                exc, f"Redis at {store._where}", operation, store._detail(exc)
            ) from exc

    def _fast(self, operation: str, payload: bytes, key: bytes, *, write: bool = False) -> Any:
        resp = self._resp
        if resp is None:  # pragma: no cover - callers check
            raise StoreError("the RESP transport is off")
        wait = self._store.wait_command if write else None
        try:
            if wait is None:
                return resp.call(payload, key)
            out = resp.call(payload + wait, key, 2)
            result, count = checked(out[0]), checked(out[1])
        except Exception as exc:  # translated into the store's two error kinds
            raise translate_resp(self._store, operation, exc) from exc
        self._store.check_replicas(operation, count)
        return result

    def get(self, key: str) -> bytes | None:
        full = self._store._open_key("get", key)
        if self._resp is not None:
            value = self._fast("get", pack(b"GET", full), full)
        else:
            value = self._run("get", lambda client: client.get(full))
        if value is not None and not isinstance(value, bytes):
            raise StoreError(f"Redis returned {type(value).__name__} for GET; expected bytes")
        return value

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """One ``MGET``; see :meth:`RedisStore.get_many`."""
        fulls = self._store.full_keys("get_many", keys)
        if self._resp is not None:
            groups = self._store.slot_groups(fulls)
            if len(groups) == 1:
                values = self._fast("get_many", pack(b"MGET", *fulls), fulls[0])
            else:
                values = [None] * len(fulls)
                for group in groups:
                    part = [fulls[i] for i in group]
                    found = mget_reply(
                        self._fast("get_many", pack(b"MGET", *part), part[0]), len(part)
                    )
                    for index, value in zip(group, found, strict=True):
                        values[index] = value
        else:
            values = self._run("get_many", lambda client: client.mget(fulls))
        return mget_reply(values, len(fulls))

    def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        full = self._store._open_key("set", key)
        data = check_value(value)
        px = ttl_to_milliseconds(ttl)
        if self._resp is not None:
            command = (
                pack(b"SET", full, data, b"PX", b"%d" % px) if px else pack(b"SET", full, data)
            )
            self._fast("set", command, full, write=True)
            return
        self._run("set", lambda client: client.set(full, data, px=px or None))

    def delete(self, key: str) -> bool:
        full = self._store._open_key("delete", key)
        if self._resp is not None:
            return bool(self._fast("delete", pack(b"DEL", full), full, write=True))
        return bool(self._run("delete", lambda client: client.delete(full)))

    def compare_and_set(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None = None
    ) -> bool:
        full = self._store._open_key("compare_and_set", key)
        args: list[bytes | int] = [check_value(value), ttl_to_milliseconds(ttl)]
        if expected is not None:
            args.append(check_value(expected))

        def cas(client: redis_sync.Redis) -> Any:
            try:
                return client.evalsha(CAS_SHA, 1, full, *args)
            except redis_errors.NoScriptError:
                return client.eval(CAS_SCRIPT, 1, full, *args)

        if self._resp is not None:
            packed = [a if isinstance(a, bytes) else b"%d" % a for a in args]
            try:
                result = self._fast(
                    "compare_and_set",
                    pack(b"EVALSHA", CAS_SHA_BYTES, b"1", full, *packed),
                    full,
                    write=True,
                )
            except StoreError as exc:
                cause = exc.__cause__
                if not (isinstance(cause, ReplyFailure) and cause.code == "NOSCRIPT"):
                    raise
                result = self._fast(
                    "compare_and_set",
                    pack(b"EVAL", CAS_SCRIPT_BYTES, b"1", full, *packed),
                    full,
                    write=True,
                )
        else:
            result = self._run("compare_and_set", cas)
        if result not in (0, 1):
            raise StoreError(f"Redis compare_and_set script returned {result!r}; expected 0 or 1")
        return bool(result == 1)

    def compare_and_set_read(
        self, key: str, expected: bytes | None, value: bytes, ttl: float | None, read: str
    ) -> tuple[bool, bytes | None, bytes | None]:
        """The sync twin of :meth:`RedisStore.compare_and_set_read`: one round trip."""
        store = self._store
        full = store._open_key("compare_and_set_read", key)
        other = store._open_key("compare_and_set_read", read)
        if store._split_slots(full, other):
            won = self.compare_and_set(key, expected, value, ttl)
            return won, self.get(key), self.get(read)
        args: list[bytes] = [check_value(value), b"%d" % ttl_to_milliseconds(ttl)]
        if expected is not None:
            args.append(check_value(expected))
        operation = "compare_and_set_read"
        if self._resp is not None:
            script = CAS_READ_SCRIPT.encode("utf-8")
            reply = self._fast(
                operation, pack(b"EVAL", script, b"2", full, other, *args), full, write=True
            )
        else:
            reply = self._run(
                operation, lambda client: client.eval(CAS_READ_SCRIPT, 2, full, other, *args)
            )
        return cas_read_reply(reply)

    def rate_script(self, strategy: Strategy, keys: list[bytes], args: list[bytes]) -> Any:
        """Run ``strategy``'s rate-limit script (the store's ``hit_sync``): one round trip, and
        one more only after ``NOSCRIPT``."""
        operation = "the rate-limit script"
        resp = self._resp
        if resp is not None:
            try:
                try:
                    return resp.call(script_command(strategy, keys, args, load=False), keys[0])
                except ReplyFailure as exc:
                    if exc.code != "NOSCRIPT":
                        raise
                    return resp.call(script_command(strategy, keys, args, load=True), keys[0])
            except Exception as exc:  # translated into the typed store errors
                raise translate_resp(self._store, operation, exc) from exc

        def run(client: redis_sync.Redis) -> Any:
            try:
                return client.evalsha(LUA_SHAS[strategy], len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                return client.eval(LUA_SCRIPTS[strategy], len(keys), *keys, *args)

        return self._run(operation, run)

    def close(self) -> None:
        """Close this process's blocking client, if one was made. Safe to call again."""
        if self._resp is not None:
            self._resp.close()
        with self._lock:
            client, self._client = self._client, None
            mine = self._pid == os.getpid()
        if client is not None and mine:
            client.close()

    def __repr__(self) -> str:
        return f"RedisSyncStore({self._store!r})"
