"""Store URLs: ``open_store(url)`` picks and configures a store.

Accepted forms::

    memory://                      MemoryStore (query: max_entries)
    sqlite:///relative/path.db     SQLiteStore, path relative to the working directory
    sqlite:////absolute/path.db    SQLiteStore, absolute path (query: timeout, synchronous,
                                   purge_every, inline_reads)
    redis://[:password@]host:port/db     RedisStore (query options: see bastion.stores.redis)
    rediss://[:password@]host:port/db    the same over TLS
    redis+cluster://[:password@]host:port,host:port,...
                                   RedisStore on a Redis Cluster (the hosts are seeds)
    redis+sentinel://[:password@]host:26379,host:26379/service
                                   RedisStore on the primary that Sentinel names
    postgresql://user:password@host:5432/db   PostgresStore (query: prefix, timeout,
                                   pool_size, purge_every, prepare; others go to libpq)

Options may come from the query string or as keyword arguments, not both for one name.
Everything wrong with a URL is a :class:`~bastion.errors.ConfigurationError` that names the
part at fault. Error messages never repeat the URL itself, since a Redis URL may carry a
password. The Redis store (and the ``redis`` package) is imported only for a Redis URL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from bastion.core.clock import system_clock
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.clock import Clock
    from bastion.stores.base import Store

__all__ = ["ACCEPTED_FORMS", "StoreURL", "open_store", "parse_store_url", "redact_url"]

ACCEPTED_FORMS: Final = (
    "memory://",
    "sqlite:///relative/path.db",
    "sqlite:////absolute/path.db",
    "redis://host:6379/0",
    "rediss://host:6379/0",
    "redis+cluster://host:6379,host:6380",
    "redis+sentinel://host:26379,host:26380/service",
    "postgresql://user@host:5432/db",
)


MEMORY_OPTIONS: Final[dict[str, Callable[[str], Any]]] = {"max_entries": int}
"""Options of a ``memory://`` URL (query or keyword), with the conversion from query text."""

SQLITE_OPTIONS: Final[dict[str, Callable[[str], Any]]] = {
    "timeout": float,
    "synchronous": str.lower,
    "purge_every": int,
    "inline_reads": bool,
}
"""Options of a ``sqlite://`` URL (the rate-limit counters share ``timeout`` and
``purge_every``; see :mod:`bastion.stores._sqlite_ratelimit` on ``synchronous``)."""


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL: which store, where, and its settings (query and keywords merged,
    converted, unknown names refused). ``url`` is the original text for Redis, whose query
    the Redis store reads itself."""

    scheme: Literal["memory", "sqlite", "redis", "postgresql"]
    path: str | None
    settings: dict[str, Any]
    url: str


def parse_store_url(
    url: str, options: dict[str, Any], *, extra: frozenset[str] = frozenset()
) -> StoreURL:
    """Parse ``url`` the one way :func:`open_store` does, for tools that need its parts.

    ``extra`` names further keyword options a caller accepts (not in the query). Raises
    :class:`~bastion.errors.ConfigurationError` naming the part at fault, an unknown option
    included.
    """
    if not isinstance(url, str):
        raise ConfigurationError(
            f"store URL must be a str, got {type(url).__name__}", setting="store_url"
        )
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ConfigurationError(
            "store URL is malformed; " + _accepted(), setting="store_url"
        ) from None
    scheme = parts.scheme.lower()
    if scheme in {"redis", "rediss", "unix", "redis+cluster", "redis+sentinel"}:
        return StoreURL("redis", None, dict(options), url.strip())
    if scheme in {"postgresql", "postgres"}:
        return StoreURL("postgresql", None, dict(options), url.strip())
    if scheme == "memory":
        if parts.netloc or parts.path or parts.fragment:
            raise ConfigurationError(
                "a memory:// store URL takes no host or path (only ?max_entries=N)",
                setting="store_url",
            )
        settings = _merge("memory://", parts.query, options, MEMORY_OPTIONS, extra)
        return StoreURL("memory", None, settings, url.strip())
    if scheme == "sqlite":
        path = _sqlite_path(parts.netloc, parts.path, parts.fragment)
        settings = _merge("sqlite://", parts.query, options, SQLITE_OPTIONS, extra)
        return StoreURL("sqlite", path, settings, url.strip())
    if not scheme:
        raise ConfigurationError("store URL has no scheme; " + _accepted(), setting="store_url")
    raise ConfigurationError(
        f"store URL scheme {scheme!r} is not supported; " + _accepted(), setting="store_url"
    )


def open_store(url: str, *, clock: Clock | None = None, **options: Any) -> Store:
    """Open the store that ``url`` names; see the module docstring for the forms.

    ``clock`` defaults to the wall clock. ``options`` are passed to the store's constructor
    (``max_entries`` for memory; ``timeout``, ``synchronous``, ``purge_every``, ``inline_reads``
    for SQLite; the Redis store's ``from_url`` options for Redis).
    """
    parsed = parse_store_url(url, options)
    if parsed.scheme == "redis":
        return _open_redis(parsed.url, clock, parsed.settings)
    if parsed.scheme == "postgresql":
        return _open_postgres(parsed.url, clock, parsed.settings)
    if parsed.scheme == "memory":
        from bastion.stores.memory import MemoryStore  # noqa: PLC0415 (lazy, like the others)

        return MemoryStore(clock=clock or system_clock, **parsed.settings)
    from bastion.stores.sqlite import SQLiteStore  # noqa: PLC0415 (lazy, like the others)

    return SQLiteStore(parsed.path or "", clock=clock or system_clock, **parsed.settings)


def redact_url(url: str) -> str:
    """``url`` fit for a log line or a banner: credentials replaced by ``***``, query dropped.

    Never raises: an unparsable URL comes back as ``"<unparsable store URL>"``.
    """
    try:
        parts = urlsplit(url.strip())
        if parts.scheme.lower() in {"redis+cluster", "redis+sentinel"}:
            hosts = parts.netloc.rpartition("@")[2]
            secret = "***@" if "@" in parts.netloc else ""
            return f"{parts.scheme}://{secret}{hosts}{parts.path}"
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable store URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = ("***@" if "@" in parts.netloc else "") + host + (f":{port}" if port else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


def _accepted() -> str:
    return "use one of: " + ", ".join(ACCEPTED_FORMS)


def _open_redis(url: str, clock: Clock | None, options: dict[str, Any]) -> Store:
    try:
        from bastion.stores.redis import RedisStore  # noqa: PLC0415 (needs the redis extra)
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] != "redis":
            raise
        raise ConfigurationError(
            "a redis:// store URL needs the redis package; install bastion[redis]",
            setting="store_url",
        ) from None
    return RedisStore.from_url(url, clock=clock, **options)


def _open_postgres(url: str, clock: Clock | None, options: dict[str, Any]) -> Store:
    try:
        from bastion.stores.postgres import PostgresStore  # noqa: PLC0415 (the postgres extra)
    except ImportError as exc:
        if exc.name is None or exc.name.split(".")[0] not in {"psycopg", "psycopg_pool"}:
            raise
        raise ConfigurationError(
            "a postgresql:// store URL needs psycopg and psycopg-pool; install bastion[postgres]",
            setting="store_url",
        ) from None
    return PostgresStore.from_url(url, clock=clock, **options)


def _sqlite_path(netloc: str, path: str, fragment: str) -> str:
    if netloc:
        raise ConfigurationError(
            "a sqlite:// store URL has no host: write sqlite:///relative/path.db (three "
            "slashes) or sqlite:////absolute/path.db (four)",
            setting="store_url",
        )
    if fragment:
        raise ConfigurationError(
            "a sqlite:// store URL takes no #fragment; percent-encode '#' in the file name",
            setting="store_url",
        )
    # urlsplit leaves "/relative.db" for three slashes and "//absolute.db" for four.
    file_path = unquote(path[1:]) if path.startswith("/") else ""
    if not file_path or file_path.endswith("/"):
        raise ConfigurationError(
            "a sqlite:// store URL needs a file name: sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db",
            setting="store_url",
        )
    return file_path


def _merge(
    form: str,
    query: str,
    options: dict[str, Any],
    accepted: dict[str, Callable[[str], Any]],
    extra: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Combine query options (converted from text) with keyword options, refusing unknowns."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigurationError(
            f"the query string of a {form} store URL is malformed; write ?name=value&name=value",
            setting="store_url",
        ) from None
    settings: dict[str, Any] = {}
    for name, text in pairs:
        if name not in accepted:
            raise _unknown_option(form, name, accepted)
        if name in settings:
            raise ConfigurationError(f"store URL option {name!r} is given twice", setting=name)
        try:
            settings[name] = _CONVERT.get(accepted[name], accepted[name])(text)
        except ValueError:
            raise ConfigurationError(
                f"store URL option {name}={text!r} is not a valid value for {name}",
                setting=name,
            ) from None
    for name, value in options.items():
        if name not in accepted and name not in extra:
            raise _unknown_option(form, name, {**accepted, **dict.fromkeys(extra)})
        if name in settings:
            raise ConfigurationError(
                f"store option {name!r} is given both in the URL and as a keyword argument; "
                "give it once",
                setting=name,
            )
        settings[name] = value
    return settings


def _unknown_option(form: str, name: str, accepted: dict[str, Any]) -> ConfigurationError:
    return ConfigurationError(
        f"{form} stores have no option {name!r}; accepted options: {', '.join(sorted(accepted))}",
        setting=name,
    )


def _int(text: str) -> int:
    return int(text, 10)


def _bool(text: str) -> bool:
    folded = text.strip().lower()
    if folded in {"true", "1", "yes", "on"}:
        return True
    if folded in {"false", "0", "no", "off"}:
        return False
    raise ValueError(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


# Query text is converted by these (the option tables name the plain types for readability).
_CONVERT: Final[dict[Callable[[str], Any], Callable[[str], Any]]] = {
    int: _int,
    float: _float,
    bool: _bool,
}
