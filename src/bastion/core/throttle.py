"""Login throttling decisions: exponential back-off on counters of failed attempts.

Sans-I/O: :mod:`bastion.engine.throttle` keeps the counters in a store; this module decides.

A plain per-account lock-out hands attackers a weapon: fail five times as the victim and the
victim is locked out. So failures are counted on several counters, each with its own
:class:`BackoffRule`:

``pair``      (account, client): the strict counter. An attacker hammering one account from one
              address is slowed down quickly; the victim, on another address, is not affected.
``account``   the account over all clients: a *softer* cap (many more free attempts, short
              delays) against attacks spread over many addresses. An attacker who keeps it
              tripped delays every client without a device cookie (below), so it does not
              apply to a browser that holds one.
``client``    the client over all accounts: catches one address trying many accounts
              (credential stuffing), where no pair counter ever fills up.
``device``    one device cookie (OWASP's "device cookies" against slow brute force): a browser
              that has logged in to the account before holds a signed cookie for it, and its
              failures count here *instead of* on ``account``. While the account-wide counter
              delays everyone else (the account is under a distributed attack), a client with a
              valid device cookie still tries its password, so the owner is never locked out of
              their own browser. Each cookie has a small budget (``device``), after which that
              cookie is locked out: a stolen cookie buys a handful of guesses, not an open door.

An attempt is allowed when every counter's back-off has run out. Every attempt is counted as a
failure *before* the password is checked (a reservation, made atomically on the store), and
refunded when the password was right, so concurrent guesses can never be checked in greater
number than the rules allow. After ``free_attempts`` failures, each further failure doubles the
wait (``base_delay``, ``2 * base_delay``, ...), up to ``max_delay``. A counter forgets
``window`` seconds after its last failure. A successful login clears its pair counter and gives
back its own reservation on the others, never more: clearing the client or account counters
would let an attacker reset them with one account they control.

User names are compared after NFKC, case folding and trimming (``Alice`` and ``alice `` share
counters). An empty user name never counts against an account (it would throttle the shared
"empty" account for everyone); only its client counter moves. IPv6 clients are grouped by
their /64 network, since one host usually controls a whole /64.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import unicodedata
from dataclasses import dataclass, field
from typing import Final

from bastion.core import _check
from bastion.errors import ConfigurationError

__all__ = [
    "BackoffRule",
    "ThrottleCounter",
    "ThrottleDecision",
    "ThrottlePolicy",
    "ThrottleState",
    "client_group",
    "normalize_username",
]

_IPV6_GROUP_PREFIX: Final = 64


class ThrottleCounter(enum.StrEnum):
    """The failure counters (see the module docstring)."""

    PAIR = "pair"
    ACCOUNT = "account"
    CLIENT = "client"
    DEVICE = "device"


def normalize_username(username: str) -> str:
    """The form in which user names are counted: NFKC, case-folded, trimmed."""
    return unicodedata.normalize("NFKC", username).casefold().strip()


def client_group(client_ip: str) -> str:
    """The identity counted for a client: the IPv4 address, the IPv6 /64 network, or the text
    as given when it is not an IP address (a proxy may pass a label)."""
    text = client_ip.strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, _IPV6_GROUP_PREFIX), strict=False)
        return str(network)
    return str(address)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffRule:
    """Exponential back-off: no delay for ``free_attempts`` failures, then ``base_delay``
    seconds doubling per failure up to ``max_delay``; forgotten ``window`` seconds after the last
    failure."""

    free_attempts: int
    base_delay: float = 1.0
    max_delay: float = 900.0
    window: float = 24 * 3600.0

    def __post_init__(self) -> None:
        _check.whole_number("free_attempts", self.free_attempts, low=0)
        for name in ("base_delay", "max_delay", "window"):
            _check.seconds(name, getattr(self, name))
        if self.max_delay < self.base_delay:
            raise ConfigurationError(
                f"max_delay ({self.max_delay}) must be >= base_delay ({self.base_delay})",
                setting="max_delay",
            )

    def delay_for(self, failures: int) -> float:
        """Seconds to wait after the last of ``failures`` failures."""
        extra = failures - self.free_attempts
        if extra <= 0:
            return 0.0
        if extra > 64:
            return self.max_delay
        return min(self.base_delay * 2.0 ** (extra - 1), self.max_delay)


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottlePolicy:
    """The rules. Defaults: pair 5 free then up to 15 min; account 100 free then up to
    1 min; client 30 free then up to 15 min; all forgotten after a day without failures. A
    device cookie: 4 free failures, and after its fifth that cookie is locked out for a day.
    ``device_cookie_max_age`` is how long a device cookie is valid after the login that gave
    it (default 180 days).
    """

    pair: BackoffRule = field(default_factory=lambda: BackoffRule(free_attempts=5))
    account: BackoffRule = field(
        default_factory=lambda: BackoffRule(free_attempts=100, max_delay=60.0)
    )
    client: BackoffRule = field(default_factory=lambda: BackoffRule(free_attempts=30))
    device: BackoffRule = field(
        default_factory=lambda: BackoffRule(
            free_attempts=4, base_delay=86_400.0, max_delay=86_400.0, window=86_400.0
        )
    )
    device_cookie_max_age: float = 180 * 86_400.0

    def __post_init__(self) -> None:
        for name in ("pair", "account", "client", "device"):
            if not isinstance(getattr(self, name), BackoffRule):
                raise ConfigurationError(
                    f"{name} must be a BackoffRule(free_attempts=...)", setting=name
                )
        _check.seconds("device_cookie_max_age", self.device_cookie_max_age)

    def rule(self, counter: ThrottleCounter) -> BackoffRule:
        return {
            ThrottleCounter.PAIR: self.pair,
            ThrottleCounter.ACCOUNT: self.account,
            ThrottleCounter.DEVICE: self.device,
        }.get(counter, self.client)


@dataclass(frozen=True, slots=True)
class ThrottleState:
    """One counter: the number of failures and the time of the last one."""

    failures: int = 0
    last_failure: float = 0.0

    @classmethod
    def decode(cls, raw: bytes | None, *, now: float, rule: BackoffRule) -> ThrottleState:
        """The stored state, or a fresh one when absent, damaged or older than the window.
        Total: never raises."""
        if raw is None:
            return cls()
        try:
            count, _, when = raw.decode("ascii").partition(":")
            state = cls(int(count), float(when))
        except (UnicodeDecodeError, ValueError):
            return cls()
        if state.failures < 0 or not math.isfinite(state.last_failure):
            return cls()
        if now - state.last_failure >= rule.window:
            return cls()
        return state

    def encode(self) -> bytes:
        return f"{self.failures}:{self.last_failure!r}".encode("ascii")

    def failed(self, now: float) -> ThrottleState:
        """The state after one more failure at ``now``."""
        return ThrottleState(self.failures + 1, now)

    def refunded(self) -> ThrottleState:
        """The state with one reserved failure given back (a password that was right). The
        time of the last failure stays: a refund never shortens a wait another attempt began."""
        return ThrottleState(max(0, self.failures - 1), self.last_failure)

    def retry_after(self, rule: BackoffRule, now: float) -> float:
        """Seconds until the next attempt is allowed (0 when it is allowed now)."""
        delay = rule.delay_for(self.failures)
        if delay <= 0:
            return 0.0
        return max(0.0, self.last_failure + delay - now)


@dataclass(frozen=True, slots=True)
class ThrottleDecision:
    """Whether an attempt may go ahead. When not, ``retry_after`` seconds and the ``counter``
    that refused it; the HTTP answer is 429 with ``Retry-After: <retry_after_header>``."""

    allowed: bool
    retry_after: float = 0.0
    counter: ThrottleCounter | None = None

    @property
    def http_status(self) -> int:
        return 200 if self.allowed else 429

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, rounded up, for the ``Retry-After`` header."""
        return str(max(1, math.ceil(self.retry_after))) if not self.allowed else "0"

    @classmethod
    def combine(cls, waits: dict[ThrottleCounter, float]) -> ThrottleDecision:
        """The decision from each counter's remaining wait: the longest wait wins."""
        counter, wait = max(waits.items(), key=lambda item: item[1], default=(None, 0.0))
        if counter is None or wait <= 0:
            return cls(allowed=True)
        return cls(allowed=False, retry_after=wait, counter=counter)
