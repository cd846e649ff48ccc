"""Failed-login monitoring over the audit stream (sans-I/O: counts only, no I/O, no timer).

:class:`LoginMonitor` is an audit observer (``Auditor(..., observers=...)`` or
:meth:`Auditor.add_observer`): it sees every event before aggregation and watches the login
events for four patterns, each raised once per window as an ``authn_login_suspicious`` event
(the guide's ``SUSPICIOUS_ACTIVITY``) with a ``pattern`` detail, and passed to the app's hook
(alerting, requiring a second factor):

* ``account_burst``: ``account_failures`` failed logins for one account within ``window``;
* ``network_burst``: ``network_failures`` failed logins from one network;
* ``credential_stuffing``: failures for ``stuffing_accounts`` distinct accounts from one network;
* ``new_network``: a successful login from a network the account has not used before (only
  once the account has a history, so a first login is not flagged).

A network is the client address cut to ``ipv4_prefix`` or ``ipv6_prefix`` bits (a /24 and a
/64 by default): a client given a whole IPv6 /64, as most are, can send each attempt from
another address of it, and would never reach a per-address threshold. The address is the
request's (bound by the security-headers layer, :func:`~bastion.core.audit.current_client`);
for an event outside a bound request the event's hashed address stands for its network.

Identifiers are the events' keyed hashes, and networks are hashed under a key drawn per
monitor, so the monitor never holds a raw name, address or network.
Memory is bounded: each table keeps at most ``max_tracked`` keys (least recently used dropped)
and each key at most its threshold's worth of entries, whatever a client sends.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from bastion.core import _check
from bastion.core.audit import EventName, Outcome, current_client

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.core.audit import AuditEvent, Auditor, HashedIdentifier

__all__ = ["LoginMonitor", "LoginMonitorPolicy", "Suspicion"]

_FAILED: Final = frozenset({EventName.AUTHN_LOGIN_FAIL})
_SUCCEEDED: Final = frozenset(
    {EventName.AUTHN_LOGIN_SUCCESS, EventName.AUTHN_LOGIN_SUCCESSAFTERFAIL}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginMonitorPolicy:
    """Thresholds of :class:`LoginMonitor`; each checked at construction."""

    window: float = 300.0
    account_failures: int = 10
    network_failures: int = 30
    stuffing_accounts: int = 5
    new_network: bool = True
    known_networks: int = 8
    """Networks remembered per account (least recently used forgotten)."""
    ipv4_prefix: int = 24
    """Bits of an IPv4 address that name its network (32: every address its own)."""
    ipv6_prefix: int = 64
    """Bits of an IPv6 address that name its network (a /64 is one subscriber's, usually)."""
    max_tracked: int = 10_000

    def __post_init__(self) -> None:
        _check.seconds("window", self.window, high=86_400.0)
        _check.whole_number("account_failures", self.account_failures, low=2, high=10_000)
        _check.whole_number("network_failures", self.network_failures, low=2, high=10_000)
        _check.whole_number("stuffing_accounts", self.stuffing_accounts, low=2, high=10_000)
        _check.flag("new_network", self.new_network)
        _check.whole_number("known_networks", self.known_networks, low=1, high=1_000)
        _check.whole_number("ipv4_prefix", self.ipv4_prefix, low=8, high=32)
        _check.whole_number("ipv6_prefix", self.ipv6_prefix, low=16, high=128)
        _check.whole_number("max_tracked", self.max_tracked, low=1, high=10_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspicion:
    """One pattern found: what the hook gets (hashed identifiers only)."""

    pattern: str
    user: HashedIdentifier | None
    client_ip: HashedIdentifier | None
    count: int
    at: float


_V = TypeVar("_V")


class _Table(Generic[_V]):
    """An LRU-bounded mapping."""

    __slots__ = ("_data", "_limit")

    def __init__(self, limit: int) -> None:
        self._data: OrderedDict[str, _V] = OrderedDict()
        self._limit = limit

    def get(self, key: str, make: Callable[[], _V]) -> _V:
        # Threads of a WSGI server may call this at once (core takes no locks): a key another
        # thread just evicted is simply made again, never a KeyError inside an audit call.
        value = self._data.get(key)
        if value is None:
            value = make()
            self._data[key] = value
            if len(self._data) > self._limit:
                with contextlib.suppress(KeyError):
                    self._data.popitem(last=False)
        else:
            with contextlib.suppress(KeyError):
                self._data.move_to_end(key)
        return value

    def __len__(self) -> int:
        return len(self._data)


class LoginMonitor:
    """Counts login events and raises :class:`Suspicion` (see the module docstring)."""

    def __init__(
        self,
        policy: LoginMonitorPolicy | None = None,
        *,
        hook: Callable[[Suspicion], None] | None = None,
    ) -> None:
        self.policy = policy if policy is not None else LoginMonitorPolicy()
        self._hook = hook
        self._auditor: Auditor | None = None
        limit = self.policy.max_tracked
        self._by_account: _Table[deque[float]] = _Table(limit)
        self._by_network: _Table[deque[float]] = _Table(limit)
        self._accounts_of: _Table[OrderedDict[str, float]] = _Table(limit)
        self._networks_of: _Table[OrderedDict[str, float]] = _Table(limit)
        self._raised: _Table[float] = _Table(limit)
        self._network_key = secrets.token_bytes(32)

    def attach(self, auditor: Auditor) -> None:
        """Observe ``auditor``'s events and emit suspicions through it."""
        self._auditor = auditor
        auditor.add_observer(self)

    @property
    def tracked(self) -> int:
        """Keys held across all tables (bounded by five times ``max_tracked``)."""
        tables = (self._by_account, self._by_network, self._accounts_of, self._networks_of)
        return sum(len(t) for t in tables) + len(self._raised)

    def emit(self, event: AuditEvent) -> None:
        """The observer entry point: look at one event."""
        now = event.time.timestamp()
        if event.name in _FAILED and event.outcome is not Outcome.SUCCESS:
            self._failed(event, now)
        elif event.name in _SUCCEEDED and event.outcome is Outcome.SUCCESS:
            self._succeeded(event, now)

    def _network(self, event: AuditEvent) -> str | None:
        """The key of the event's network (see the module docstring)."""
        if event.client_ip is None:
            return None
        address = current_client()[1]
        if address is None:
            return event.client_ip.digest
        try:
            parsed = ipaddress.ip_address(address.partition("%")[0])
        except ValueError:
            return event.client_ip.digest  # not an address (a test client's name)
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped
        bits = self.policy.ipv4_prefix if parsed.version == 4 else self.policy.ipv6_prefix
        network = ipaddress.ip_network(f"{parsed}/{bits}", strict=False)
        text = network.with_prefixlen.encode("ascii")
        return hashlib.blake2b(text, key=self._network_key, digest_size=16).hexdigest()

    def _failed(self, event: AuditEvent, now: float) -> None:
        p = self.policy
        user, net = event.user, event.client_ip
        network = self._network(event)
        if user is not None:
            hits = self._by_account.get(user.digest, lambda: deque(maxlen=p.account_failures))
            if self._burst(hits, now):
                self._raise(
                    "account_burst", user=user, net=None, count=len(hits), now=now, key=user.digest
                )
        if net is None or network is None:
            return
        hits = self._by_network.get(network, lambda: deque(maxlen=p.network_failures))
        if self._burst(hits, now):
            self._raise("network_burst", user=None, net=net, count=len(hits), now=now, key=network)
        if user is not None:
            seen = self._accounts_of.get(network, OrderedDict)
            seen[user.digest] = now
            seen.move_to_end(user.digest)
            for digest, when in list(seen.items()):
                if now - when > p.window:
                    del seen[digest]
            while len(seen) > p.stuffing_accounts:
                seen.popitem(last=False)
            if len(seen) >= p.stuffing_accounts:
                self._raise(
                    "credential_stuffing",
                    user=None,
                    net=net,
                    count=len(seen),
                    now=now,
                    key=network,
                )

    def _burst(self, hits: deque[float], now: float) -> bool:
        hits.append(now)
        return len(hits) == hits.maxlen and now - hits[0] <= self.policy.window

    def _succeeded(self, event: AuditEvent, now: float) -> None:
        user, net = event.user, event.client_ip
        if not self.policy.new_network or user is None or net is None:
            return
        network = self._network(event)
        if network is None:
            return
        known = self._networks_of.get(user.digest, OrderedDict)
        fresh = bool(known) and network not in known
        known[network] = now
        known.move_to_end(network)
        while len(known) > self.policy.known_networks:
            known.popitem(last=False)
        if fresh:
            self._raise(
                "new_network", user=user, net=net, count=1, now=now, key=user.digest + network
            )

    def _raise(
        self,
        pattern: str,
        *,
        user: HashedIdentifier | None,
        net: HashedIdentifier | None,
        count: int,
        now: float,
        key: str,
    ) -> None:
        last = self._raised.get(pattern + key, lambda: -1e300)
        if now - last < self.policy.window:
            return  # one alert per pattern and key per window
        self._raised._data[pattern + key] = now
        found = Suspicion(pattern=pattern, user=user, client_ip=net, count=count, at=now)
        if self._auditor is not None:
            self._auditor.emit(
                EventName.AUTHN_LOGIN_SUSPICIOUS,
                outcome=Outcome.FAILURE,
                user=user,
                client_ip=net,
                details={
                    "pattern": pattern,
                    "count": count,
                    "user_hash": None if user is None else user.digest,
                    "client_hash": None if net is None else net.digest,
                },
            )
        if self._hook is not None:
            self._hook(found)
