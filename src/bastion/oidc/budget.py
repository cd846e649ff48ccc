"""The budget of pending logins per client address: why the login route cannot fill the store.

Every ``GET /auth/{provider}/login`` stores a login-state record (``state``, ``nonce``, PKCE
verifier, ``next``) for ``OIDCPolicy.state_lifetime`` seconds, and the route is anonymous by
nature: without a bound, one client could make the server hold any number of records. So,
before a record is written, the client's address is charged one unit of
``OIDCPolicy(max_pending_per_client=N)`` (default 30), counted with the store's own rate-limit
primitive (:class:`~bastion.engine.ratelimit.RateLimiter`, sliding log) over a window of
``state_lifetime + timeout`` seconds: the record is written after the charge, once the
provider's metadata is read (at most ``timeout``), so it expires before its charge leaves the
window. The sliding log is exact: at any moment a client address has been charged at most N
times within the window, and each of its live records is one of those charges, so it holds at
most N live records in the store. The N+1st login is refused before anything is written: 429
``too_many_logins`` with ``Retry-After`` (when the oldest charge leaves the window), audited
as ``authn_login_fail``.

The address is the one the session layer resolved (``session.client_ip``): the forwarding
header is read only from the configured trusted proxies, so an ``X-Forwarded-For`` a client
writes itself changes nothing, and a fresh session cookie per request (or none) does not open
a fresh budget either. IPv6 addresses are grouped by /64 (one client usually holds a whole
/64), as the rate limiter's own client key does; a peer that is no IP address shares one key.
Every provider counts against the same budget: rotating providers does not multiply it.

Why this design, and not the alternatives:

* The pending login in a signed and encrypted cookie (no store write at all) loses what the
  store gives: single use (a replayed callback inside the lifetime would need a replay cache,
  that is a store write again, now per callback) and the server-side binding to the browser's
  session. A cookie per login also breaks two sign-ins in two tabs or makes the cookie grow.
* A global cap on pending records would let one client lock every visitor out of signing in.
  A per-address budget confines the damage to the address that floods; total growth is
  bounded by N records per address (or /64) that an attacker holds, each expiring on its own.
* A rate limit in the app's configuration alone (a ``Rule`` on ``/auth/*``) is easy to forget
  and to misplace; the bound belongs to the code that creates the state.

Trade-off: many users behind one NAT address share a budget. Raise N for such an audience, or
configure trusted proxies so the real client address is used. ``max_pending_per_client=None``
turns the bound off (then bound the route with a rate-limit rule of your own). When the store
cannot count (an outage), the rate limiter's ``fallback`` policy counts in this process, so the
bound still holds per process; the record write then fails anyway (503
``login_store_unavailable``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from bastion.core.client import TrustedProxies
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.core.ratelimit.keys import ClientIPKey
from bastion.core.ratelimit.rates import Rate, Strategy
from bastion.engine.ratelimit import RateLimiter, Rule
from bastion.errors import ConfigurationError
from bastion.stores.base import SupportsRateLimit

if TYPE_CHECKING:
    from bastion.stores.base import Store

__all__ = ["RULE_NAME", "LoginBudget"]

RULE_NAME: Final = "oidc-pending-logins"
"""The rate-limit rule (and store key prefix) of the budget."""


class LoginBudget:
    """At most ``limit`` logins per client address within ``window`` seconds (the module
    docstring has the reasoning). :meth:`charge` raises :class:`OIDCRejected`
    (``too_many_logins``, with ``retry_after``) when the address's budget is spent."""

    __slots__ = ("_key", "_limiter", "_rule")

    def __init__(self, store: Store, *, limit: int, window: float) -> None:
        if not isinstance(store, SupportsRateLimit):
            raise ConfigurationError(
                f"OIDCPolicy(max_pending_per_client={limit}) counts pending logins with the "
                f"store's rate limits, and {store!r} has none: use a memory, SQLite, Redis or "
                "PostgreSQL store, or max_pending_per_client=None with a rate-limit rule on the "
                "login route",
                setting="oidc.max_pending_per_client",
            )
        # No auditor: the refusal is audited once, as authn_login_fail (OIDC.begin).
        self._limiter = RateLimiter(store)
        self._rule = Rule(RULE_NAME, Rate.per(limit, window), strategy=Strategy.SLIDING_LOG)
        self._key = ClientIPKey(TrustedProxies())  # IPv6 grouped by /64; no header is read

    def __repr__(self) -> str:
        return f"LoginBudget({self._rule.rates[0]})"

    def key(self, client_ip: str | None) -> str:
        """The budget's key for ``client_ip`` (an address the session layer resolved)."""
        return self._key.of_peer(client_ip) or "peer:unknown"

    async def charge(self, client_ip: str | None) -> None:
        """Count one pending login for ``client_ip``; refuse when the budget is spent."""
        result = await self._limiter.hit(self._rule, self.key(client_ip))
        if not result.allowed:
            wait = max(1, math.ceil(result.retry_after))
            raise OIDCRejected(
                OIDCReason.TOO_MANY_LOGINS,
                "too many pending logins from this client address",
                retry_after=wait,
            )

    async def aclose(self) -> None:
        await self._limiter.aclose()
