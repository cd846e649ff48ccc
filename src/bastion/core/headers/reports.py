"""CSP violation reports: a total parser, bounded budgets and the receiver's decisions.

:func:`parse_csp_reports` turns any body into violations or :class:`~bastion.errors.BadData`,
never anything else. :class:`ReportReceiver` decides, cheapest first, whether a request to the
report path is refused or accepted; the adapters read the body and send the answer. The
budgets (:class:`ClientReportBudgets` per client, :class:`ReportBudget` per process) bound what a
flood of reports can cost, the audit trail included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bastion.core.audit import EventName, Outcome
from bastion.core.request import normalize_method
from bastion.errors import BadData, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock

__all__ = [
    "CSP_REPORT_MEDIA_TYPES",
    "CSPViolation",
    "ClientReportBudgets",
    "ReportBudget",
    "ReportReceiver",
    "parse_csp_reports",
]

CSP_REPORT_MEDIA_TYPES: Final = frozenset({"application/csp-report", "application/reports+json"})
"""Media types a CSP report receiver accepts: ``report-uri`` and Reporting API bodies."""


class ReportBudget:
    """A token bucket bounding how many CSP reports are accepted: ``burst`` at once, refilled at
    ``per_second``. Pure state over an injected clock; callers that share it between threads
    must hold a lock around :meth:`take`.
    """

    __slots__ = ("_burst", "_clock", "_rate", "_tokens", "_updated")

    def __init__(self, clock: Clock, *, burst: int = 50, per_second: float = 1.0) -> None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigurationError("report burst must be an int >= 1", setting="report_burst")
        if not isinstance(per_second, int | float) or not per_second > 0:
            raise ConfigurationError(
                "report rate must be > 0 reports per second", setting="report_rate"
            )
        self._clock = clock
        self._burst = float(burst)
        self._rate = float(per_second)
        self._tokens = float(burst)
        self._updated = clock.now()

    def take(self) -> bool:
        """Spend one token if there is one; ``False`` means refuse (429)."""
        now = self._clock.now()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        """Return the token of a report another budget then refused."""
        self._tokens = min(self._burst, self._tokens + 1.0)

    def __repr__(self) -> str:
        return f"ReportBudget(burst={int(self._burst)}, per_second={self._rate})"


class ClientReportBudgets:
    """A token bucket per client (``burst`` at once, refilled at ``per_second``), so that one
    noisy client spends its own budget, not everyone's.

    The key is what the adapter resolved (:meth:`TrustedProxies.key
    <bastion.core.client.TrustedProxies.key>`: the address, an IPv6 client's /64); clients whose
    address is unknown share the key ``None``. The table holds at most ``max_clients``
    buckets, least recently used dropped first: anonymous traffic cannot grow memory without
    bound. A dropped client starts again from a full bucket, which the process-wide
    :class:`ReportBudget` behind this one still bounds. Pure state over an injected clock;
    threaded callers hold a lock around :meth:`take`.
    """

    __slots__ = ("_burst", "_clock", "_max", "_rate", "_table")

    def __init__(
        self, clock: Clock, *, burst: int = 10, per_second: float = 0.5, max_clients: int = 4096
    ) -> None:
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigurationError(
                "per-client report burst must be an int >= 1", setting="report_client_burst"
            )
        if not isinstance(per_second, int | float) or not per_second > 0:
            raise ConfigurationError(
                "per-client report rate must be > 0 reports per second",
                setting="report_client_rate",
            )
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ConfigurationError(
                "report_max_clients must be an int >= 1 (4096 is the default)",
                setting="report_max_clients",
            )
        self._clock = clock
        self._burst = float(burst)
        self._rate = float(per_second)
        self._max = max_clients
        self._table: dict[str | None, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._table)

    def take(self, key: str | None) -> bool:
        """Spend one of ``key``'s tokens if it has one; ``False`` means refuse (429)."""
        now = self._clock.now()
        tokens, updated = self._table.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - updated) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._table[key] = (tokens, now)  # re-inserted last: the dict is the LRU order
        if len(self._table) > self._max:
            del self._table[next(iter(self._table))]
        return allowed

    def give_back(self, key: str | None) -> None:
        """Return ``key``'s token for a report the process-wide budget then refused."""
        entry = self._table.get(key)
        if entry is not None:
            self._table[key] = (min(self._burst, entry[0] + 1.0), entry[1])

    def __repr__(self) -> str:
        return (
            f"ClientReportBudgets(burst={int(self._burst)}, per_second={self._rate}, "
            f"max_clients={self._max})"
        )


@dataclass(frozen=True, slots=True)
class CSPViolation:
    """One CSP violation report, reduced to what is safe to log.

    URLs lose their query and fragment (they may carry tokens); ``sample`` is never kept.
    """

    document_url: str
    blocked_url: str
    directive: str
    disposition: str
    status_code: int | None


_MAX_FIELD = 512


def _text(value: object, *, url: bool = False) -> str:
    if not isinstance(value, str):
        return ""
    if url:
        value = value.split("#", 1)[0].split("?", 1)[0]
    return value[:_MAX_FIELD]


def _violation(body: Mapping[str, Any], *, legacy: bool) -> CSPViolation:
    if legacy:
        keys = ("document-uri", "blocked-uri", "effective-directive", "status-code")
        directive = body.get(keys[2]) or body.get("violated-directive")
    else:
        keys = ("documentURL", "blockedURL", "effectiveDirective", "statusCode")
        directive = body.get(keys[2])
    status = body.get(keys[3])
    return CSPViolation(
        document_url=_text(body.get(keys[0]), url=True),
        blocked_url=_text(body.get(keys[1]), url=True),
        directive=_text(directive),
        disposition=_text(body.get("disposition")) or "enforce",
        status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
    )


def parse_csp_reports(
    body: bytes, content_type: str, *, limit: int = 20
) -> tuple[CSPViolation, ...]:
    """The CSP violations in a report request body.

    ``content_type`` must be ``application/csp-report`` (a ``report-uri`` body:
    ``{"csp-report": {...}}``) or ``application/reports+json`` (a Reporting API list whose
    ``csp-violation`` entries are kept, other report types skipped). At most ``limit``
    violations are returned. Raises :class:`~bastion.errors.BadData` on anything else: bad
    UTF-8, bad JSON, JSON nested too deeply, or the wrong shape. Never raises anything else.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in CSP_REPORT_MEDIA_TYPES:
        raise BadData(f"report media type must be one of {sorted(CSP_REPORT_MEDIA_TYPES)}")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadData("report body is not UTF-8 JSON") from None
    if media == "application/csp-report":
        inner = data.get("csp-report") if isinstance(data, dict) else None
        if not isinstance(inner, dict):
            raise BadData('a csp-report body must be an object with a "csp-report" object')
        return (_violation(inner, legacy=True),)
    if not isinstance(data, list):
        raise BadData("a reports+json body must be a JSON list of reports")
    found: list[CSPViolation] = []
    for report in data:
        if not isinstance(report, dict):
            raise BadData("each report in a reports+json body must be an object")
        if report.get("type") != "csp-violation":
            continue
        inner = report.get("body")
        if not isinstance(inner, dict):
            raise BadData('a csp-violation report needs a "body" object')
        if len(found) < limit:
            found.append(_violation(inner, legacy=False))
    return tuple(found)


class ReportReceiver:
    """The decisions of a CSP report endpoint. Adapters read the body and send the answer.

    Order, cheapest first: method (405), volume (429: first the client's own budget, a
    :class:`ClientReportBudgets` bucket, then the :class:`ReportBudget` of the whole process,
    so one noisy client is refused before it can spend everyone's), media type (415), declared
    length (413), then, once the adapter has read at most ``max_bytes``, the JSON (400) and
    acceptance (204). Every accepted violation becomes a ``csp_violation`` audit event and
    every refusal but 429 an ``input_validation_fail`` event; the budgets bound both, so a
    flood cannot flood the audit trail. 429s are not audited.

    Danger: the budgets are not locked; threaded callers serialise :meth:`precheck`.
    """

    __slots__ = ("_auditor", "_budget", "_clients", "max_bytes")

    EXTRA_HEADERS: Final[Mapping[int, tuple[tuple[bytes, bytes], ...]]] = {
        405: ((b"allow", b"POST"),),
        429: ((b"retry-after", b"1"),),
    }

    def __init__(
        self,
        auditor: Auditor,
        clock: Clock,
        *,
        max_bytes: int = 16_384,
        burst: int = 50,
        per_second: float = 1.0,
        client_burst: int = 10,
        client_per_second: float = 0.5,
        max_clients: int = 4096,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise ConfigurationError("report_max_bytes must be an int", setting="report_max_bytes")
        if not 256 <= max_bytes <= 1_048_576:
            raise ConfigurationError(
                f"report_max_bytes={max_bytes} must be between 256 and 1048576 (reports are "
                "small; 16384 is plenty)",
                setting="report_max_bytes",
            )
        self._auditor = auditor
        self._budget = ReportBudget(clock, burst=burst, per_second=per_second)
        self._clients = ClientReportBudgets(
            clock, burst=client_burst, per_second=client_per_second, max_clients=max_clients
        )
        self.max_bytes = max_bytes

    def precheck(
        self,
        method: str,
        content_type: str,
        content_length: str | None,
        client_ip: str | None,
        client_key: str | None = None,
    ) -> int | None:
        """A refusal status decided from the request line and headers, or ``None`` to read on.

        ``client_key`` names the client's budget (:meth:`TrustedProxies.key
        <bastion.core.client.TrustedProxies.key>`); ``client_ip`` goes into audit events.
        """
        if normalize_method(method) != "POST":
            return 405
        if not self._clients.take(client_key):
            return 429
        if not self._budget.take():
            self._clients.give_back(client_key)
            return 429
        if content_type.split(";", 1)[0].strip().lower() not in CSP_REPORT_MEDIA_TYPES:
            return self._refuse(client_ip, "unsupported_media_type", 415)
        if content_length is not None and (
            not content_length.isdigit() or int(content_length) > self.max_bytes
        ):
            return self.too_large(client_ip)
        return None

    def too_large(self, client_ip: str | None) -> int:
        """The body ran past ``max_bytes`` while being read: 413."""
        return self._refuse(client_ip, "too_large", 413)

    def accept(self, body: bytes, content_type: str, client_ip: str | None) -> int:
        """Parse ``body`` and audit its violations: 204, or 400 if it is malformed."""
        try:
            violations = parse_csp_reports(body, content_type)
        except BadData:
            return self._refuse(client_ip, "malformed", 400)
        for violation in violations:
            self._auditor.emit(
                "csp_violation",
                outcome=Outcome.BLOCKED if violation.disposition == "enforce" else Outcome.FAILURE,
                client_ip=client_ip,
                details={
                    "directive": violation.directive,
                    "blocked_url": violation.blocked_url,
                    "document_url": violation.document_url,
                    "disposition": violation.disposition,
                    "status_code": violation.status_code,
                },
            )
        return 204

    def _refuse(self, client_ip: str | None, reason: str, status: int) -> int:
        self._auditor.emit(
            EventName.INPUT_VALIDATION_FAIL,
            outcome=Outcome.FAILURE,
            client_ip=client_ip,
            details={"field": "csp_report", "reason": reason},
        )
        return status

    def __repr__(self) -> str:
        return f"ReportReceiver(max_bytes={self.max_bytes}, budget={self._budget!r})"
