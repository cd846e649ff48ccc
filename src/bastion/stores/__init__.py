"""Stores: bytes with TTLs behind one small async protocol.

``open_store(url)`` picks the store from a URL:

* ``memory://`` (``?max_entries=N``): one process, bounded, expiry on read.
* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: the embedded default.
* ``redis://host:port/db`` and ``rediss://...`` (``?prefix=app:``): several hosts.

Every one of them also decides rate limits (:class:`~bastion.stores.base.SupportsRateLimit`) on
the same connections, so one URL serves sessions, rate limits, throttling, API keys and TOTP.
Only the store that a URL names is imported, so the ``redis`` extra is needed only for Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.stores.base import MAX_KEY_BYTES, MAX_VALUE_BYTES, Store, SupportsRateLimit

if TYPE_CHECKING:
    from bastion.core.clock import Clock

__all__ = ["MAX_KEY_BYTES", "MAX_VALUE_BYTES", "Store", "SupportsRateLimit", "open_store"]


def open_store(url: str, *, clock: Clock | None = None, **options: Any) -> Store:
    """Open the store that ``url`` names. See the module docstring for the URL forms."""
    from bastion.stores.url import open_store as _open  # noqa: PLC0415 (keeps imports lazy)

    return _open(url, clock=clock, **options)
