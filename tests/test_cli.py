"""The ``bastion`` command line, run as a real process: store, sessions, password, secret.

Every command runs through ``python -m bastion.cli`` against real stores (SQLite files in
tmp_path, the session's Redis server). Errors must be one line on stderr with a non-zero exit
and no traceback.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from bastion.core.clock import FrozenClock
from bastion.core.sessions import SessionConfig, record_key, session_handle
from bastion.engine.sessions import SessionEngine
from bastion.passwords import PasswordHasher
from bastion.stores import open_store

if TYPE_CHECKING:
    from pathlib import Path

STRONG = "correct horse battery staple violin"


def bastion(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def make_store(path: Path) -> str:
    """A SQLite store file with one key in it; its URL."""

    async def run() -> None:
        store = open_store(sqlite_url(path))
        await store.set("seed", b"1")
        await store.aclose()

    asyncio.run(run())
    return sqlite_url(path)


# -- help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ((), "sessions"),
        (("store", "ping"), "one round trip"),
        (("store", "gc"), "Redis expires"),
        (("sessions", "list"), "--store URL"),
        (("sessions", "revoke"), "--handle"),
        (("password", "check"), "Exit 0 when acceptable, 1 when refused"),
        (("password", "hash"), "Argon2id"),
        (("check",), "--min-grade"),
    ],
)
def test_help_is_clear(command: tuple[str, ...], expected: str) -> None:
    done = bastion(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert expected in " ".join(done.stdout.split())


def test_unknown_command_is_a_usage_error() -> None:
    done = bastion("frobnicate")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "invalid choice" in done.stderr


# -- store ---------------------------------------------------------------------------------


def test_store_ping_sqlite(tmp_path: Path) -> None:
    url = make_store(tmp_path / "b.db")
    done = bastion("store", "ping", url)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"ok sqlite:///\S+ \(\d+\.\d\d ms\)\n", done.stdout), done.stdout


def test_store_ping_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    done = bastion("store", "ping", sqlite_url(path))
    assert_one_line_error(done, 1, "bastion store ping:", "no SQLite database at")
    assert not path.exists()


@pytest.mark.redis
def test_store_ping_redis(redis_url: str) -> None:
    done = bastion("store", "ping", redis_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok redis://")


def test_store_ping_unreachable_redis() -> None:
    done = bastion("store", "ping", "redis://127.0.0.1:1/0")
    assert_one_line_error(done, 1, "bastion store ping:", "unavailable")


def test_store_ping_bad_url() -> None:
    done = bastion("store", "ping", "ftp://example.org/x")
    assert_one_line_error(done, 1, "scheme 'ftp' is not supported")


def test_store_ping_never_echoes_a_redis_password() -> None:
    done = bastion("store", "ping", "redis://:hunter2secret@127.0.0.1:1/0")
    assert done.returncode == 1
    assert "hunter2secret" not in done.stderr + done.stdout


def test_store_gc_sqlite_purges_expired_rows(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "gc.db")
    clock = FrozenClock(1_000_000.0)

    async def seed() -> None:
        store = open_store(url, clock=clock, purge_every=1_000_000)
        await store.set("old-1", b"x", ttl=10)
        await store.set("old-2", b"x", ttl=10)
        await store.set("live", b"x", ttl=None)
        await store.aclose()

    asyncio.run(seed())  # written at t=1e6 with a 10 s TTL: long expired by the wall clock
    done = bastion("store", "gc", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged 2 expired entries from sqlite:///")
    again = bastion("store", "gc", url)
    assert again.stdout.startswith("purged 0 expired entries")

    async def left() -> bytes | None:
        store = open_store(url)
        try:
            return await store.get("live")
        finally:
            await store.aclose()

    assert asyncio.run(left()) == b"x"


@pytest.mark.redis
def test_store_gc_redis_says_redis_expires_keys(redis_url: str) -> None:
    done = bastion("store", "gc", redis_url)
    assert done.returncode == 0, done.stderr
    assert "Redis expires keys itself" in done.stdout


def test_store_gc_memory_says_nothing_to_do() -> None:
    done = bastion("store", "gc", "memory://")
    assert done.returncode == 0
    assert done.stdout.startswith("nothing to do: a memory:// store")


def test_store_gc_missing_sqlite(tmp_path: Path) -> None:
    done = bastion("store", "gc", sqlite_url(tmp_path / "nope.db"))
    assert_one_line_error(done, 1, "bastion store gc:", "no SQLite database")


# -- sessions ------------------------------------------------------------------------------


async def _login_sessions(url: str, user: str, count: int) -> list[str]:
    store = open_store(url)
    try:
        engine = SessionEngine(store, config=SessionConfig())
        return [
            await engine.create(
                {"n": i}, user_id=user, client_ip=f"192.0.2.{i}", user_agent=f"agent/{i}"
            )
            for i in range(count)
        ]
    finally:
        await store.aclose()


async def _exists(url: str, session_id: str) -> bool:
    store = open_store(url)
    try:
        return await store.get(record_key(session_handle(session_id))) is not None
    finally:
        await store.aclose()


def _sessions_round_trip(url: str, user: str) -> None:
    ids = asyncio.run(_login_sessions(url, user, 3))
    other = asyncio.run(_login_sessions(url, "someone-else", 1))
    done = bastion("sessions", "list", user, "--store", url)
    assert done.returncode == 0, done.stderr
    rows = done.stdout.strip().splitlines()
    assert rows[0].startswith("HANDLE")
    assert len(rows) == 4
    for i, session_id in enumerate(ids):
        assert session_handle(session_id) in done.stdout
        assert session_id not in done.stdout  # the ID itself is the credential: never shown
        assert f"192.0.2.{i}" in done.stdout
        assert f"agent/{i}" in done.stdout

    one = bastion("sessions", "revoke", user, "--store", url, "--handle", session_handle(ids[0]))
    assert one.stdout.strip() == f"revoked 1 session of user {user!r}"
    assert not asyncio.run(_exists(url, ids[0]))
    assert asyncio.run(_exists(url, ids[1]))

    rest = bastion("sessions", "revoke", user, "--store", url)
    assert rest.returncode == 0, rest.stderr
    assert rest.stdout.strip() == f"revoked 2 sessions of user {user!r}"
    assert not any(asyncio.run(_exists(url, session_id)) for session_id in ids)
    assert asyncio.run(_exists(url, other[0]))  # another user's session is untouched
    empty = bastion("sessions", "list", user, "--store", url)
    assert empty.stdout.strip() == f"no sessions for user {user!r}"


def test_sessions_list_and_revoke_sqlite(tmp_path: Path) -> None:
    _sessions_round_trip(make_store(tmp_path / "s.db"), "alice")


@pytest.mark.redis
def test_sessions_list_and_revoke_redis(redis_url: str, redis_prefix: str) -> None:
    separator = "&" if "?" in redis_url else "?"
    _sessions_round_trip(f"{redis_url}{separator}prefix={redis_prefix}", "bob")


def test_sessions_unreachable_store() -> None:
    done = bastion("sessions", "list", "alice", "--store", "redis://127.0.0.1:1/0")
    assert_one_line_error(done, 1, "bastion sessions list:", "unavailable")


def test_sessions_store_is_required() -> None:
    done = bastion("sessions", "list", "alice")
    assert done.returncode == 2
    assert "--store" in done.stderr


# -- password ------------------------------------------------------------------------------


def test_password_check_accepts_a_strong_password() -> None:
    done = bastion("password", "check", stdin=STRONG + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok: the password meets the policy"


def test_password_check_refuses_with_reasons() -> None:
    done = bastion("password", "check", stdin="password\n")
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == "refused:"
    assert "too_short" in done.stdout
    assert "blocklisted" in done.stdout


def test_password_check_user_words_and_second_factor() -> None:
    done = bastion(
        "password", "check", "--user-input", "violinist", stdin="violinist-at-night-99\n"
    )
    assert done.returncode == 1
    assert "context_word" in done.stdout
    short = bastion("password", "check", "--second-factor", stdin="t7#Kq9vZ\n")
    assert short.returncode == 0, short.stdout
    assert bastion("password", "check", stdin="t7#Kq9vZ\n").returncode == 1


def test_password_check_takes_no_password_argument() -> None:
    done = bastion("password", "check", STRONG)
    assert done.returncode == 2
    assert STRONG not in done.stdout


def test_password_check_empty_stdin() -> None:
    done = bastion("password", "check", stdin="")
    assert_one_line_error(done, 2, "bastion password check:", "no password on stdin")


def test_password_hash_verifies() -> None:
    done = bastion("password", "hash", stdin=STRONG + "\r\n")
    assert done.returncode == 0, done.stderr
    stored = done.stdout.strip()
    assert stored.startswith("$argon2id$")
    hasher = PasswordHasher()
    assert hasher.verify(stored, STRONG)
    assert not hasher.verify(stored, STRONG + "\r")


def test_password_hash_too_long_is_one_line() -> None:
    done = bastion("password", "hash", stdin="x" * 5000 + "\n")
    assert_one_line_error(done, 1, "bastion password hash:")
    assert "xxxxxxxx" not in done.stderr


# -- secret --------------------------------------------------------------------------------


def test_secret_too_short_is_one_line() -> None:
    done = bastion("secret", "--bytes", "8")
    assert_one_line_error(done, 2, "bastion secret:", "--bytes must be at least 32")
