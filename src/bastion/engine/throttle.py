"""Login throttling over any store: three counters, exponential back-off, audit events.

The decisions are in :mod:`bastion.core.throttle` (read its docstring for the model). Here the
counters live in a :class:`~bastion.stores.base.Store`, one key each, updated by
compare-and-set loops so that concurrent failures are all counted, across processes for the
SQLite and Redis stores::

    throttle:pair:<hash(account)>:<hash(client)>
    throttle:account:<hash(account)>
    throttle:client:<hash(client)>

Identifiers in keys are keyed hashes (HMAC-SHA256 under a subkey of the server key, purpose
``throttle:keys``): a leaked store does not list who tried to log in from where.

Use :meth:`LoginThrottle.attempt` around the password check, or :meth:`LoginThrottle.check`,
:meth:`LoginThrottle.record_failure` and :meth:`LoginThrottle.record_success` by hand. Audit
events: ``authn_login_success``, ``authn_login_fail`` (also for a throttled attempt, with
``reason=throttled``), and ``authn_login_lock`` when a counter starts delaying attempts.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bastion.core.audit import EventName, Outcome
from bastion.core.clock import system_clock
from bastion.core.keys import KeyRing
from bastion.core.throttle import (
    ThrottleCounter,
    ThrottleDecision,
    ThrottlePolicy,
    ThrottleState,
    client_group,
    normalize_username,
)
from bastion.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.stores.base import Store

__all__ = ["LoginAttempt", "LoginOutcome", "LoginThrottle"]

_CAS_ATTEMPTS: Final = 32


class LoginOutcome(enum.StrEnum):
    SUCCESS = "success"
    INVALID = "invalid"
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """What :meth:`LoginThrottle.attempt` decided. ``THROTTLED`` means the password was not
    even checked: answer 429 with ``Retry-After: decision.retry_after_header``."""

    outcome: LoginOutcome
    decision: ThrottleDecision

    @property
    def ok(self) -> bool:
        return self.outcome is LoginOutcome.SUCCESS

    @property
    def http_status(self) -> int:
        """200 on success, 401 for wrong credentials, 429 when throttled."""
        return {LoginOutcome.SUCCESS: 200, LoginOutcome.INVALID: 401}.get(self.outcome, 429)


class LoginThrottle:
    """Counts failed logins in ``store`` under ``policy`` and decides who must wait."""

    __slots__ = ("_auditor", "_clock", "_key", "_policy", "_prefix", "_store")

    def __init__(
        self,
        store: Store,
        keyring: KeyRing | SecretKey,
        *,
        policy: ThrottlePolicy | None = None,
        clock: Clock = system_clock,
        auditor: Auditor | None = None,
        prefix: str = "throttle:",
    ) -> None:
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"prefix must be non-empty text without braces, got {prefix!r}", setting="prefix"
            )
        if policy is not None and not isinstance(policy, ThrottlePolicy):
            raise ConfigurationError("policy must be a ThrottlePolicy", setting="policy")
        self._store = store
        self._key = KeyRing.coerce(keyring).derive("throttle:keys").current.reveal()
        self._policy = policy or ThrottlePolicy()
        self._clock = clock
        self._auditor = auditor
        self._prefix = prefix

    def _hash(self, kind: str, value: str) -> str:
        message = kind.encode("ascii") + b"\x00" + value.encode("utf-8", "surrogatepass")
        return hmac.digest(self._key, message, hashlib.sha256)[:16].hex()

    def _keys(self, username: str, client_ip: str) -> dict[ThrottleCounter, str]:
        account = normalize_username(username)
        client = self._hash("client", client_group(client_ip))
        keys = {ThrottleCounter.CLIENT: f"{self._prefix}client:{client}"}
        if account:
            user = self._hash("user", account)
            keys[ThrottleCounter.PAIR] = f"{self._prefix}pair:{user}:{client}"
            keys[ThrottleCounter.ACCOUNT] = f"{self._prefix}account:{user}"
        return keys

    async def check(self, username: str, client_ip: str) -> ThrottleDecision:
        """Whether ``username`` may try a password from ``client_ip`` now. Reads only."""
        now = self._clock.now()
        waits: dict[ThrottleCounter, float] = {}
        for counter, key in self._keys(username, client_ip).items():
            rule = self._policy.rule(counter)
            state = ThrottleState.decode(await self._store.get(key), now=now, rule=rule)
            waits[counter] = state.retry_after(rule, now)
        return ThrottleDecision.combine(waits)

    async def record_failure(
        self, username: str, client_ip: str, *, request_id: str | None = None
    ) -> ThrottleDecision:
        """Count a failed attempt on every counter; the decision for the next attempt."""
        now = self._clock.now()
        waits: dict[ThrottleCounter, float] = {}
        locked: list[ThrottleCounter] = []
        for counter, key in self._keys(username, client_ip).items():
            rule = self._policy.rule(counter)
            before, after = await self._bump(key, counter, now)
            waits[counter] = after.retry_after(rule, now)
            if rule.delay_for(before.failures) <= 0 < rule.delay_for(after.failures):
                locked.append(counter)
        decision = ThrottleDecision.combine(waits)
        self._emit(
            EventName.AUTHN_LOGIN_FAIL,
            Outcome.FAILURE,
            username=username,
            client_ip=client_ip,
            request_id=request_id,
            details={"reason": "invalid_credentials"},
        )
        for counter in locked:
            self._emit(
                EventName.AUTHN_LOGIN_LOCK,
                Outcome.BLOCKED,
                username=username,
                client_ip=client_ip,
                request_id=request_id,
                details={"counter": counter.value, "retry_after": round(waits[counter], 3)},
            )
        return decision

    async def _bump(
        self, key: str, counter: ThrottleCounter, now: float
    ) -> tuple[ThrottleState, ThrottleState]:
        rule = self._policy.rule(counter)
        for _ in range(_CAS_ATTEMPTS):
            raw = await self._store.get(key)
            before = ThrottleState.decode(raw, now=now, rule=rule)
            after = before.failed(now)
            if await self._store.compare_and_set(key, raw, after.encode(), rule.window):
                return before, after
        raise StoreError(
            f"login throttle counter changed {_CAS_ATTEMPTS} times during one update; "
            "the store is under heavy contention"
        )

    async def record_success(
        self, username: str, client_ip: str, *, request_id: str | None = None
    ) -> None:
        """Clear the (account, client) counter and audit the login. The account-wide and
        client counters are left alone (see :mod:`bastion.core.throttle`)."""
        keys = self._keys(username, client_ip)
        pair = keys.get(ThrottleCounter.PAIR)
        if pair is not None:
            await self._store.delete(pair)
        self._emit(
            EventName.AUTHN_LOGIN_SUCCESS,
            Outcome.SUCCESS,
            username=username,
            client_ip=client_ip,
            request_id=request_id,
            details=None,
        )

    async def attempt(
        self,
        username: str,
        client_ip: str,
        verify: Callable[[], Awaitable[bool]],
        *,
        request_id: str | None = None,
    ) -> LoginAttempt:
        """Check the throttle, run ``verify`` (the password check) only when allowed, and
        record the result. ``verify`` should cost the same for unknown users (see
        :meth:`bastion.passwords.PasswordHasher.verify_and_update`)."""
        decision = await self.check(username, client_ip)
        if not decision.allowed:
            details: dict[str, str | float | None] = {
                "reason": "throttled",
                "counter": None if decision.counter is None else decision.counter.value,
            }
            self._emit(
                EventName.AUTHN_LOGIN_FAIL,
                Outcome.BLOCKED,
                username=username,
                client_ip=client_ip,
                request_id=request_id,
                details=details,
            )
            return LoginAttempt(LoginOutcome.THROTTLED, decision)
        if await verify():
            await self.record_success(username, client_ip, request_id=request_id)
            return LoginAttempt(LoginOutcome.SUCCESS, ThrottleDecision(allowed=True))
        after = await self.record_failure(username, client_ip, request_id=request_id)
        return LoginAttempt(LoginOutcome.INVALID, after)

    def _emit(
        self,
        name: EventName,
        outcome: Outcome,
        *,
        username: str,
        client_ip: str,
        request_id: str | None,
        details: dict[str, str | float | None] | None,
    ) -> None:
        if self._auditor is None:
            return
        account = normalize_username(username)
        self._auditor.emit(
            name,
            outcome=outcome,
            user=account or None,
            client_ip=client_ip,
            request_id=request_id,
            details=details,
        )

    def __repr__(self) -> str:
        return f"LoginThrottle(store={self._store!r}, policy={self._policy!r})"
