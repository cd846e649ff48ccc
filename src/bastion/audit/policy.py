"""``AuditPolicy``: how the stored audit trail is kept (``Bastion(audit=AuditPolicy(...))``)."""

from __future__ import annotations

from dataclasses import dataclass

from bastion.core import _check
from bastion.errors import ConfigurationError

__all__ = ["AuditPolicy"]

_DAY = 86_400.0
_SCHEMES = frozenset({"sqlite", "postgresql", "postgres", "redis", "rediss"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditPolicy:
    """The stored audit trail's settings, checked at start-up.

    * ``store``: where events are kept: ``sqlite:///path`` (the default, a file next to the
      app), ``postgresql://...`` or ``redis://...`` (see :mod:`bastion.engine.audit.url`).
    * ``fail_closed``: ``False`` (default) drops and counts events when the queue is full or
      the store refuses them, and audits the drops; ``True`` never drops: the emitting call
      waits up to ``max_wait`` seconds for room, then raises
      :class:`~bastion.audit.AuditUnavailable` (a ``StoreUnavailable``), so the action does
      not complete. For regulated deployments.
    * ``queue_size`` (events waiting, default 10,000), ``batch_size`` (events per
      transaction, 512), ``flush_interval`` (seconds the writer waits for a full batch, 0.2).
    * ``segment_events`` (10,000) and ``seal_after`` (seconds, one hour): when a segment of
      the hash chain is sealed. A retention purge deletes whole sealed segments, and events cut
      from the end of the open segment are the one thing the chain cannot show, so smaller
      values mean finer purges and a shorter unsealed tail.
    * ``retention``: seconds events are kept by :meth:`AuditTrail.purge` without an explicit
      ``before`` (``None``: kept until purged by hand).
    * ``log``: also write every event as a JSON line on the ``bastion.audit`` logger.
    """

    store: str = "sqlite:///bastion-audit.db"
    fail_closed: bool = False
    queue_size: int = 10_000
    batch_size: int = 512
    flush_interval: float = 0.2
    max_wait: float = 0.5
    segment_events: int = 10_000
    seal_after: float = 3600.0
    retention: float | None = None
    log: bool = True

    def __post_init__(self) -> None:
        _check.text("store", self.store)
        scheme = self.store.strip().split(":", 1)[0].lower()
        if scheme not in _SCHEMES:
            raise ConfigurationError(
                f"store must be an audit store URL (sqlite:///audit.db, postgresql://..., "
                f"redis://...), not one with scheme {scheme[:20]!r}",
                setting="store",
            )
        _check.flag("fail_closed", self.fail_closed)
        _check.flag("log", self.log)
        _check.whole_number("queue_size", self.queue_size, low=1, high=10_000_000)
        _check.whole_number("batch_size", self.batch_size, low=1, high=100_000)
        _check.whole_number("segment_events", self.segment_events, low=1, high=10_000_000)
        set_ = object.__setattr__
        set_(self, "flush_interval", _check.seconds("flush_interval", self.flush_interval, high=60))
        set_(self, "max_wait", _check.seconds("max_wait", self.max_wait, allow_zero=True, high=60))
        set_(self, "seal_after", _check.seconds("seal_after", self.seal_after, high=30 * _DAY))
        if self.retention is not None:
            retention = _check.seconds(
                "retention", self.retention, hint="or None to keep events until purged"
            )
            if retention < self.seal_after:
                raise ConfigurationError(
                    f"retention ({retention:g} s) must be at least seal_after "
                    f"({self.seal_after:g} s): purges delete whole sealed segments",
                    setting="retention",
                )
            set_(self, "retention", retention)
        if self.batch_size > self.queue_size:
            raise ConfigurationError(
                f"batch_size ({self.batch_size}) must not exceed queue_size ({self.queue_size})",
                setting="batch_size",
            )
