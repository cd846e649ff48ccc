"""Throwaway Redis Cluster and Redis Sentinel set-ups for tests, on 127.0.0.1 and free ports.

::

    with RedisClusterServers(primaries=3, replicas=1) as cluster:
        store = open_store(cluster.url)            # redis+cluster://127.0.0.1:p1,...
        killed = cluster.kill_primary_of(b"rl:{alice}")
        cluster.wait_until_healthy()               # a replica was promoted

    with RedisSentinelServers() as setup:
        store = open_store(setup.url)              # redis+sentinel://127.0.0.1:s1,.../primary
        setup.fail_over()                          # kill the primary, wait for the promotion

Every node is a :class:`~bastion.testing.redis_server.RedisServer` (append-only file with
``appendfsync always``: an acknowledged write is on the node's disk before the reply). Timeouts
are short (``cluster-node-timeout`` 1 s, Sentinel's ``down-after-milliseconds`` 1 s) so a
failover test takes seconds, not the production defaults' minute. Replication is asynchronous
in both: a write acknowledged by a primary that dies before its replica copied it is lost on
failover, unless the writer waited for the replica (``WAIT 1 timeout``); tests that count on
no loss must use that option.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.testing.redis_server import RedisServer, _free_port, find_redis_server

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

__all__ = ["RedisClusterServers", "RedisSentinelServers", "command"]

_NODE_TIMEOUT_MS = 1000
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")
"""A replica's first sync starts at once (the default waits 5 s for more replicas); a replica
that never synced does not take over when its primary dies."""


def command(host: str, port: int, *args: str | bytes, timeout: float = 2.0) -> Any:
    """Send one command to ``host:port`` and return its decoded reply (a small RESP reader for
    set-up and inspection: strings, integers, errors as ``RuntimeError``, arrays)."""
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    payload = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(payload)
        reader = conn.makefile("rb")
        return _read(reader)


def _read(reader: Any) -> Any:
    line: bytes = reader.readline()
    if not line:
        raise ConnectionError("connection closed before the reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data: bytes = reader.read(size + 2)[:-2]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_read(reader) for _ in range(size)]
    raise RuntimeError(f"unexpected RESP reply {line!r}")


def _info(host: str, port: int, section: str) -> dict[str, str]:
    text = command(host, port, "INFO", section)
    fields: dict[str, str] = {}
    for row in str(text).splitlines():
        name, sep, value = row.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, RuntimeError, ConnectionError) as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}; last error: {last!r}")


class RedisClusterServers:
    """``primaries`` cluster-enabled nodes (slots split evenly by ``redis-cli --cluster
    create``), each with ``replicas`` replicas, on 127.0.0.1."""

    def __init__(self, *, primaries: int = 3, replicas: int = 1, start_timeout: float = 30.0):
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        self._count = primaries * (1 + replicas)
        self._replicas = replicas
        self._start_timeout = start_timeout
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...`` (every node a seed)."""
        seeds = ",".join(f"{node.host}:{node.port}" for node in self.nodes if node.running)
        return f"redis+cluster://{seeds}"

    def start(self) -> None:
        cli = shutil.which("redis-cli")
        if find_redis_server() is None or cli is None:
            raise FileNotFoundError(
                "redis-server and redis-cli are needed: apt-get install redis-server"
            )
        extra = ("--cluster-node-timeout", str(_NODE_TIMEOUT_MS), *_FAST_SYNC)
        for _ in range(self._count):
            node = RedisServer(cluster=True, extra_args=extra)
            self.nodes.append(node)
            node.start()
        addresses = [f"{node.host}:{node.port}" for node in self.nodes]
        subprocess.run(  # noqa: S603 (fixed argv)
            [cli, "--cluster", "create", *addresses, "--cluster-replicas",
             str(self._replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=self._start_timeout,
        )  # fmt: skip
        self.wait_until_healthy(self._start_timeout)
        _wait(self._replicas_synced, self._start_timeout, "every replica's first sync")

    def _replicas_synced(self) -> bool:
        links = [_info(node.host, node.port, "replication") for node in self.nodes]
        replicas = [link for link in links if link.get("role") == "slave"]
        wanted = self._count - self._count // (1 + self._replicas)
        return len(replicas) == wanted and all(
            link.get("master_link_status") == "up" for link in replicas
        )

    def wait_until_healthy(self, timeout: float = 30.0) -> None:
        """Until every running node says ``cluster_state:ok``, all 16384 slots are served, and
        every slot's primary in ``CLUSTER SLOTS`` is a running node (after a kill, the dead
        primary stays listed until the others mark it failed)."""
        running = {node.port for node in self.nodes if node.running}

        def healthy() -> bool:
            for node in self.nodes:
                if not node.running:
                    continue
                state = _info_cluster(node)
                if state.get("cluster_state") != "ok" or state.get("cluster_slots_ok") != "16384":
                    return False
                for entry in command(node.host, node.port, "CLUSTER", "SLOTS"):
                    if int(entry[2][1]) not in running:
                        return False
            return True

        _wait(healthy, timeout, "the cluster to be healthy")

    def primary_of(self, key: bytes | str) -> RedisServer:
        """The running node that serves ``key``'s slot as a primary now."""
        seed = next(node for node in self.nodes if node.running)
        slot = int(command(seed.host, seed.port, "CLUSTER", "KEYSLOT", key))
        for node in self.nodes:
            if not node.running:
                continue
            role = _info(node.host, node.port, "replication").get("role")
            if role != "master":
                continue
            for entry in command(node.host, node.port, "CLUSTER", "SLOTS"):
                low, high, owner = entry[0], entry[1], entry[2]
                if low <= slot <= high and int(owner[1]) == node.port:
                    return node
        raise RuntimeError(f"no running primary serves slot {slot}")

    def kill_primary_of(self, key: bytes | str) -> RedisServer:
        """SIGKILL the primary serving ``key`` (a crash); a replica takes over within seconds
        (:meth:`wait_until_healthy`). Returns the killed node (``restart()`` brings it back as a
        replica)."""
        node = self.primary_of(key)
        node.kill()
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self.nodes.clear()

    def __enter__(self) -> RedisClusterServers:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _info_cluster(node: RedisServer) -> dict[str, str]:
    text = command(node.host, node.port, "CLUSTER", "INFO")
    fields: dict[str, str] = {}
    for row in str(text).splitlines():
        name, sep, value = row.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


class _Sentinel:
    """One ``redis-server --sentinel`` process with its own config file (Sentinel rewrites
    it)."""

    def __init__(self, primary: RedisServer, name: str, quorum: int) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port(self.host)
        self.directory = Path(tempfile.mkdtemp(prefix="bastion-sentinel-"))
        config = self.directory / "sentinel.conf"
        config.write_text(
            f"bind {self.host}\nport {self.port}\ndir {self.directory}\n"
            f"sentinel monitor {name} {primary.host} {primary.port} {quorum}\n"
            f"sentinel down-after-milliseconds {name} {_NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {name} 5000\n"
            f"sentinel parallel-syncs {name} 1\n",
            encoding="utf-8",
        )
        path = find_redis_server()
        if path is None:
            raise FileNotFoundError("redis-server is needed: apt-get install redis-server")
        log = (self.directory / "sentinel.log").open("ab")
        self.process = subprocess.Popen(  # noqa: S603 (fixed argv)
            [path, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        _wait(lambda: command(self.host, self.port, "PING") == "PONG", 10.0, "Sentinel to start")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class RedisSentinelServers:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels (quorum: a majority)
    watching it under ``name``."""

    def __init__(self, *, name: str = "bastion", replicas: int = 1, sentinels: int = 3) -> None:
        self.name = name
        self._replica_count = replicas
        self._sentinel_count = sentinels
        self.servers: list[RedisServer] = []
        self.sentinels: list[_Sentinel] = []

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:s1,127.0.0.1:s2,.../<name>``."""
        seeds = ",".join(f"{s.host}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{seeds}/{self.name}"

    def primary(self) -> RedisServer:
        """The server the Sentinels name as primary now."""
        sentinel = self.sentinels[0]
        reply = command(
            sentinel.host, sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name
        )
        host, port = str(reply[0]), int(reply[1])
        return next(s for s in self.servers if s.port == port and s.host == host)

    def start(self) -> None:
        primary = RedisServer(extra_args=_FAST_SYNC)
        self.servers.append(primary)
        primary.start()
        for _ in range(self._replica_count):
            follow = ("--replicaof", primary.host, str(primary.port), *_FAST_SYNC)
            replica = RedisServer(extra_args=follow)
            self.servers.append(replica)
            replica.start()
        _wait(
            lambda: all(
                _info(s.host, s.port, "replication").get("master_link_status") == "up"
                for s in self.servers[1:]
            ),
            15.0,
            "the replicas to connect",
        )
        quorum = self._sentinel_count // 2 + 1
        for _ in range(self._sentinel_count):
            self.sentinels.append(_Sentinel(primary, self.name, quorum))
        _wait(self._sentinels_agree, 15.0, "the Sentinels to see each other and the replicas")

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            fields = command(sentinel.host, sentinel.port, "SENTINEL", "MASTER", self.name)
            info = dict(zip(fields[::2], fields[1::2], strict=True))
            if int(info["num-other-sentinels"]) != self._sentinel_count - 1:
                return False
            if int(info["num-slaves"]) != self._replica_count:
                return False
        return True

    def fail_over(self, timeout: float = 30.0) -> RedisServer:
        """SIGKILL the primary and wait until the Sentinels name a replica as the new primary
        and it accepts writes. Returns the new primary."""
        old = self.primary()
        old.kill()

        def promoted() -> bool:
            new = self.primary()
            if new is old:
                return False
            return _info(new.host, new.port, "replication").get("role") == "master"

        _wait(promoted, timeout, "a Sentinel failover")
        return self.primary()

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()
        self.sentinels.clear()
        self.servers.clear()

    def __enter__(self) -> RedisSentinelServers:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
