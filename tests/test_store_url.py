"""open_store: URL parsing for memory, sqlite and the errors for everything else."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.clock import FrozenClock, system_clock
from bastion.errors import ConfigurationError
from bastion.stores import open_store
from bastion.stores.memory import MemoryStore
from bastion.stores.sqlite import SQLiteStore
from bastion.stores.url import redact_url

if TYPE_CHECKING:
    from pathlib import Path


def test_memory_url() -> None:
    store = open_store("memory://")
    assert isinstance(store, MemoryStore)
    assert store.max_entries == 100_000


def test_memory_url_with_max_entries_and_clock() -> None:
    clock = FrozenClock()
    store = open_store("memory://?max_entries=5", clock=clock)
    assert isinstance(store, MemoryStore)
    assert store.max_entries == 5
    assert store._clock is clock


def test_memory_max_entries_as_keyword() -> None:
    store = open_store("memory://", max_entries=7)
    assert isinstance(store, MemoryStore)
    assert store.max_entries == 7


def test_scheme_is_case_insensitive() -> None:
    assert isinstance(open_store("MEMORY://"), MemoryStore)


def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/bastion.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "data" / "bastion.db"
    assert store._clock is system_clock


def test_sqlite_absolute_path_and_options(tmp_path: Path) -> None:
    clock = FrozenClock()
    store = open_store(
        f"sqlite:///{tmp_path}/my%20store.db?timeout=1.5&synchronous=NORMAL&purge_every=0",
        clock=clock,
    )
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "my store.db"
    assert store._timeout == 1.5
    assert store._synchronous == "normal"
    assert store._purge_every == 0
    assert store._clock is clock


@pytest.mark.asyncio
async def test_sqlite_url_opens_a_working_store(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/x.db")
    try:
        await store.set("k", b"v")
        assert await store.get("k") == b"v"
    finally:
        await store.aclose()
    assert (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "needs a file name"),
        ("sqlite:///", "needs a file name"),
        ("sqlite:////tmp/dir/", "needs a file name"),
        ("sqlite://host/x.db", "has no host"),
        ("sqlite:///x.db#frag", "fragment"),
        ("sqlite:///x.db?timeout=soon", "timeout='soon'"),
        ("sqlite:///x.db?timeout=inf", "timeout='inf'"),
        ("sqlite:///x.db?timeout=0", "timeout"),
        ("sqlite:///x.db?synchronous=off", "synchronous"),
        ("sqlite:///x.db?max_entries=3", "no option 'max_entries'"),
        ("sqlite:///x.db?timeout=1&timeout=2", "given twice"),
        ("sqlite:///x.db?timeout", "malformed"),
        ("memory://host", "no host or path"),
        ("memory:///path", "no host or path"),
        ("memory://?max_entries=lots", "max_entries='lots'"),
        ("memory://?max_entries=0", "max_entries"),
        ("memory://?timeout=3", "accepted options: max_entries"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_store(url)


def test_option_in_url_and_keyword_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="both in the URL and as a keyword") as info:
        open_store("memory://?max_entries=3", max_entries=4)
    assert info.value.setting == "max_entries"


def test_unknown_keyword_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no option 'prefix'"):
        open_store("memory://", prefix="app:")


def test_unknown_scheme_names_it_and_lists_the_forms() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store("mysql://admin:hunter2@db.example/app")
    message = str(info.value)
    assert "'mysql'" in message
    forms = ("memory://", "sqlite:///", "sqlite:////", "redis://", "rediss://", "postgresql://")
    for form in forms:
        assert form in message
    assert "hunter2" not in message
    assert "admin" not in message
    assert info.value.setting == "store_url"


def test_missing_scheme_is_refused_without_echoing_the_url() -> None:
    with pytest.raises(ConfigurationError, match="no scheme") as info:
        open_store("/var/lib/hunter2.db")
    assert "hunter2" not in str(info.value)


def test_non_text_url_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be a str"):
        open_store(b"memory://")  # type: ignore[arg-type]


@given(suffix=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", max_size=20))
def test_no_error_ever_shows_the_password(suffix: str) -> None:
    password = "S3cr3t" + suffix  # the marker keeps it out of the fixed message text
    urls = [
        f"mysql://user:{password}@host/db",
        f"sqlite://user:{password}@host/x.db",
        f"memory://user:{password}@host",
        f"redis//:{password}@host",
        f"{password}",
    ]
    for url in urls:
        with pytest.raises(ConfigurationError) as info:
            open_store(url)
        assert password not in str(info.value), url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@cache.internal:6380/1?prefix=x", "redis://***@cache.internal:6380/1"),
        ("rediss://user:pw@[::1]:6379/0", "rediss://***@[::1]:6379/0"),
        ("sqlite:///bastion-demo.db", "sqlite:///bastion-demo.db"),
        ("memory://?max_entries=5", "memory://"),
        ("redis://host:99999999/0", "<unparsable store URL>"),
    ],
)
def test_redact_url_hides_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_postgres_urls_open_the_postgres_store_without_connecting() -> None:
    from bastion.stores.postgres import PostgresStore  # noqa: PLC0415

    for url in ("postgres://admin:hunter2@db.example/app", "postgresql://db.example/app"):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        assert "hunter2" not in repr(store)
