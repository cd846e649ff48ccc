"""The Redis Streams audit backend (``redis-py``, the ``redis`` extra).

Keys under ``prefix`` (default ``bastion:audit:``): ``events``, a stream whose entry ids are
the sequence numbers (``<seq>-0``, so ids and the chain agree); ``seals``, a hash from segment
number to seal; ``purges``, a list of purge marks; ``head``, the head. A batch ``WATCH``es the
head, computes, and writes everything in one ``MULTI``/``EXEC``; a concurrent writer makes
``EXEC`` fail and the batch is recomputed on the new head. A purge trims the stream with
``XTRIM MINID``.

Queries scan the stream newest first and filter in Python (Redis has no secondary index): fine
for the recent history a stream is for; keep long histories in PostgreSQL or SQLite.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

import redis
from redis import exceptions as redis_errors

from bastion.engine.audit.model import Head, Purge, Row, Seal, dump, load
from bastion.errors import StoreUnavailable
from bastion.stores.url import redact_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from bastion.engine.audit.model import Batch, Query

__all__ = ["RedisAuditBackend"]

_FIELDS: Final = Row._fields[1:]  # the sequence number is the entry id
_OPTIONAL: Final = frozenset({"user", "client_ip", "session", "request_id"})
_INTS: Final = frozenset({"segment", "time_ms"})
_PAGE: Final = 1000
_RETRIES: Final = 100


def _entry(row: Row) -> dict[str, str | int]:
    return {name: value for name, value in zip(_FIELDS, row[1:], strict=True) if value is not None}


def _row(entry_id: bytes, fields: dict[bytes, bytes]) -> Row:
    values: dict[str, Any] = {}
    for name in _FIELDS:
        raw = fields.get(name.encode())
        if raw is None:
            values[name] = None if name in _OPTIONAL else ("" if name not in _INTS else -1)
        else:
            values[name] = int(raw) if name in _INTS else raw.decode("utf-8", "surrogateescape")
    return Row(int(entry_id.split(b"-", 1)[0]), **values)


class RedisAuditBackend:
    """An audit trail in the Redis server at ``url`` under ``prefix``."""

    __slots__ = ("_client", "_lock", "_url", "prefix")

    def __init__(self, url: str, *, prefix: str = "bastion:audit:", timeout: float = 5.0) -> None:
        self._url = url
        self.prefix = prefix
        self._lock = threading.RLock()
        # Any: redis-py's stubs type replies as unions of every RESP shape.
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    @property
    def where(self) -> str:
        return redact_url(self._url)

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _failed(self, error: Exception) -> StoreUnavailable:
        return StoreUnavailable(f"audit Redis {self.where}: {type(error).__name__}: {error}")

    def transact(self, build: Callable[[Head | None], Batch | None]) -> Batch | None:
        head_key = self._key("head")
        with self._lock:
            try:
                with self._client.pipeline() as pipe:
                    for _ in range(_RETRIES):
                        try:
                            return self._attempt(pipe, head_key, build)
                        except redis_errors.WatchError:
                            continue
            except redis_errors.RedisError as error:
                raise self._failed(error) from None
        raise StoreUnavailable(f"audit Redis {self.where}: the head kept changing")

    def _attempt(
        self, pipe: Any, head_key: str, build: Callable[[Head | None], Batch | None]
    ) -> Batch | None:
        pipe.watch(head_key)
        raw = pipe.get(head_key)
        batch = build(None if raw is None else load(Head, raw))
        if batch is None:
            pipe.unwatch()
            return None
        pipe.multi()
        events = self._key("events")
        for row in batch.rows:
            pipe.xadd(events, _entry(row), id=f"{row.seq}-0")
        if batch.seals:
            pipe.hset(
                self._key("seals"), mapping={str(seal.segment): dump(seal) for seal in batch.seals}
            )
        if batch.purge is not None:
            pipe.rpush(self._key("purges"), dump(batch.purge))
            kept = next(s.last_seq + 1 for s in self.seals() if s.segment == batch.purge.through)
            pipe.xtrim(events, minid=f"{kept}-0", approximate=False)
        pipe.set(head_key, dump(batch.head))
        pipe.execute()
        return batch

    def rows(self, after_seq: int, limit: int) -> list[Row]:
        with self._lock:
            try:
                found = self._client.xrange(
                    self._key("events"), min=f"{after_seq + 1}-0", max="+", count=limit
                )
            except redis_errors.RedisError as error:
                raise self._failed(error) from None
        return [_row(entry_id, fields) for entry_id, fields in found]

    def seals(self) -> list[Seal]:
        with self._lock:
            try:
                found = self._client.hgetall(self._key("seals"))
            except redis_errors.RedisError as error:
                raise self._failed(error) from None
        return sorted((load(Seal, body) for body in found.values()), key=lambda s: s.segment)

    def purges(self) -> list[Purge]:
        with self._lock:
            try:
                found = self._client.lrange(self._key("purges"), 0, -1)
            except redis_errors.RedisError as error:
                raise self._failed(error) from None
        return [load(Purge, body) for body in found]

    def head(self) -> Head | None:
        with self._lock:
            try:
                raw = self._client.get(self._key("head"))
            except redis_errors.RedisError as error:
                raise self._failed(error) from None
        return None if raw is None else load(Head, raw)

    def _newest_first(self) -> Iterator[Row]:
        top = "+"
        while True:
            with self._lock:
                try:
                    page = self._client.xrevrange(self._key("events"), max=top, count=_PAGE)
                except redis_errors.RedisError as error:
                    raise self._failed(error) from None
            for entry_id, fields in page:
                yield _row(entry_id, fields)
            if len(page) < _PAGE:
                return
            top = f"({page[-1][0].decode()}"

    def query(self, query: Query) -> list[Row]:
        found: list[Row] = []
        for row in self._newest_first():
            if (
                (query.names and row.name not in query.names)
                or (query.users and row.user not in query.users)
                or (query.outcomes and row.outcome not in query.outcomes)
                or (query.since_ms is not None and row.time_ms < query.since_ms)
                or (query.until_ms is not None and row.time_ms >= query.until_ms)
            ):
                continue
            found.append(row)
            if len(found) >= query.limit:
                break
        return found

    def after_fork(self) -> None:
        # redis-py's pool notices the new pid and opens new connections itself.
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._client.close()

    def __repr__(self) -> str:
        return f"RedisAuditBackend({self.where!r}, prefix={self.prefix!r})"
