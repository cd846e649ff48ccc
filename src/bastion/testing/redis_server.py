"""Run a throwaway ``redis-server`` for tests: free port, own directory, durable writes.

::

    with RedisServer() as server:
        store = RedisStore.from_url(server.url)
        ...
        server.stop()     # an outage
        server.restart()  # same port, same directory: acknowledged writes are back

The server is started with ``--appendonly yes --appendfsync always`` and no RDB snapshots, so
every write Redis acknowledged is on disk before the reply and survives :meth:`stop`, and even
:meth:`kill` (a crash). It binds to 127.0.0.1 only.

This helper reads no environment variables: the test suite decides whether to use a server it
was given (``REDIS_URL``) or to start one here, and whether a missing ``redis-server`` skips or
fails.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

__all__ = ["INSTALL_HINT", "RedisServer", "find_redis_server"]

INSTALL_HINT = (
    "redis-server not found on PATH; install it with: apt-get install redis-server "
    "(Debian/Ubuntu), dnf install redis (Fedora) or brew install redis (macOS)"
)

_LOG_NAME = "redis.log"
_PORT_ATTEMPTS = 5


def find_redis_server(executable: str = "redis-server") -> str | None:
    """The absolute path of ``executable`` if it is on PATH (or is a path that exists)."""
    return shutil.which(executable)


def _free_port(host: str) -> int:
    # The port is free now; another process may take it before redis-server binds it, which
    # start() notices in the log and answers with a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """A ``redis-server`` child process on ``host:port`` with data in ``directory``.

    ``port=None`` picks a free port on the first start; ``directory=None`` makes a temporary
    directory that :meth:`close` removes. :meth:`restart` reuses both, so the data persists.
    ``cluster=True`` starts a cluster-enabled node (no slots assigned): enough for
    ``CLUSTER KEYSLOT``, not for storing keys (:class:`~bastion.testing.redis_cluster.
    RedisClusterServers` assigns the slots). ``extra_args`` are appended to the command line
    (``("--replicaof", host, port)`` for a replica).
    """

    def __init__(
        self,
        *,
        executable: str = "redis-server",
        host: str = "127.0.0.1",
        port: int | None = None,
        directory: str | Path | None = None,
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        cluster: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self._executable = executable
        self._host = host
        self._port = port
        self._fixed_port = port is not None
        self._directory = Path(directory) if directory is not None else None
        self._owns_directory = directory is None
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._cluster = cluster
        self._extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RedisServer(host={self._host!r}, port={self._port!r}, {state})"

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("RedisServer has no port yet; call start() first")
        return self._port

    @property
    def directory(self) -> Path:
        if self._directory is None:
            raise RuntimeError("RedisServer has no directory yet; call start() first")
        return self._directory

    @property
    def url(self) -> str:
        """``redis://host:port/0`` for :meth:`RedisStore.from_url` or ``open_store``."""
        return f"redis://{self._host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait (at most ``start_timeout`` s) until it answers PING."""
        if self.running:
            return
        path = find_redis_server(self._executable)
        if path is None:
            raise FileNotFoundError(INSTALL_HINT)
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="bastion-redis-"))
        attempts = 1 if self._fixed_port or self._port is not None else _PORT_ATTEMPTS
        for attempt in range(attempts):
            if self._port is None:
                self._port = _free_port(self._host)
            if self._spawn(path):
                return
            if attempt + 1 < attempts:
                self._port = None  # lost the race for that port: pick another
        raise RuntimeError(
            f"redis-server could not listen on {self._host}:{self._port}; "
            f"log tail:\n{self._log_tail()}"
        )

    def _command(self, path: str) -> list[str]:
        command = [
            path,
            "--bind", self._host,
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        if self._cluster:
            # The cluster bus defaults to port + 10000, impossible above 55535: pick one.
            bus = _free_port(self._host)
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            command += ["--cluster-port", str(bus)]
        return command + list(self._extra_args)

    def _spawn(self, path: str) -> bool:
        """Start the process; False if the port was taken, raise on any other failure."""
        log = self.directory / _LOG_NAME
        offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self._process = subprocess.Popen(  # noqa: S603 (fixed argv, absolute executable)
                self._command(path), stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + self._start_timeout
        while True:
            if self._process.poll() is not None:
                self._process = None
                text = log.read_bytes()[offset:].decode("utf-8", "replace")
                if "Address already in use" in text:
                    return False
                raise RuntimeError(f"redis-server exited at start-up; log tail:\n{text[-2000:]}")
            if self._answers_ping():
                return True
            if time.monotonic() > deadline:
                self._terminate(kill=True)
                raise RuntimeError(
                    f"redis-server did not answer PING on {self._host}:{self.port} within "
                    f"{self._start_timeout} s; log tail:\n{self._log_tail()}"
                )
            time.sleep(0.01)

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection((self._host, self.port), timeout=1.0) as conn:
                conn.sendall(b"PING\r\n")
                reply = conn.recv(64)
        except OSError:
            return False
        # "-LOADING" while the append-only file is replayed: not ready yet.
        return reply.startswith(b"+PONG")

    def _log_tail(self) -> str:
        log = self.directory / _LOG_NAME
        if not log.exists():
            return "(no log)"
        return log.read_bytes()[-2000:].decode("utf-8", "replace")

    def _terminate(self, *, kill: bool) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()  # SIGTERM: Redis shuts down gracefully, AOF flushed
            try:
                process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        """Shut the server down gracefully (SIGTERM). The port and data stay for restart()."""
        self._terminate(kill=False)

    def kill(self) -> None:
        """Kill the server (SIGKILL), as a crash would. Acknowledged writes are on disk."""
        self._terminate(kill=True)

    def restart(self) -> None:
        """Stop if running, then start again on the same port and directory."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove the temporary directory (if this object made it)."""
        self._terminate(kill=False)
        if self._owns_directory and self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
