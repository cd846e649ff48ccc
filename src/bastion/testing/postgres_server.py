"""Run a throwaway PostgreSQL server for tests: its own cluster, a free port, gone at exit.

::

    with PostgresServer() as server:
        engine = sqlalchemy.create_engine(server.sqlalchemy_url)
        ...

:meth:`start` runs ``initdb`` in a temporary directory and starts ``postgres`` on
``127.0.0.1`` (TCP only: no Unix socket), with trust authentication for the one superuser
``bastion`` and durability switched off (``fsync=off``): the cluster lives for one test run and
is deleted by :meth:`close`, so speed matters more than surviving a power cut.

PostgreSQL refuses to run as root. When the tests run as root (CI containers do), the cluster
directory is handed to the ``postgres`` system account and both programs run under it (the
child process drops to that user before ``exec``).

``initdb`` is looked up on PATH, then under ``/usr/lib/postgresql/<version>/bin`` (Debian and
Ubuntu keep it off PATH), newest version first; ``postgres`` is taken from the same directory.
A missing PostgreSQL is an error naming how to install it: this helper never skips. Like
:class:`~bastion.testing.redis_server.RedisServer` it reads no environment variables; the test
suite decides whether a missing server skips (locally) or fails (``CI=true``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["INSTALL_HINT", "PostgresServer", "find_initdb"]

INSTALL_HINT = (
    "PostgreSQL not found (no initdb on PATH or under /usr/lib/postgresql/*/bin); install it "
    "with: apt-get install postgresql (Debian/Ubuntu), dnf install postgresql-server (Fedora) "
    "or brew install postgresql (macOS)"
)

USER = "bastion"
"""The superuser ``initdb`` creates; it connects without a password (trust, loopback only)."""

DATABASE = "postgres"

_SYSTEM_USER = "postgres"
_LOG_NAME = "postgres.log"
_READY = "database system is ready to accept connections"
_PORT_ATTEMPTS = 5
_DEBIAN_ROOT = Path("/usr/lib/postgresql")


def _version_key(path: Path) -> tuple[int, ...]:
    # "15" or "9.6": newest first when sorted in reverse; a name that is no version sorts last.
    try:
        return tuple(int(part) for part in path.name.split("."))
    except ValueError:
        return (-1,)


def find_initdb() -> Path | None:
    """The ``initdb`` to use: PATH first, then Debian's versioned directories, newest first."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve()
    if _DEBIAN_ROOT.is_dir():
        for version in sorted(_DEBIAN_ROOT.iterdir(), key=_version_key, reverse=True):
            candidate = version / "bin" / "initdb"
            if candidate.is_file():
                return candidate
    return None


def _free_port(host: str) -> int:
    # Free now; if another process takes it before postgres binds, start() picks another.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """A ``postgres`` child process on ``host:port`` serving a cluster made by ``initdb``.

    ``port=None`` picks a free port. The cluster is made in a temporary directory that
    :meth:`close` removes with everything in it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self._fixed_port = port is not None
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._user: str | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"PostgresServer(host={self._host!r}, port={self._port!r}, {state})"

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("PostgresServer has no port yet; call start() first")
        return self._port

    @property
    def directory(self) -> Path:
        if self._directory is None:
            raise RuntimeError("PostgresServer has no directory yet; call start() first")
        return self._directory

    @property
    def dsn(self) -> str:
        """A libpq connection URI (``psycopg.connect(server.dsn)``)."""
        return f"postgresql://{USER}@{self._host}:{self.port}/{DATABASE}"

    @property
    def sqlalchemy_url(self) -> str:
        """The same database for SQLAlchemy through psycopg 3."""
        return f"postgresql+psycopg://{USER}@{self._host}:{self.port}/{DATABASE}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Make the cluster (once) and start the server; wait until it accepts connections."""
        if self.running:
            return
        initdb = find_initdb()
        if initdb is None:
            raise FileNotFoundError(INSTALL_HINT)
        postgres = initdb.with_name("postgres")
        if not postgres.is_file():
            raise FileNotFoundError(f"initdb found at {initdb} but no postgres beside it")
        if self._directory is None:
            self._make_cluster(initdb)
        attempts = 1 if self._fixed_port else _PORT_ATTEMPTS
        for attempt in range(attempts):
            if self._port is None:
                self._port = _free_port(self._host)
            if self._spawn(postgres):
                return
            if attempt + 1 < attempts:
                self._port = None  # lost the race for that port: pick another
        raise RuntimeError(
            f"postgres could not listen on {self._host}:{self._port}; log tail:\n{self._log_tail()}"
        )

    def _make_cluster(self, initdb: Path) -> None:
        directory = Path(tempfile.mkdtemp(prefix="bastion-postgres-"))
        self._directory = directory
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(_SYSTEM_USER)
            except KeyError:
                self.close()
                raise RuntimeError(
                    "running as root, and PostgreSQL refuses root: no 'postgres' system user "
                    "to run it as (create one, or run the tests as another user)"
                ) from None
            os.chown(directory, account.pw_uid, account.pw_gid)
            self._user = _SYSTEM_USER
        command = [
            str(initdb),
            "--pgdata", str(self.data),
            "--username", USER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--no-locale",
            "--no-sync",
        ]  # fmt: skip
        result = self._run(command)
        if result.returncode != 0:
            output = result.stdout.decode("utf-8", "replace")[-2000:]
            self.close()
            raise RuntimeError(f"initdb failed (exit {result.returncode}):\n{output}")

    @property
    def data(self) -> Path:
        """The cluster's data directory (``PGDATA``)."""
        return self.directory / "data"

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(  # noqa: S603 (fixed argv, absolute executable)
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
            user=self._user,
            group=self._user,
            extra_groups=[] if self._user is not None else None,
            cwd=self.directory,
        )

    def _spawn(self, postgres: Path) -> bool:
        """Start the server; False if the port was taken, raise on any other failure."""
        log = self.directory / _LOG_NAME
        offset = log.stat().st_size if log.exists() else 0
        command = [
            str(postgres),
            "-D", str(self.data),
            "-h", self._host,
            "-p", str(self.port),
            "-c", "unix_socket_directories=",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=20",
            "-c", "shared_buffers=16MB",
        ]  # fmt: skip
        with log.open("ab") as out:
            if self._user is not None:
                account = pwd.getpwnam(self._user)
                os.chown(log, account.pw_uid, account.pw_gid)
            self._process = subprocess.Popen(  # noqa: S603 (fixed argv, absolute executable)
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self._user,
                group=self._user,
                extra_groups=[] if self._user is not None else None,
                cwd=self.directory,
            )
        deadline = time.monotonic() + self._start_timeout
        while True:
            text = log.read_bytes()[offset:].decode("utf-8", "replace")
            if self._process.poll() is not None:
                self._process = None
                if "Address already in use" in text:
                    return False
                raise RuntimeError(f"postgres exited at start-up; log tail:\n{text[-2000:]}")
            if _READY in text and self._accepts():
                return True
            if time.monotonic() > deadline:
                self._terminate()
                raise RuntimeError(
                    f"postgres did not accept connections on {self._host}:{self.port} within "
                    f"{self._start_timeout} s; log tail:\n{text[-2000:]}"
                )
            time.sleep(0.02)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self._host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _log_tail(self) -> str:
        log = self.directory / _LOG_NAME
        if not log.exists():
            return "(no log)"
        return log.read_bytes()[-2000:].decode("utf-8", "replace")

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: open sessions are ended, not waited for.
            process.send_signal(2)
            try:
                process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def stop(self) -> None:
        """Shut the server down (fast shutdown). The cluster stays for another start()."""
        self._terminate()

    def close(self) -> None:
        """Stop the server and delete the cluster directory."""
        self._terminate()
        if self._directory is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._directory)
            self._directory = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
