"""An optional breached-password check by k-anonymity range queries (off by default).

The protocol is that of Pwned Passwords: the SHA-1 of the password is split into a 5-hex-digit
prefix, sent to the service, and a 35-digit suffix, looked up locally in the answer (every
suffix the service knows under that prefix, with a count). The service never sees the password
or its full hash.

bastion makes no network calls itself. An application that wants the check supplies a
:class:`RangeSource` that fetches ``prefix`` from the service it trusts, with its own HTTP
client, timeout and cache. :class:`OfflineRangeSource` answers from local data (a downloaded
corpus, or a handful of entries in tests).

Failure policy: a source that raises is treated as "no answer" and logged on
``bastion.security.passwords``; the shipped blocklist still applies. A breached-password service
outage therefore never blocks sign-ups.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bastion.core.passwords import breach_range_query, normalize_password, parse_breach_range
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["BreachChecker", "OfflineRangeSource", "RangeSource"]

_logger = logging.getLogger("bastion.security.passwords")


@runtime_checkable
class RangeSource(Protocol):
    """Fetches the range answer for a 5-hex-digit SHA-1 prefix: lines of ``SUFFIX:COUNT``."""

    async def fetch_range(self, prefix: str) -> str: ...


class OfflineRangeSource:
    """A :class:`RangeSource` answering from local passwords (each counted once per mention)."""

    __slots__ = ("_ranges",)

    def __init__(self, passwords: Iterable[str]) -> None:
        ranges: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for password in passwords:
            digest = (
                hashlib.sha1(normalize_password(password).encode("utf-8"), usedforsecurity=False)
                .hexdigest()
                .upper()
            )
            bucket = ranges[digest[:5]]
            bucket[digest[5:]] = bucket.get(digest[5:], 0) + 1
        self._ranges = {
            prefix: "\r\n".join(f"{suffix}:{count}" for suffix, count in sorted(bucket.items()))
            for prefix, bucket in ranges.items()
        }

    async def fetch_range(self, prefix: str) -> str:
        return self._ranges.get(prefix, "")

    def __repr__(self) -> str:
        return f"OfflineRangeSource(prefixes={len(self._ranges)})"


class BreachChecker:
    """Counts how often a password occurs in a breach corpus through ``source``.

    ``threshold`` is the count from which a password is refused (1: any appearance).
    """

    __slots__ = ("_source", "_threshold")

    def __init__(self, source: RangeSource, *, threshold: int = 1) -> None:
        if not isinstance(source, RangeSource):
            raise ConfigurationError(
                "source must have an async fetch_range(prefix) -> str method",
                setting="breach_source",
            )
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigurationError(
                f"threshold must be a whole number >= 1, got {threshold!r}", setting="threshold"
            )
        self._source = source
        self._threshold = threshold

    async def count(self, password: str) -> int | None:
        """Occurrences of ``password`` in the corpus, or ``None`` when the source failed."""
        prefix, suffix = breach_range_query(password)
        try:
            body = await self._source.fetch_range(prefix)
        except Exception:  # noqa: BLE001 (any source failure means "no answer", by design)
            _logger.warning("breached-password source failed; the check is skipped")
            return None
        return parse_breach_range(body, suffix)

    async def is_breached(self, password: str) -> bool:
        count = await self.count(password)
        return count is not None and count >= self._threshold

    def __repr__(self) -> str:
        return f"BreachChecker(source={self._source!r}, threshold={self._threshold})"
