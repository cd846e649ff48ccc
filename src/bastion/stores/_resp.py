"""The lean RESP transport: bastion's own client for the Redis store's hot commands.

redis-py's async client spends about 75 us per command on its own machinery; this transport
about 30 us (measured on one host, same server, same run; figures in the sessions bench). It
speaks RESP2 over plain TCP or a Unix socket with the hiredis parser, and gives the Redis store
(key-value operations and rate-limit scripts alike) the same guarantees as redis-py there:

* one deadline per command (the wait for a free connection, the send and the whole reply), so a
  server trickling its reply cannot hold a caller longer than ``socket_timeout``;
* bounded pools: one shared by every thread (:class:`SyncResp`), one per event loop
  (:class:`AsyncResp`), each rebuilt in a forked child;
* a reply cap (``max_reply_bytes``): a broken or hostile server cannot make the process buffer
  more;
* every failure typed as in :mod:`bastion.stores.faults` (:func:`resp_fault`).

TLS (``rediss://``) and RESP3 stay on redis-py (:func:`resp_endpoint` returns ``None``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Protocol

try:
    import hiredis
except ImportError:  # pragma: no cover - hiredis ships with the redis extra's fast path
    hiredis = None  # type: ignore[assignment]  # transport="resp" then refuses to start

from bastion.errors import ConfigurationError, StoreCorrupt, StoreError
from bastion.stores.faults import redis_reply_fault, socket_fault
from bastion.stores.redis_url import DEFAULT_TIMEOUT

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "DEFAULT_TIMEOUT",
    "AsyncResp",
    "AsyncTransport",
    "Endpoint",
    "ReplyFailure",
    "SyncResp",
    "SyncTransport",
    "pack",
    "resp_endpoint",
    "resp_fault",
]

DEFAULT_MAX_REPLY_BYTES: Final = 64 * 1024 * 1024
"""Largest reply the RESP transport reads (64 MiB): a broken or hostile server cannot make the
process buffer more. Store values are at most 8 MiB, so a legitimate reply stays far below."""


class AsyncTransport(Protocol):
    """What the Redis store sends its commands through on the async side: one server's
    :class:`AsyncResp`, or a cluster or Sentinel router (:mod:`bastion.stores._redis_cluster`)."""

    async def call(self, payload: bytes, key: bytes = b"", replies: int = 1) -> Any: ...

    def close(self) -> None: ...


class SyncTransport(Protocol):
    """The blocking twin of :class:`AsyncTransport`."""

    def call(self, payload: bytes, key: bytes = b"", replies: int = 1) -> Any: ...

    def close(self) -> None: ...


def resp_endpoint(pool: Any, transport: str, max_reply_bytes: int) -> Endpoint | None:
    """The RESP transport's endpoint for a redis-py (sync or async) connection pool's
    settings, or ``None`` for ``transport="redis-py"`` (and, with ``"auto"``, for TLS or
    without hiredis). Used by the store's async and sync sides alike."""
    if transport == "redis-py":
        return None
    if transport not in {"resp", "auto"}:
        raise ConfigurationError(
            f"Redis store transport must be 'auto', 'resp' or 'redis-py', got {transport!r}",
            setting="transport",
        )
    if transport == "auto" and (
        hiredis is None
        or pool.connection_class.__name__ not in {"Connection", "UnixDomainSocketConnection"}
        or pool.connection_kwargs.get("protocol") not in {None, 2, "2"}
    ):
        return None
    if hiredis is None:
        raise ConfigurationError(
            "transport='resp' needs the hiredis package: pip install hiredis", setting="transport"
        )
    kwargs = pool.connection_kwargs
    if pool.connection_class.__name__ not in {"Connection", "UnixDomainSocketConnection"}:
        raise ConfigurationError(
            "transport='resp' supports redis:// and unix:// servers; use the default "
            "transport='redis-py' for TLS (rediss://)",
            setting="transport",
        )
    if kwargs.get("protocol") not in {None, 2, "2"}:
        raise ConfigurationError(
            "transport='resp' speaks RESP2; leave the protocol option unset", setting="transport"
        )
    return Endpoint(
        host=str(kwargs.get("host", "localhost")),
        port=int(kwargs.get("port", 6379)),
        path=kwargs.get("path"),
        db=int(kwargs.get("db", 0) or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        client_name=kwargs.get("client_name"),
        connect_timeout=float(kwargs.get("socket_connect_timeout") or DEFAULT_TIMEOUT),
        timeout=float(kwargs.get("socket_timeout") or DEFAULT_TIMEOUT),
        max_connections=int(getattr(pool, "max_connections", 50) or 50),
        max_reply_bytes=max_reply_bytes,
    )


def resp_fault(exc: BaseException, where: str, operation: str, detail: str) -> StoreError:
    """The typed error for what the RESP transport raised (see :mod:`bastion.stores.faults`)."""
    if isinstance(exc, ReplyFailure):
        return redis_reply_fault(exc.code, where, operation, detail)
    if isinstance(exc, ReplyTooLarge | hiredis.ProtocolError):
        return StoreCorrupt(
            f"{where} sent a reply bastion cannot accept ({operation}): {detail}; raise "
            "max_reply_bytes if the value is legitimately that large"
        )
    return socket_fault(exc, where, operation, detail) or StoreError(
        f"{where} failed {operation}: {detail}"
    )


def pack(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n" % len(arg))
        out.append(arg)
        out.append(b"\r\n")
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how the RESP transport connects (from the redis-py pool's settings)."""

    host: str
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    client_name: str | None
    connect_timeout: float
    timeout: float
    max_connections: int
    max_reply_bytes: int

    def handshake(self) -> list[bytes]:
        commands = []
        if self.password is not None:
            if self.username:
                commands.append(pack(b"AUTH", self.username.encode(), self.password.encode()))
            else:
                commands.append(pack(b"AUTH", self.password.encode()))
        if self.db:
            commands.append(pack(b"SELECT", str(self.db).encode()))
        if self.client_name:
            commands.append(pack(b"CLIENT", b"SETNAME", self.client_name.encode()))
        return commands


class ReplyFailure(Exception):
    """An error reply, as hiredis returns it (``code`` is its first word)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.code = text.split(" ", 1)[0]


class ReplyTooLarge(Exception):
    """A reply grew past ``max_reply_bytes`` before it was complete."""


def checked(reply: Any) -> Any:
    """``reply``, or :class:`ReplyFailure` when it is an error reply."""
    if isinstance(reply, hiredis.ReplyError):
        raise ReplyFailure(str(reply))
    return reply


class Conn:
    """One connection: a socket and its reply parser. Used by one caller at a time.

    A connection is in step while every reply to what was sent on it has been read whole.
    Any failure in the middle of a command (timeout, cancellation, a reset, an oversized
    reply) leaves it out of step, and the pool closes it instead of reusing it.
    """

    __slots__ = ("limit", "pid", "reader", "sock")

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.reader = hiredis.Reader()
        self.pid = os.getpid()
        self.limit = limit

    def fresh(self) -> bool:
        """Whether the idle connection is still usable: the server has not closed it and sent
        nothing unasked (an idle connection with anything to read is one or the other). One
        ``poll`` with no wait, so a server restart costs no failed call."""
        if self.pid != os.getpid():
            return False
        try:
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):  # closed
            return False

    def feed(self, data: bytes, received: int) -> int:
        if not data:
            raise ConnectionResetError("connection closed by the server")
        received += len(data)
        if received > self.limit:
            raise ReplyTooLarge(
                f"reply exceeds max_reply_bytes={self.limit} bytes; the connection was closed"
            )
        self.reader.feed(data)
        return received

    def call(self, payload: bytes, deadline: float, timeout: float, replies: int = 1) -> Any:
        """Send ``payload`` and read its whole reply by ``deadline`` (``time.monotonic()``);
        ``timeout`` is the configured bound, for the message. ``replies=2``: ``payload`` holds
        ``replies`` commands (``ASKING`` before a command, ``WAIT`` after one), and the list of
        their replies is returned, unchecked."""
        sock = self.sock
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no whole reply within {timeout:g} s")
        # The socket keeps ``timeout`` between calls; it is lowered only when less is left,
        # so the common call (a whole reply in one read) changes no socket setting.
        shortened = remaining < timeout
        if shortened:
            sock.settimeout(remaining)
        sock.sendall(payload)  # one total timeout for the whole send (Python >= 3.5)
        reader = self.reader
        received = self.feed(sock.recv(65536), 0)
        out = []
        for _ in range(replies):
            reply = reader.gets()
            while reply is False:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no whole reply within {timeout:g} s")
                sock.settimeout(remaining)
                shortened = True
                received = self.feed(sock.recv(65536), received)
                reply = reader.gets()
            out.append(reply)
        if shortened:
            sock.settimeout(timeout)
        return out[0] if replies == 1 else out

    async def acall(self, loop: asyncio.AbstractEventLoop, payload: bytes, replies: int = 1) -> Any:
        """The same on a non-blocking socket; the caller bounds it with ``asyncio.timeout``."""
        sock = self.sock
        await loop.sock_sendall(sock, payload)
        reader = self.reader
        received = 0
        out = []
        for _ in range(replies):
            reply = reader.gets()
            while reply is False:
                received = self.feed(await loop.sock_recv(sock, 65536), received)
                reply = reader.gets()
            out.append(reply)
        return out[0] if replies == 1 else out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def connect_sync(endpoint: Endpoint) -> Conn:
    if endpoint.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(endpoint.connect_timeout)
        try:
            sock.connect(endpoint.path)
        except BaseException:
            sock.close()
            raise
    else:
        sock = socket.create_connection(
            (endpoint.host, endpoint.port), timeout=endpoint.connect_timeout
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = Conn(sock, endpoint.max_reply_bytes)
    try:
        for command in endpoint.handshake():
            deadline = time.monotonic() + endpoint.connect_timeout
            checked(conn.call(command, deadline, endpoint.connect_timeout))
        sock.settimeout(endpoint.timeout)  # kept between calls (see Conn.call)
    except BaseException:
        conn.close()
        raise
    return conn


async def connect_async(loop: asyncio.AbstractEventLoop, endpoint: Endpoint) -> Conn:
    if endpoint.path is not None:
        targets: list[tuple[int, Any]] = [(socket.AF_UNIX, endpoint.path)]
    else:
        try:  # an IP address needs no resolver (and no executor thread)
            infos = socket.getaddrinfo(
                endpoint.host, endpoint.port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
            )
        except socket.gaierror:
            infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        targets = [(family, address) for family, _, _, _, address in infos]
    error: OSError = ConnectionRefusedError(f"no address for {endpoint.host}")
    for family, address in targets:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)  # noqa: FBT003 (the socket API)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        conn = Conn(sock, endpoint.max_reply_bytes)
        try:
            for command in endpoint.handshake():
                checked(await conn.acall(loop, command))
        except BaseException:
            conn.close()
            raise
        return conn
    raise error


class SyncResp:
    """The blocking side of the RESP transport: one bounded pool shared by every thread.

    A command checks a connection out, runs, and returns it, so threads that come and go (a
    threaded WSGI server, anyio's worker threads) reuse the same few sockets instead of
    leaving one behind each. At most ``max_connections`` exist; a caller that finds all in
    use waits, within the command's timeout, then gets :class:`StoreTimeout`. A connection
    that failed mid-command, or that the server closed while idle, is closed and replaced. In
    a forked child the parent's connections are closed (the child's copies only) and new ones
    are made.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[Conn] = []
        self._count = 0
        self._pid = os.getpid()
        self._generation = 0

    def call(self, payload: bytes, key: bytes = b"", replies: int = 1) -> Any:  # noqa: ARG002
        """As :meth:`AsyncResp.call`, blocking."""
        endpoint = self._endpoint
        began = time.monotonic()
        conn, generation, connecting = self._checkout(began + endpoint.timeout)
        # One deadline for the wait and the command; opening a connection (bounded by
        # connect_timeout) does not eat into it.
        try:
            reply = conn.call(
                payload, began + connecting + endpoint.timeout, endpoint.timeout, replies
            )
        except BaseException:
            self._checkin(conn, generation, broken=True)
            raise
        self._checkin(conn, generation, broken=False)
        return checked(reply) if replies == 1 else reply

    def _checkout(self, deadline: float) -> tuple[Conn, int, float]:
        """A connection, its pool generation, and the seconds spent opening it (0 if idle)."""
        endpoint = self._endpoint
        with self._cond:
            if self._pid != os.getpid():
                stale, self._idle, self._count = self._idle, [], 0
                self._pid = os.getpid()
                self._generation += 1
                for conn in stale:
                    conn.close()  # the child's copy of the descriptor; the parent keeps its own
            while True:
                while self._idle:
                    conn = self._idle.pop()
                    if conn.fresh():
                        return conn, self._generation, 0.0
                    conn.close()
                    self._count -= 1
                if self._count < endpoint.max_connections:
                    self._count += 1
                    generation = self._generation
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"all {endpoint.max_connections} connections stayed in use for "
                        f"{endpoint.timeout:g} s (raise max_connections?)"
                    )
                self._cond.wait(remaining)
        began = time.monotonic()
        try:
            return connect_sync(endpoint), generation, time.monotonic() - began
        except BaseException:
            with self._cond:
                if generation == self._generation:
                    self._count -= 1
                self._cond.notify()
            raise

    def _checkin(self, conn: Conn, generation: int, *, broken: bool) -> None:
        with self._cond:
            current = generation == self._generation and conn.pid == os.getpid()
            if current and not broken:
                self._idle.append(conn)
            else:
                if current:
                    self._count -= 1
                conn.close()
            self._cond.notify()

    @property
    def open_connections(self) -> int:
        """Connections this process holds (idle and in use), for tests and diagnostics."""
        with self._cond:
            return self._count

    def close(self) -> None:
        """Close the idle connections; those in use close when returned. Usable again after."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._count = 0
            self._generation += 1
            self._cond.notify_all()
        for conn in idle:
            conn.close()


class LoopPool:
    """The connections of one event loop. Touched only by tasks of that loop."""

    __slots__ = ("closed", "count", "idle", "waiters")

    def __init__(self) -> None:
        self.idle: list[Conn] = []
        self.count = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False

    def wake(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close every idle connection; in-use ones close when returned. Any thread may call
        it once the loop has closed; the owning loop may call it at any time."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class AsyncResp:
    """The async side of the RESP transport: a bounded pool of connections per event loop.

    A socket registered with one event loop must not be used by another, so each running loop
    gets its own pool, found through a :class:`weakref.WeakKeyDictionary` keyed by the loop.
    ``asyncio.run()`` per request (Flask async views, asgiref, pytest-asyncio) therefore gets
    working connections every time, and two loops in two threads never share a socket. A
    pool's connections are closed when its loop is collected (a :func:`weakref.finalize`
    callback), and sooner, when another loop opens a pool and finds the old loop closed.
    Each caller opens its own connection when none is idle, so cancelling one caller never
    fails another. The store's timeout bounds each command as a whole (the wait for a free
    connection, the send and the whole reply); ``connect_timeout`` bounds opening one.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self._lock = threading.Lock()
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopPool] = (
            weakref.WeakKeyDictionary()
        )

    def _pool(self, loop: asyncio.AbstractEventLoop) -> LoopPool:
        pool = self._pools.get(loop)
        if pool is not None:
            return pool
        with self._lock:
            for old_loop, old_pool in list(self._pools.items()):
                if old_loop.is_closed():
                    old_pool.close()
                    del self._pools[old_loop]
            pool = self._pools.get(loop)
            if pool is None:
                pool = self._pools[loop] = LoopPool()
                weakref.finalize(loop, pool.close)
        return pool

    async def call(self, payload: bytes, key: bytes = b"", replies: int = 1) -> Any:  # noqa: ARG002
        """Send ``payload`` and return its reply (:class:`ReplyFailure` for an error reply).
        ``key`` (the command's first key) routes a command in Redis Cluster; one server
        ignores it. ``replies > 1``: ``payload`` holds that many commands, and the list of their
        replies comes back unchecked (see :func:`checked`)."""
        loop = asyncio.get_running_loop()
        pool = self._pool(loop)
        endpoint = self._endpoint
        # One deadline for the wait and the command; opening a connection (bounded by
        # connect_timeout) does not eat into it.
        deadline = loop.time() + endpoint.timeout
        async with asyncio.timeout_at(deadline):
            conn = await self._checkout(pool)
        if conn is None:  # a slot is reserved for a new connection
            began = loop.time()
            try:
                async with asyncio.timeout(endpoint.connect_timeout):
                    conn = await connect_async(loop, endpoint)
            except BaseException:
                pool.count -= 1
                pool.wake()
                raise
            deadline += loop.time() - began
        try:
            async with asyncio.timeout_at(deadline):
                reply = await conn.acall(loop, payload, replies)
        except BaseException:
            self._checkin(pool, conn, broken=True)
            raise
        self._checkin(pool, conn, broken=False)
        return checked(reply) if replies == 1 else reply

    async def _checkout(self, pool: LoopPool) -> Conn | None:
        while True:
            if pool.closed:
                raise ConnectionResetError("the store's connections were closed")
            while pool.idle:
                conn = pool.idle.pop()
                if conn.fresh():
                    return conn
                conn.close()
                pool.count -= 1
            if pool.count < self._endpoint.max_connections:
                pool.count += 1
                return None
            waiter = asyncio.get_running_loop().create_future()
            pool.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    pool.wake()  # pass the wake-up on: this caller no longer needs it
                raise

    def _checkin(self, pool: LoopPool, conn: Conn, *, broken: bool) -> None:
        if broken or pool.closed or conn.pid != os.getpid():
            conn.close()
            pool.count -= 1
        else:
            pool.idle.append(conn)
        pool.wake()

    def close(self) -> None:
        """Close every loop's idle connections; connections in use close when returned."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
