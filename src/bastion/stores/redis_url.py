"""What the Redis store reads from a URL and its options, and sets on redis-py.

One URL configures the store, its key-value operations and its rate limits alike:
``redis://host:6379/0?prefix=app:`` names the server, the database and bastion's key prefix.
redis-py passes every query parameter it does not know on to the socket, so bastion's own
parameters are taken out first with :func:`pop_query`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio import Redis

__all__ = [
    "DEFAULT_PREFIX",
    "REDIS_SCHEMES",
    "SCALED_SCHEMES",
    "LoopClients",
    "Topology",
    "check_timeout",
    "describe_client",
    "pop_query",
    "split_topology",
    "without_maintenance_notifications",
]

_C = TypeVar("_C")

DEFAULT_PREFIX: Final = "bastion:"
"""Prepended to every key, so bastion's keys never collide with an application's."""

REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})
SCALED_SCHEMES: Final = frozenset({"redis+cluster", "redis+sentinel"})

DEFAULT_TIMEOUT: Final = 2.0
"""Seconds to wait for a connection or a reply before raising StoreUnavailable."""


def check_timeout(name: str, value: float) -> float:
    """``value`` as seconds, or :class:`~bastion.errors.ConfigurationError` naming ``name``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"{name} must be a finite number of seconds greater than 0, got {value!r}; "
            f"the default is {DEFAULT_TIMEOUT}",
            setting=name,
        )
    return float(value)


@dataclass(frozen=True, slots=True)
class Topology:
    """Where a scaled Redis URL points: the cluster's seed nodes, or the Sentinels and the
    service name they watch."""

    kind: Literal["cluster", "sentinel"]
    nodes: tuple[tuple[str, int], ...]
    service: str = ""

    def describe(self) -> str:
        """For messages (never a password)."""
        nodes = ",".join(f"{host}:{port}" for host, port in self.nodes)
        if self.kind == "cluster":
            return f"cluster {nodes}"
        return f"sentinel {nodes} service {self.service!r}"


def _nodes(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    found: list[tuple[str, int]] = []
    for item in netloc.split(","):
        text = item.strip()
        if not text:
            raise ConfigurationError("a scaled Redis URL lists an empty host", setting="url")
        if text.startswith("["):  # [IPv6]:port
            host, _, rest = text[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else str(default_port)
        elif ":" in text:
            host, _, port = text.rpartition(":")
        else:
            host, port = text, str(default_port)
        try:
            number = int(port, 10)
        except ValueError:
            raise ConfigurationError(
                f"port {port!r} in the Redis URL is not a number", setting="url"
            ) from None
        if not host or not 0 < number < 65536:
            raise ConfigurationError(f"bad host:port {text!r} in the Redis URL", setting="url")
        found.append((host, number))
    return tuple(found)


def split_topology(url: str) -> tuple[str, Topology | None]:
    """``(url, None)`` for a one-server URL; for ``redis+cluster://h1:p1,h2:p2/?prefix=...``
    and ``redis+sentinel://s1:p1,s2:p2/service?db=0&prefix=...`` the topology and a
    ``redis://`` URL of the first node carrying the credentials and query (the settings every
    node connection shares)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCALED_SCHEMES:
        return url, None
    credentials, _, hosts = parts.netloc.rpartition("@")
    if scheme == "redis+cluster":
        if parts.path.strip("/") not in {"", "0"}:
            raise ConfigurationError(
                "Redis Cluster has only database 0; drop the path from the URL", setting="url"
            )
        topology = Topology("cluster", _nodes(hosts, 6379))
    else:
        service = parts.path.strip("/")
        if not service or "/" in service:
            raise ConfigurationError(
                "a redis+sentinel:// URL names the service as its path: "
                "redis+sentinel://host:26379,host:26379/service",
                setting="url",
            )
        topology = Topology("sentinel", _nodes(hosts, 26379), service)
    first = topology.nodes[0]
    netloc = (credentials + "@" if credentials else "") + f"{first[0]}:{first[1]}"
    template = urlunsplit(("redis", netloc, "", parts.query, ""))
    return template, topology


def describe_client(client: Redis) -> str:
    """``host:port db N`` (or ``unix:path db N``) for messages: never the password."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']} db {kwargs.get('db', 0)}"
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"  # IPv6
    return f"{host}:{kwargs.get('port', 6379)} db {kwargs.get('db', 0)}"


def pop_query(url: str, name: str) -> tuple[str, str | None]:
    """``(url without the query parameter name, its value or None)``.

    Raises :class:`~bastion.errors.ConfigurationError` for a scheme other than ``redis://``,
    ``rediss://`` or ``unix://`` and for a parameter given twice.
    """
    parts = urlsplit(url)
    if parts.scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            "Redis URL scheme must be redis://, rediss:// or unix://, "
            f"got {parts.scheme + '://' if parts.scheme else 'none'}",
            setting="url",
        )
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    found = [value for key, value in pairs if key == name]
    if len(found) > 1:
        raise ConfigurationError(
            f"Redis URL gives {name!r} more than once; give it once", setting="url"
        )
    rest = urlencode([(key, value) for key, value in pairs if key != name])
    return urlunsplit(parts._replace(query=rest)), (found[0] if found else None)


def without_maintenance_notifications(options: dict[str, Any]) -> dict[str, Any]:
    """The pool option that turns redis-py's maintenance notifications off, unless ``options``
    already configures them (then nothing).

    redis-py >= 7 enables them by default over RESP3. While enabled, its pool no longer checks
    an idle connection before reuse (a server restart then fails the next call), and during a
    maintenance event it relaxes timeouts to 10 s, past our bounded failure time. They only
    matter for Redis Enterprise / Redis Cloud endpoints.
    """
    if "maint_notifications_config" in options:
        return {}
    try:
        from redis.maint_notifications import (  # noqa: PLC0415 (absent before redis-py 7)
            MaintNotificationsConfig,
        )
    except ImportError:
        return {}
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


class LoopClients(Generic[_C]):
    """One async client per running event loop, closed when that loop shuts down.

    An asyncio connection belongs to the loop that opened it: reused from another loop it
    fails (``RuntimeError: Event loop is closed`` on every second call when each request runs
    ``asyncio.run()``, as Flask async views and asgiref do). So each loop gets its own client,
    kept in a :class:`weakref.WeakKeyDictionary` keyed by the loop. With each client a small
    task is started on its loop that waits forever; ``asyncio.run()`` (and every
    ``asyncio.Runner``) cancels the tasks still pending before it closes the loop, and that
    task then closes the client, so its connections never outlive the loop.
    """

    __slots__ = ("_clients", "_closer", "_factory", "_keepers", "_lock")

    def __init__(self, factory: Callable[[], _C], closer: Callable[[_C], Awaitable[None]]) -> None:
        self._factory = factory
        self._closer = closer
        self._lock = threading.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _C] = (
            weakref.WeakKeyDictionary()
        )
        self._keepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> _C:
        """The running loop's client, made on first use."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is not None:
            return client
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                client = self._clients[loop] = self._factory()
                self._keepers[loop] = loop.create_task(self._keep(loop, client))
        return client

    async def _keep(self, loop: asyncio.AbstractEventLoop, client: _C) -> None:
        try:
            await loop.create_future()
        finally:
            with self._lock:
                if self._clients.get(loop) is client:
                    del self._clients[loop]
            await self._closer(client)

    async def aclose(self) -> None:
        """Close the running loop's client now; ask the other loops to close theirs."""
        with self._lock:
            clients, self._clients = dict(self._clients), weakref.WeakKeyDictionary()
            keepers, self._keepers = dict(self._keepers), weakref.WeakKeyDictionary()
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, keeper in keepers.items():
            if loop is running:
                keeper.cancel()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(keeper.cancel)
        if running is not None and running in clients:
            await self._closer(clients[running])
