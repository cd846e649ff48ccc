"""The synchronous side of a store, for features that offer ``*_sync`` methods.

Credentials features (login throttle, API keys, TOTP) write their store logic once as flows
(:mod:`bastion.engine.flows`) and run them with :func:`~bastion.engine.flows.drive_async` on the
store, or with :func:`~bastion.engine.flows.drive_sync` on ``store.sync`` for WSGI apps. A
store without a sync side can still serve the async methods; the sync ones then fail with an
error that says so, rather than starting an event loop behind the caller's back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.errors import ConfigurationError
from bastion.stores.base import SupportsSync

if TYPE_CHECKING:
    from bastion.stores.base import Store, SyncStore

__all__ = ["require_sync", "sync_side"]


def sync_side(store: Store) -> SyncStore | None:
    """``store.sync`` when the store has a synchronous side, else ``None``."""
    return store.sync if isinstance(store, SupportsSync) else None


def require_sync(sync: SyncStore | None, store: Store) -> SyncStore:
    """``sync``, or :class:`~bastion.errors.ConfigurationError` naming ``store`` and the fix."""
    if sync is None:
        raise ConfigurationError(
            f"{store!r} has no synchronous side (store.sync): use the async methods, or a "
            "memory, SQLite or Redis store",
            setting="store",
        )
    return sync
