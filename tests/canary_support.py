"""The secret canary's scanner (tests/test_audit_canary.py): known secrets and the forms a leak
of one could take, and the sinks it reads (log records, raw store bytes, the trail through
bastion and its command line); the paths that feed it are in tests/canary_paths.py.

A secret is searched in every form it could leak in: as it is, URL-encoded (``quote`` and
``quote_plus``: a form body or a query string logged raw), in hex, and in base64 and base64url
at each of the three byte alignments it could have inside a longer encoded value; for secrets
of 12 characters or more also its first and last 12 characters (a truncated "for debugging"
copy). Secrets shorter than that (a TOTP code, a recovery code) are matched as whole tokens
only (not inside a longer run of letters and digits), so a six-digit code does not "appear"
inside a timestamp or a hash.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import secrets
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from bastion.audit import AuditPolicy, AuditTrail
from bastion.cli import main as cli_main
from bastion.core.audit import Outcome

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    import pytest

    from bastion.core.keys import KeyRing
    from bastion.testing.postgres_server import PostgresServer

__all__ = [
    "CLIENT_ADDRESS",
    "PARTIAL",
    "Canaries",
    "Finding",
    "Location",
    "LogCapture",
    "Sink",
    "cli_sinks",
    "control_store",
    "kind_of",
    "open_logs",
    "postgres_sinks",
    "redis_sinks",
    "sqlite_sinks",
    "trail_sinks",
]

CLIENT_ADDRESS = "198.51.100.23"
"""Where the test's requests come from (TEST-NET-2): the trail may hold it only as a hash."""
QUIET = ("httpx", "httpcore")
"""Loggers of the test's own HTTP client (not a sink of the app): kept at WARNING."""

PARTIAL = 12
"""The length of the prefix and suffix searched for each long secret."""

_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One secret found in one sink: which secret, in which form, where, and around what."""

    secret: str
    form: str
    sink: str
    context: str

    def __str__(self) -> str:
        return f"{self.secret} ({self.form}) in {self.sink}: ...{self.context}..."


@dataclass(frozen=True, slots=True)
class Sink:
    """A named piece of output to search: a log record, a response, a database file."""

    name: str
    data: bytes


def _b64_forms(raw: bytes) -> Iterator[tuple[str, bytes]]:
    for offset in range(3):  # the secret starting at each byte alignment of a longer value
        part = raw[offset:]
        whole = len(part) - len(part) % 3  # full 3-byte groups: their characters are fixed
        if whole < 9:
            continue
        standard = base64.b64encode(part[:whole])
        yield f"base64@{offset}", standard
        urlsafe = base64.urlsafe_b64encode(part[:whole])
        if urlsafe != standard:
            yield f"base64url@{offset}", urlsafe


@dataclass(slots=True)
class Canaries:
    """The known secrets of one run, by name (``password``, ``api_key``, ...).

    ``add(name, value, partial=False)`` for a token whose beginning is public by design (a
    JWT's header, the ``brt_<family id>`` of a refresh token, the ``bot_<id>`` of a one-time
    token: the lookup ids the trail records on purpose); its secret part is added on its own.
    """

    _long: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)
    _short: dict[str, re.Pattern[bytes]] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str, *, partial: bool = True) -> str:
        """Register ``value`` as the secret ``name`` (``name#2`` ... when taken); the name."""
        if not value:
            raise ValueError(f"canary {name!r} is empty: the flow did not produce it")
        if value in self.values.values():
            return next(key for key, known in self.values.items() if known == value)
        unique, number = name, 1
        while unique in self.values:
            number += 1
            unique = f"{name}#{number}"
        self.values[unique] = value
        raw = value.encode("utf-8")
        if len(value) < PARTIAL:
            boundary = rb"(?<![0-9A-Za-z])" + re.escape(raw) + rb"(?![0-9A-Za-z])"
            self._short[unique] = re.compile(boundary)
            return unique
        forms: dict[bytes, str] = {raw: "raw"}
        for form, text in (("quote", quote(value, safe="")), ("quote_plus", quote_plus(value))):
            forms.setdefault(text.encode("ascii"), form)
        forms.setdefault(raw.hex().encode("ascii"), "hex")
        for form, encoded in _b64_forms(raw):
            forms.setdefault(encoded, form)
        if partial:
            forms.setdefault(raw[:PARTIAL], f"prefix{PARTIAL}")
            forms.setdefault(raw[-PARTIAL:], f"suffix{PARTIAL}")
        self._long[unique] = [(form, needle) for needle, form in forms.items()]
        return unique

    def add_bytes(self, name: str, raw: bytes) -> str:
        """Register the binary secret ``raw`` (a key's bytes: a database file could hold them
        as they are): its bytes, their hex, and their first and last 12 bytes."""
        unique = self.add(name, raw.hex(), partial=False)
        forms = [("bytes", raw), (f"bytes prefix{PARTIAL}", raw[:PARTIAL])]
        self._long[unique] += [*forms, (f"bytes suffix{PARTIAL}", raw[-PARTIAL:])]
        return unique

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def kinds(self) -> set[str]:
        """The secret kinds registered (names without ``#n`` and ``.part`` suffixes)."""
        return {kind_of(name) for name in self.values}

    def find(self, sink: Sink, *, allowed: Iterable[str] = ()) -> list[Finding]:
        """Every secret (but the ``allowed`` kinds) found in ``sink``, in every form."""
        allow = set(allowed)
        data = sink.data
        found: list[Finding] = []
        for name, forms in self._long.items():
            if kind_of(name) in allow:
                continue
            for form, needle in forms:
                at = data.find(needle)
                if at >= 0:
                    found.append(Finding(name, form, sink.name, _around(data, at, len(needle))))
        for name, pattern in self._short.items():
            if kind_of(name) in allow:
                continue
            at = data.find(self.values[name].encode("utf-8"))  # fast; the pattern decides
            match = None if at < 0 else pattern.search(data, max(0, at - 1))
            if match is not None:
                at = match.start()
                found.append(Finding(name, "raw", sink.name, _around(data, at, match.end() - at)))
        return found

    def find_all(self, sinks: Iterable[Sink]) -> list[Finding]:
        return [finding for sink in sinks for finding in self.find(sink)]


def kind_of(name: str) -> str:
    """The kind of a secret's name: ``api_key#2`` and ``refresh_token.secret`` are an
    ``api_key`` and a ``refresh_token``."""
    return name.partition("#")[0].partition(".")[0]


def _around(data: bytes, at: int, size: int) -> str:
    return data[max(0, at - 60) : at + size + 60].decode("utf-8", "backslashreplace")


class LogCapture(logging.Handler):
    """Every record reaching the root logger, rendered at once (message, arguments, extra
    attributes, formatted exception and stack), so a later change to an argument cannot hide
    what was logged."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.formatter_ = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self.rendered: list[tuple[str, bytes]] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [self.formatter_.format(record), repr(record.msg), repr(record.args)]
        parts += [f"{key}={value!r}" for key, value in record.__dict__.items()]
        parts += [
            str(value) for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES
        ]
        if record.exc_text:
            parts.append(record.exc_text)
        self.rendered.append((record.name, "\n".join(parts).encode("utf-8", "backslashreplace")))

    def sinks(self) -> list[Sink]:
        return [
            Sink(f"log record #{number} of logger {name!r}", data)
            for number, (name, data) in enumerate(self.rendered)
        ]

    def names(self) -> set[str]:
        return {name for name, _ in self.rendered}


# -- the stored trail, read raw ------------------------------------------------------------------

_ROWS_AS_TEXT = (
    "SELECT t::text FROM bastion_audit_events t",
    "SELECT t::text FROM bastion_audit_seals t",
    "SELECT t::text FROM bastion_audit_purges t",
    "SELECT t::text FROM bastion_audit_head t",
)


def sqlite_sinks(path: Path) -> list[Sink]:
    """The database file and its ``-wal`` and ``-shm`` companions, byte for byte (deleted rows
    and pages not yet checkpointed included)."""
    found = []
    for suffix in ("", "-wal", "-shm"):
        file = path.with_name(path.name + suffix)
        if file.exists():
            found.append(Sink(f"SQLite file {file.name}", file.read_bytes()))
    return found


def postgres_sinks(dsn: str, data_directory: Path | None) -> list[Sink]:
    """Every row of the trail's tables as PostgreSQL's own text of the row, and, when the data
    directory is given, the tables' files on disk (after a ``CHECKPOINT``), TOAST included."""
    import psycopg  # noqa: PLC0415 (the postgres extra)

    found = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for query in _ROWS_AS_TEXT:
            text = "\n".join(row[0] for row in conn.execute(query).fetchall())
            found.append(Sink(f"PostgreSQL {query}", text.encode("utf-8")))
        if data_directory is not None:
            conn.execute("CHECKPOINT")
            files = conn.execute(
                "SELECT pg_relation_filepath(c.oid) FROM pg_class c "
                "JOIN pg_class t ON c.oid IN (t.oid, t.reltoastrelid) "
                "WHERE t.relname LIKE 'bastion_audit_%' AND t.relkind = 'r'"
            ).fetchall()
            found.extend(
                Sink(f"PostgreSQL file {file.name}", file.read_bytes())
                for (relative,) in files
                for file in sorted(data_directory.glob(relative + "*"))
            )
    return found


def redis_sinks(url: str, prefix: str) -> list[Sink]:
    """The raw stream entries (``XRANGE``) and every other key under ``prefix``, read by type."""
    import redis  # noqa: PLC0415 (the redis extra)

    client: Any = redis.Redis.from_url(url)
    found = []
    try:
        entries = client.xrange(prefix + "events")
        text = b"\n".join(
            entry_id + b" " + b" ".join(key + b"=" + value for key, value in fields.items())
            for entry_id, fields in entries
        )
        found.append(Sink(f"Redis stream {prefix}events ({len(entries)} entries)", text))
        for key in client.scan_iter(match=prefix + "*"):
            kind = client.type(key)
            if kind == b"string":
                value = client.get(key) or b""
            elif kind == b"hash":
                value = b" ".join(k + b"=" + v for k, v in client.hgetall(key).items())
            elif kind == b"list":
                value = b" ".join(client.lrange(key, 0, -1))
            elif kind == b"zset":
                value = b" ".join(m for m, _ in client.zrange(key, 0, -1, withscores=True))
            elif kind == b"set":
                value = b" ".join(client.smembers(key))
            else:  # the stream, read above
                continue
            found.append(Sink(f"Redis key {key!r}", key + b" " + value))
    finally:
        client.close()
    return found


# -- the stores, through bastion and the command line ------------------------------------------


class Location:
    """A fresh place for a trail of one kind, and how to read everything stored there raw."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        """``kind``: ``sqlite`` (a file in ``tmp_path``), ``postgres`` (a new database on the
        session's server) or ``redis`` (a new prefix on the session's server), both reached
        with a password in the URL."""
        self.kind = kind
        label = uuid.uuid4().hex[:12]
        # The store's password (both test servers accept any: trust and nopass), a secret of
        # its own: the trail, its logs and its errors name the store by its redacted URL.
        self.password = None if kind == "sqlite" else f"pw-{secrets.token_urlsafe(18)}"
        self.read: Callable[[], list[Sink]]
        if kind == "sqlite":
            path = tmp_path / f"audit-{label}.db"
            self.url = f"sqlite:///{path}"
            self.read = lambda: sqlite_sinks(path)
        elif kind == "postgres":
            import psycopg  # noqa: PLC0415 (the postgres extra)
            from psycopg import sql  # noqa: PLC0415

            server: PostgresServer = request.getfixturevalue("postgres_server")
            with psycopg.connect(server.dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"canary_{label}"))
                )
            user, at, where = (
                server.dsn.removeprefix("postgresql://").rsplit("/", 1)[0].partition("@")
            )
            self.url = f"postgresql://{user}:{self.password}{at}{where}/canary_{label}"
            self.read = lambda: postgres_sinks(self.url, server.data)
        else:
            base: str = request.getfixturevalue("redis_url")
            scheme, _, where = base.partition("://")
            if "@" in where:  # REDIS_URL names a server with credentials of its own: keep them
                self.password = None
            else:
                base = f"{scheme}://default:{self.password}@{where}"
            prefix = f"bastion-canary-{label}:"
            self.url = f"{base}?prefix={prefix}"
            self.read = lambda: redis_sinks(base, prefix)


def control_store(location: Location, ring: KeyRing, secret: str) -> list[Sink]:
    """Write ``secret`` into a trail at ``location`` on purpose; what the reader finds there."""
    trail = AuditTrail(AuditPolicy(store=location.url, log=False), keyring=ring, background=False)
    try:
        trail.auditor(aggregation=None).emit(
            "canary_control", outcome=Outcome.SUCCESS, details={"note": secret}
        )
        trail.flush()
        return location.read()
    finally:
        trail.close()


def trail_sinks(url: str, ring: KeyRing) -> tuple[list[Sink], set[str]]:
    """The trail read back through bastion: raw row bodies, query records (plain, ECS,
    OpenTelemetry); and the event names stored. Verification must pass."""
    with AuditTrail.for_tools(url, keyring=ring) as trail:
        assert trail.verify().ok
        rows = trail.backend.rows(0, 100_000)
        records = trail.query(limit=100_000)
    bodies = "\n".join(row.body for row in rows)
    plain = "\n".join(
        json.dumps(r.to_dict()) + json.dumps(r.to_ecs()) + repr(r.to_otel()) for r in records
    )
    sinks = [Sink("trail row bodies", bodies.encode()), Sink("trail query records", plain.encode())]
    return sinks, {r.event for r in records}


def cli_sinks(url: str, capsys: pytest.CaptureFixture[str]) -> list[Sink]:
    """What the run printed (stdout, stderr), then ``bastion audit query`` in each output
    format (the key comes from the environment)."""
    out, err = capsys.readouterr()
    found = [Sink("stdout and stderr of the run", (out + err).encode())]
    for form in ("lines", "ecs", "table"):
        assert (
            cli_main(["audit", "query", "--store", url, "--format", form, "--limit", "100000"]) == 0
        )
        out, err = capsys.readouterr()
        assert out.count("\n") > 20, (form, out, err)
        found.append(Sink(f"bastion audit query --format {form}", (out + err).encode()))
    return found


@contextlib.contextmanager
def open_logs() -> Iterator[LogCapture]:
    """Every record of every logger at DEBUG, at the root: the levels, ``disabled`` and
    ``propagate`` of existing loggers are opened up while inside, and restored after."""
    root = logging.getLogger()
    handler = LogCapture()
    saved = [(root, root.level, root.disabled, root.propagate)]
    root.setLevel(logging.DEBUG)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        saved.append((logger, logger.level, logger.disabled, logger.propagate))
        quiet = name.split(".", 1)[0] in QUIET
        logger.setLevel(logging.WARNING if quiet else logging.NOTSET)
        logger.disabled, logger.propagate = False, True
    for name in QUIET:  # made now if absent, so that children created later inherit it
        quiet_logger = logging.getLogger(name)
        saved.append((quiet_logger, quiet_logger.level, quiet_logger.disabled, True))
        quiet_logger.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level, disabled, propagate in saved:
            logger.setLevel(level)
            logger.disabled, logger.propagate = disabled, propagate
