"""Routing the Redis store's commands in a Redis Cluster, or to the primary Sentinel names.

Both routers sit under the lean RESP transport (:mod:`bastion.stores._resp`) and offer its
``call(payload, key)`` on the async and the sync side, so the store's operations and scripts
are the same code on one server, a cluster and a Sentinel set-up.

Redis Cluster (:class:`ClusterRouter`):

* Every command goes to the primary serving its first key's slot (the store's keys of one
  operation share a hash tag, so one slot; a command whose keys would not is refused before it
  is sent, so ``CROSSSLOT`` cannot happen and is never read as an answer).
* The slot table comes from ``CLUSTER SLOTS`` on first use. ``MOVED`` updates the slot and
  sends the command again to the node named; ``ASK`` sends ``ASKING`` and the command on one
  connection to the node named, without changing the table; at most
  :data:`MAX_REDIRECTS` redirections per command. Neither executed the command, so neither
  re-send can apply it twice.
* A node that refuses connections (a dead primary) makes the router reload the table from
  another node; when the slot has moved to a promoted replica the command is sent there
  (it never reached the dead node). Until the cluster has promoted one, the caller gets
  :class:`~bastion.errors.StoreUnavailable` (``CLUSTERDOWN`` or the connection error).
* Scripts are cached per node by Redis itself: ``EVALSHA`` answered with ``NOSCRIPT`` on a node
  that never saw the script (a promoted replica) is followed by ``EVAL`` there, as on one
  server.

Redis Sentinel (:class:`SentinelRouter`): the primary is asked of the Sentinels
(``SENTINEL GET-MASTER-ADDR-BY-NAME``, trying each in turn) and confirmed with ``ROLE``. It is
asked again after a connection failure and after a ``READONLY`` reply (the old primary demoted);
a command refused that way never ran, so it is sent once more to the new primary. Any other
failure (a timeout, a reset after the command was sent) is raised as StoreUnavailable and only
makes the next command re-resolve: a command that may have run is never repeated.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from bastion.errors import StoreError
from bastion.stores._resp import AsyncResp, Endpoint, ReplyFailure, SyncResp, checked, pack
from bastion.stores.keyspace import KEY_SLOTS, key_slot

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MAX_REDIRECTS", "ClusterRouter", "SentinelRouter", "same_slot"]

MAX_REDIRECTS: Final = 5
"""``MOVED``/``ASK`` redirections followed for one command before giving up (a cluster moving
slots faster than that is failing over; the caller gets StoreUnavailable and may retry)."""

_ASKING: Final = pack(b"ASKING")


def same_slot(keys: Sequence[bytes]) -> bool:
    """Whether ``keys`` hash to one cluster slot (an empty or one-key list does)."""
    if len(keys) < 2:
        return True
    first = key_slot(keys[0])
    return all(key_slot(key) == first for key in keys[1:])


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class _Nodes:
    """One async and one sync RESP pool per node, made on first use, shared by both routers'
    sides. ``template`` carries the credentials, timeouts and limits; host and port vary."""

    def __init__(self, template: Endpoint) -> None:
        self._template = template
        self._lock = threading.Lock()
        self._async: dict[tuple[str, int], AsyncResp] = {}
        self._sync: dict[tuple[str, int], SyncResp] = {}

    def endpoint(self, node: tuple[str, int]) -> Endpoint:
        return replace(self._template, host=node[0], port=node[1], path=None)

    def async_pool(self, node: tuple[str, int]) -> AsyncResp:
        pool = self._async.get(node)
        if pool is None:
            with self._lock:
                pool = self._async.get(node)
                if pool is None:
                    pool = self._async[node] = AsyncResp(self.endpoint(node))
        return pool

    def sync_pool(self, node: tuple[str, int]) -> SyncResp:
        pool = self._sync.get(node)
        if pool is None:
            with self._lock:
                pool = self._sync.get(node)
                if pool is None:
                    pool = self._sync[node] = SyncResp(self.endpoint(node))
        return pool

    def close(self) -> None:
        with self._lock:
            pools: list[AsyncResp | SyncResp] = [*self._async.values(), *self._sync.values()]
        for pool in pools:
            pool.close()


def _redirect(exc: ReplyFailure) -> tuple[str, int, tuple[str, int]] | None:
    """``(kind, slot, node)`` of a ``MOVED``/``ASK`` reply, else ``None``."""
    if exc.code not in {"MOVED", "ASK"}:
        return None
    parts = str(exc).split(" ")
    if len(parts) != 3:
        raise StoreError(f"Redis Cluster sent a malformed redirection: {str(exc)[:80]!r}")
    return exc.code, int(parts[1]), _address(parts[2])


def _first_checked(reply: Any, replies: int) -> Any:
    """A multi-reply's list with its first reply checked (a ``MOVED`` there raises, so the
    router redirects the whole payload); one reply is checked already."""
    if replies > 1:
        checked(reply[0])
    return reply


def _after_asking(out: list[Any]) -> Any:
    """The replies after ``ASKING``'s, in the shape the caller asked for."""
    checked(out[0])
    rest = out[1:]
    if len(rest) == 1:
        return checked(rest[0])
    checked(rest[0])
    return rest


class ClusterRouter:
    """The slot table of one Redis Cluster and the pools of its nodes (see the module doc)."""

    def __init__(self, seeds: Sequence[tuple[str, int]], template: Endpoint) -> None:
        if not seeds:
            raise StoreError("a Redis Cluster URL needs at least one host:port")
        self._seeds = list(seeds)
        self._nodes = _Nodes(template)
        self._slots: list[tuple[str, int] | None] = [None] * KEY_SLOTS
        self._loaded = False
        self._lock = threading.Lock()
        self.sync = _ClusterSync(self)
        self.async_ = _ClusterAsync(self)

    @property
    def seeds(self) -> list[tuple[str, int]]:
        return list(self._seeds)

    def node_of(self, key: bytes) -> tuple[str, int] | None:
        """The node the table names for ``key``'s slot (``None`` before the first load)."""
        return self._slots[key_slot(key)]

    def _known(self) -> list[tuple[str, int]]:
        known = {node for node in self._slots if node is not None}
        return [*known, *(seed for seed in self._seeds if seed not in known)]

    def apply(self, reply: Any) -> None:
        """Install a ``CLUSTER SLOTS`` reply as the table."""
        if not isinstance(reply, list) or not reply:
            raise StoreError("Redis Cluster sent an empty or malformed CLUSTER SLOTS reply")
        table: list[tuple[str, int] | None] = [None] * KEY_SLOTS
        for entry in reply:
            low, high, primary = int(entry[0]), int(entry[1]), entry[2]
            host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
            node = (host, int(primary[1]))
            for slot in range(low, high + 1):
                table[slot] = node
        with self._lock:
            self._slots = table
            self._loaded = True

    def moved(self, slot: int, node: tuple[str, int]) -> None:
        self._slots[slot] = node

    def follow(self, exc: ReplyFailure) -> tuple[tuple[str, int], bool]:
        """Where a ``MOVED`` or ``ASK`` reply sends the command again, and whether with
        ``ASKING`` first; a ``MOVED`` also updates the slot table. Any other failure is raised
        as it is."""
        redirect = _redirect(exc)
        if redirect is None:
            raise exc
        kind, slot, node = redirect
        if kind == "ASK":
            return node, True
        self.moved(slot, node)
        return node, False

    def target(self, key: bytes) -> tuple[str, int]:
        node = self._slots[key_slot(key)] if self._loaded else None
        return node if node is not None else self._known()[0]

    @property
    def loaded(self) -> bool:
        return self._loaded

    def candidates(self) -> list[tuple[str, int]]:
        """Nodes to ask for the table: known ones first, then the seeds."""
        return self._known()

    @property
    def nodes(self) -> _Nodes:
        return self._nodes

    def close(self) -> None:
        self._nodes.close()


_SLOTS_COMMAND: Final = pack(b"CLUSTER", b"SLOTS")


class _ClusterAsync:
    """The async side of :class:`ClusterRouter`: ``await call(payload, key)``."""

    def __init__(self, router: ClusterRouter) -> None:
        self._router = router

    async def _load(self, exclude: tuple[str, int] | None = None) -> None:
        router = self._router
        error: BaseException | None = None
        for node in router.candidates():
            if node == exclude:
                continue
            try:
                router.apply(await router.nodes.async_pool(node).call(_SLOTS_COMMAND))
            except (OSError, TimeoutError, ReplyFailure) as exc:
                error = exc
                continue
            return
        if error is not None:
            raise error
        raise ConnectionRefusedError("no Redis Cluster node answered CLUSTER SLOTS")

    async def call(self, payload: bytes, key: bytes = b"", replies: int = 1) -> Any:
        router = self._router
        if not router.loaded:
            await self._load()
        node = router.target(key)
        asking = False
        for _ in range(MAX_REDIRECTS + 1):
            pool = router.nodes.async_pool(node)
            try:
                if asking:
                    return _after_asking(await pool.call(_ASKING + payload, key, replies + 1))
                return _first_checked(await pool.call(payload, key, replies), replies)
            except ConnectionRefusedError:
                # The node is down and the command never reached it: reload the table from
                # the others; send again only if the slot has moved to a live node.
                await self._load(exclude=node)
                moved_to = router.target(key)
                if moved_to == node:
                    raise
                node, asking = moved_to, False
            except ReplyFailure as exc:
                node, asking = router.follow(exc)
        raise ReplyFailure(f"TRYAGAIN more than {MAX_REDIRECTS} redirections for one command")

    def close(self) -> None:
        self._router.close()


class _ClusterSync:
    """The blocking side of :class:`ClusterRouter`: ``call(payload, key)``."""

    def __init__(self, router: ClusterRouter) -> None:
        self._router = router

    def _load(self, exclude: tuple[str, int] | None = None) -> None:
        router = self._router
        error: BaseException | None = None
        for node in router.candidates():
            if node == exclude:
                continue
            try:
                router.apply(router.nodes.sync_pool(node).call(_SLOTS_COMMAND))
            except (OSError, TimeoutError, ReplyFailure) as exc:
                error = exc
                continue
            return
        if error is not None:
            raise error
        raise ConnectionRefusedError("no Redis Cluster node answered CLUSTER SLOTS")

    def call(self, payload: bytes, key: bytes = b"", replies: int = 1) -> Any:
        router = self._router
        if not router.loaded:
            self._load()
        node = router.target(key)
        asking = False
        for _ in range(MAX_REDIRECTS + 1):
            pool = router.nodes.sync_pool(node)
            try:
                if asking:
                    return _after_asking(pool.call(_ASKING + payload, key, replies + 1))
                return _first_checked(pool.call(payload, key, replies), replies)
            except ConnectionRefusedError:
                self._load(exclude=node)
                moved_to = router.target(key)
                if moved_to == node:
                    raise
                node, asking = moved_to, False
            except ReplyFailure as exc:
                node, asking = router.follow(exc)
        raise ReplyFailure(f"TRYAGAIN more than {MAX_REDIRECTS} redirections for one command")

    def close(self) -> None:
        self._router.close()


class SentinelRouter:
    """The primary of ``service`` as the Sentinels name it (see the module docstring)."""

    def __init__(
        self, sentinels: Sequence[tuple[str, int]], service: str, template: Endpoint
    ) -> None:
        if not sentinels:
            raise StoreError("a Redis Sentinel URL needs at least one Sentinel host:port")
        if not service:
            raise StoreError("a Redis Sentinel URL needs the service name as its path")
        self._sentinels = list(sentinels)
        self._service = service.encode("utf-8")
        self._nodes = _Nodes(template)
        # Sentinels take no database, name or data-node password.
        self._sentinel_template = replace(
            template, db=0, username=None, password=None, client_name=None
        )
        self._sentinel_pools = _Nodes(self._sentinel_template)
        self._primary: tuple[str, int] | None = None
        self.sync = _SentinelSync(self)
        self.async_ = _SentinelAsync(self)

    @property
    def service(self) -> str:
        return self._service.decode("utf-8")

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return list(self._sentinels)

    @property
    def primary(self) -> tuple[str, int] | None:
        return self._primary

    def forget(self) -> None:
        self._primary = None

    def found(self, sentinel: tuple[str, int], primary: tuple[str, int]) -> None:
        # The Sentinel that answered goes first next time (the clients guide's advice).
        if self._sentinels[0] != sentinel and sentinel in self._sentinels:
            self._sentinels.remove(sentinel)
            self._sentinels.insert(0, sentinel)
        self._primary = primary

    def query(self) -> bytes:
        return pack(b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", self._service)

    @staticmethod
    def parse(reply: Any) -> tuple[str, int] | None:
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        host = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        return host, int(reply[1])

    @staticmethod
    def is_primary(reply: Any) -> bool:
        return isinstance(reply, list) and bool(reply) and reply[0] in {b"master", "master"}

    @property
    def nodes(self) -> _Nodes:
        return self._nodes

    @property
    def sentinel_pools(self) -> _Nodes:
        return self._sentinel_pools

    def close(self) -> None:
        self._nodes.close()
        self._sentinel_pools.close()


_ROLE: Final = pack(b"ROLE")


_LOST: Final = frozenset({"READONLY", "MASTERDOWN", "LOADING"})


def _primary_lost(exc: BaseException) -> bool:
    """Whether ``exc`` suggests the primary moved (ask the Sentinels again next time): a
    network failure, or a reply that only a demoted or restarting server gives."""
    return not isinstance(exc, ReplyFailure) or exc.code in _LOST


def _retry_on(exc: BaseException) -> bool:
    """Whether ``exc`` proves the command did not run (so it may go to a new primary)."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    return isinstance(exc, ReplyFailure) and exc.code in {"READONLY", "MASTERDOWN"}


class _SentinelAsync:
    def __init__(self, router: SentinelRouter) -> None:
        self._router = router

    async def _resolve(self) -> tuple[str, int]:
        router = self._router
        error: BaseException | None = None
        for sentinel in router.sentinels:
            try:
                found = router.parse(
                    await router.sentinel_pools.async_pool(sentinel).call(router.query())
                )
                if found is None:
                    error = ReplyFailure(f"MASTERDOWN no primary known for {router.service!r}")
                    continue
                role = await router.nodes.async_pool(found).call(_ROLE)
            except (OSError, TimeoutError, ReplyFailure) as exc:
                error = exc
                continue
            if not router.is_primary(role):
                error = ReplyFailure(f"MASTERDOWN {found[0]}:{found[1]} is not a primary yet")
                continue
            router.found(sentinel, found)
            return found
        raise error if error is not None else ConnectionRefusedError("no Sentinel answered")

    async def call(self, payload: bytes, key: bytes = b"", replies: int = 1) -> Any:
        router = self._router
        primary = router.primary or await self._resolve()
        try:
            return _first_checked(
                await router.nodes.async_pool(primary).call(payload, key, replies), replies
            )
        except (OSError, TimeoutError, ReplyFailure) as exc:
            if not _primary_lost(exc):
                raise
            router.forget()
            if not _retry_on(exc):
                raise
        primary = await self._resolve()
        return _first_checked(
            await router.nodes.async_pool(primary).call(payload, key, replies), replies
        )

    def close(self) -> None:
        self._router.close()


class _SentinelSync:
    def __init__(self, router: SentinelRouter) -> None:
        self._router = router

    def _resolve(self) -> tuple[str, int]:
        router = self._router
        error: BaseException | None = None
        for sentinel in router.sentinels:
            try:
                found = router.parse(router.sentinel_pools.sync_pool(sentinel).call(router.query()))
                if found is None:
                    error = ReplyFailure(f"MASTERDOWN no primary known for {router.service!r}")
                    continue
                role = router.nodes.sync_pool(found).call(_ROLE)
            except (OSError, TimeoutError, ReplyFailure) as exc:
                error = exc
                continue
            if not router.is_primary(role):
                error = ReplyFailure(f"MASTERDOWN {found[0]}:{found[1]} is not a primary yet")
                continue
            router.found(sentinel, found)
            return found
        raise error if error is not None else ConnectionRefusedError("no Sentinel answered")

    def call(self, payload: bytes, key: bytes = b"", replies: int = 1) -> Any:
        router = self._router
        primary = router.primary or self._resolve()
        try:
            return _first_checked(
                router.nodes.sync_pool(primary).call(payload, key, replies), replies
            )
        except (OSError, TimeoutError, ReplyFailure) as exc:
            if not _primary_lost(exc):
                raise
            router.forget()
            if not _retry_on(exc):
                raise
        primary = self._resolve()
        return _first_checked(router.nodes.sync_pool(primary).call(payload, key, replies), replies)

    def close(self) -> None:
        self._router.close()
