"""What both Redis back ends (key-value store, rate limits) read from a URL and set on redis-py.

One URL configures both: ``redis://host:6379/0?prefix=app:`` names the server, the database
and bastion's key prefix. redis-py passes every query parameter it does not know on to the
socket, so bastion's own parameters are taken out first with :func:`pop_query`.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bastion.errors import ConfigurationError

__all__ = ["DEFAULT_PREFIX", "REDIS_SCHEMES", "pop_query", "without_maintenance_notifications"]

DEFAULT_PREFIX: Final = "bastion:"
"""Prepended to every key, so bastion's keys never collide with an application's."""

REDIS_SCHEMES: Final = frozenset({"redis", "rediss", "unix"})


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
