"""The interface every audit backend implements (SQLite, PostgreSQL, Redis Streams).

A backend is synchronous: the sink's writer thread, the verifier and the command line call
it, never the event loop. It does I/O only; what to write is decided by
:class:`~bastion.engine.audit.chain.Chain`, inside :meth:`AuditBackend.transact`, so several
processes writing to one database extend one chain: the head is read, the batch computed and
the head replaced in one transaction (SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``SELECT ... FOR
UPDATE``, Redis ``WATCH``/``MULTI``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bastion.engine.audit.model import Batch, Head, Purge, Query, Row, Seal

__all__ = ["AuditBackend"]


class AuditBackend(Protocol):
    """Storage for one audit trail."""

    @property
    def where(self) -> str:
        """Where the trail lives, for messages (a URL without its password)."""
        ...

    def transact(
        self,
        build: Callable[[Head | None], Batch | None],
    ) -> Batch | None:
        """Lock the trail, read the head (``None`` when empty), call ``build`` with it and
        write the batch it returns (nothing for ``None``), then unlock. The written batch.

        ``build`` may call :meth:`seals` and :meth:`purges`: they read inside the transaction
        (the lock is re-entrant)."""
        ...

    def rows(self, after_seq: int, limit: int) -> Sequence[Row]:
        """Up to ``limit`` rows with ``seq > after_seq``, in ``seq`` order."""
        ...

    def seals(self) -> Sequence[Seal]:
        """Every seal, in segment order."""
        ...

    def purges(self) -> Sequence[Purge]:
        """Every purge mark, in order."""
        ...

    def head(self) -> Head | None: ...

    def query(self, query: Query) -> Sequence[Row]:
        """The rows matching ``query``, newest first."""
        ...

    def close(self) -> None: ...

    def after_fork(self) -> None:
        """In a child process: leave the parent's connection alone (never close it: that
        would end the parent's session too) and connect afresh on next use."""
        ...
