"""``open_backend(url)``: the audit backend a URL names.

::

    sqlite:///relative/audit.db      SQLiteAuditBackend (query: synchronous, timeout)
    sqlite:////absolute/audit.db
    postgresql://user@host:5432/db   PostgresAuditBackend (libpq URL, passed to psycopg)
    postgres://...                   the same
    redis://host:6379/0              RedisAuditBackend (query: prefix, timeout)
    rediss://host:6379/0             the same over TLS

Messages never repeat the URL (it may carry a password), only its redacted form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from bastion.errors import ConfigurationError
from bastion.stores.url import redact_url

if TYPE_CHECKING:
    from bastion.engine.audit.backend import AuditBackend

__all__ = ["AUDIT_URL_FORMS", "open_backend"]

AUDIT_URL_FORMS: Final = (
    "sqlite:///relative/audit.db",
    "sqlite:////absolute/audit.db",
    "postgresql://user@host:5432/db",
    "redis://host:6379/0",
)


def _options(query: str, allowed: frozenset[str], url: str) -> dict[str, str]:
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigurationError(
            f"audit store URL {redact_url(url)} has unknown options {unknown}; accepted: "
            f"{sorted(allowed)}",
            setting="store",
        )
    return options


def _seconds(options: dict[str, str], url: str) -> float:
    text = options.get("timeout", "5")
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 300:  # five minutes: longer is a mistake
        raise ConfigurationError(
            f"timeout in {redact_url(url)} must be seconds above 0 and at most 300",
            setting="store",
        )
    return value


def open_backend(url: str) -> AuditBackend:
    """The backend for ``url`` (see the module docstring); :class:`ConfigurationError` for
    a URL of another form. A backend's driver is imported only when its URL is used."""
    if not isinstance(url, str):
        raise ConfigurationError("the audit store must be a URL string", setting="store")
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        raise ConfigurationError("the audit store URL cannot be parsed", setting="store") from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        options = _options(parts.query, frozenset({"synchronous", "timeout"}), url)
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if parts.netloc or not path:
            raise ConfigurationError(
                "a SQLite audit store is sqlite:///relative.db or sqlite:////absolute.db",
                setting="store",
            )
        from bastion.engine.audit.sqlite import SQLiteAuditBackend  # noqa: PLC0415

        return SQLiteAuditBackend(
            path,
            timeout=_seconds(options, url),
            synchronous=options.get("synchronous", "normal").lower(),
        )
    if scheme in {"postgresql", "postgres"}:
        try:
            from bastion.engine.audit.postgres import PostgresAuditBackend  # noqa: PLC0415
        except ImportError:
            raise ConfigurationError(
                "a PostgreSQL audit store needs the 'postgres' extra: "
                "pip install 'bastion[postgres]'",
                setting="store",
            ) from None
        return PostgresAuditBackend(url.strip())
    if scheme in {"redis", "rediss"}:
        options = _options(parts.query, frozenset({"prefix", "timeout"}), url)
        try:
            from bastion.engine.audit.redis import RedisAuditBackend  # noqa: PLC0415
        except ImportError:
            raise ConfigurationError(
                "a Redis audit store needs the 'redis' extra: pip install 'bastion[redis]'",
                setting="store",
            ) from None
        plain = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        return RedisAuditBackend(
            plain,
            prefix=options.get("prefix", "bastion:audit:"),
            timeout=_seconds(options, url),
        )
    raise ConfigurationError(
        f"audit store URL {redact_url(url)} is not supported; use one of: "
        + ", ".join(AUDIT_URL_FORMS),
        setting="store",
    )
