"""Login throttling over any store: three counters, exponential back-off, audit events.

The decisions are in :mod:`bastion.core.throttle` (read its docstring for the model). Here the
counters live in a :class:`~bastion.stores.base.Store`, one key each, updated by
compare-and-set so that concurrent failures are all counted, across processes for the SQLite
and Redis stores::

    throttle:pair:<hash(account)>:<hash(client)>
    throttle:account:<hash(account)>
    throttle:client:<hash(client)>

Identifiers in keys are keyed hashes (HMAC-SHA256 under a subkey of the server key, purpose
``throttle:keys``): a leaked store does not list who tried to log in from where. The hashes are
names under every key of the ring (:meth:`~bastion.core.keys.KeyRing.lookup`), current first:
each counter is read under the first name that holds it, and updated there, so counters made
before a key rotation keep counting after it (a new counter is made under the current name,
and an old one expires ``window`` seconds after its last failure). While the ring holds older
keys, a counter that does not exist costs one read per key.

The store logic is written once, as generator flows (:mod:`bastion.engine.flows`), and run by
two drivers: every async method has a blocking ``*_sync`` twin for WSGI apps (Flask) that
drives the same flow on the store's synchronous side (``store.sync``), without an event loop.

Use :meth:`LoginThrottle.attempt` (or :meth:`LoginThrottle.attempt_sync`) around the password
check, or :meth:`~LoginThrottle.check`, :meth:`~LoginThrottle.record_failure` and
:meth:`~LoginThrottle.record_success` by hand. Round trips of one ``attempt``: 3 reads when
throttled; 3 reads, plus one delete when the (account, client) counter had failures, on
success; 3 reads and 3 compare-and-sets on failure (the values read before the password check
are the expected values, so a counter costs one more read only when another request changed
it meanwhile). Audit events: ``authn_login_success``, ``authn_login_fail`` (also for a
throttled attempt, with ``reason=throttled``), and ``authn_login_lock`` when a counter starts
delaying attempts.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeVar

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
from bastion.engine.flows import CompareAndSet, Delete, Get, drive_async, drive_sync
from bastion.engine.syncside import require_sync, sync_side
from bastion.errors import ConfigurationError, StoreError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.engine.flows import Flow
    from bastion.stores.base import Store, SyncStore

__all__ = ["LoginAttempt", "LoginOutcome", "LoginThrottle"]

_CAS_ATTEMPTS: Final = 32
_T = TypeVar("_T")


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


@dataclass(frozen=True, slots=True)
class _Reading:
    """The counters as read before a password check: key and raw value of each, and the
    decision they give. The raw values are the expected values of the later writes."""

    keys: dict[ThrottleCounter, str]
    raws: dict[ThrottleCounter, bytes | None]
    decision: ThrottleDecision


class LoginThrottle:
    """Counts failed logins in ``store`` under ``policy`` and decides who must wait.

    The ``*_sync`` methods need a store with a synchronous side (memory, SQLite, Redis all
    have one); they raise :class:`~bastion.errors.ConfigurationError` otherwise.
    """

    __slots__ = ("_auditor", "_clock", "_names", "_policy", "_prefix", "_store", "_sync")

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
        self._sync: SyncStore | None = sync_side(store)
        self._names = KeyRing.coerce(keyring).lookup("throttle:keys")
        self._policy = policy or ThrottlePolicy()
        self._clock = clock
        self._auditor = auditor
        self._prefix = prefix

    # -- drivers -------------------------------------------------------------------------------

    def _run_sync(self, flow: Flow[_T]) -> _T:
        return drive_sync(flow, require_sync(self._sync, self._store))

    # -- keys and flows ------------------------------------------------------------------------

    def _hashes(self, kind: str, value: str) -> tuple[str, ...]:
        """The hash of ``value`` under every key of the ring, current first."""
        message = kind.encode("ascii") + b"\x00" + value.encode("utf-8", "surrogatepass")
        return self._names.names(message)

    def _candidates(self, username: str, client_ip: str) -> dict[ThrottleCounter, list[str]]:
        """Every store key each counter may live under, current key first."""
        account = normalize_username(username)
        clients = self._hashes("client", client_group(client_ip))
        keys = {ThrottleCounter.CLIENT: [f"{self._prefix}client:{c}" for c in clients]}
        if account:
            users = self._hashes("user", account)
            pairs = zip(users, clients, strict=True)
            keys[ThrottleCounter.PAIR] = [f"{self._prefix}pair:{u}:{c}" for u, c in pairs]
            keys[ThrottleCounter.ACCOUNT] = [f"{self._prefix}account:{u}" for u in users]
        return keys

    def _read_flow(self, username: str, client_ip: str) -> Flow[_Reading]:
        """One read per counter (one per key of the ring for a counter found under none but
        the last), and the decision they give now."""
        keys: dict[ThrottleCounter, str] = {}
        raws: dict[ThrottleCounter, bytes | None] = {}
        for counter, names in self._candidates(username, client_ip).items():
            keys[counter], raws[counter] = names[0], None
            for name in names:
                raw = yield Get(name)
                if raw is not None:
                    keys[counter], raws[counter] = name, raw
                    break
        now = self._clock.now()
        waits: dict[ThrottleCounter, float] = {}
        for counter, raw in raws.items():
            rule = self._policy.rule(counter)
            waits[counter] = ThrottleState.decode(raw, now=now, rule=rule).retry_after(rule, now)
        return _Reading(keys, raws, ThrottleDecision.combine(waits))

    def _check_flow(self, username: str, client_ip: str) -> Flow[ThrottleDecision]:
        return (yield from self._read_flow(username, client_ip)).decision

    def _failure_flow(
        self, reading: _Reading, username: str, client_ip: str, request_id: str | None
    ) -> Flow[ThrottleDecision]:
        """Count one failure on every counter: one compare-and-set each while the value read
        earlier is still current, a fresh read and another try when it is not."""
        now = self._clock.now()
        waits: dict[ThrottleCounter, float] = {}
        locked: list[ThrottleCounter] = []
        for counter, key in reading.keys.items():
            rule = self._policy.rule(counter)
            raw = reading.raws[counter]
            for _ in range(_CAS_ATTEMPTS):
                before = ThrottleState.decode(raw, now=now, rule=rule)
                after = before.failed(now)
                if (yield CompareAndSet(key, raw, after.encode(), rule.window)):
                    break
                raw = yield Get(key)
            else:
                raise StoreError(
                    f"login throttle counter changed {_CAS_ATTEMPTS} times during one update; "
                    "the store is under heavy contention"
                )
            waits[counter] = after.retry_after(rule, now)
            if rule.delay_for(before.failures) <= 0 < rule.delay_for(after.failures):
                locked.append(counter)
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
        return ThrottleDecision.combine(waits)

    def _record_failure_flow(
        self, username: str, client_ip: str, request_id: str | None
    ) -> Flow[ThrottleDecision]:
        reading = yield from self._read_flow(username, client_ip)
        return (yield from self._failure_flow(reading, username, client_ip, request_id))

    def _success_flow(
        self, reading: _Reading | None, username: str, client_ip: str, request_id: str | None
    ) -> Flow[None]:
        """Clear the pair counter (skipped when ``reading`` shows it was already clear)."""
        if reading is None:
            pairs = self._candidates(username, client_ip).get(ThrottleCounter.PAIR, [])
        else:
            pair = reading.keys.get(ThrottleCounter.PAIR)
            clear = reading.raws.get(ThrottleCounter.PAIR) is not None
            pairs = [pair] if clear and pair is not None else []
        for pair in pairs:
            yield Delete(pair)
        self._emit(
            EventName.AUTHN_LOGIN_SUCCESS,
            Outcome.SUCCESS,
            username=username,
            client_ip=client_ip,
            request_id=request_id,
            details=None,
        )

    def _finish_flow(
        self,
        reading: _Reading,
        valid: bool,
        username: str,
        client_ip: str,
        request_id: str | None,
    ) -> Flow[LoginAttempt]:
        if valid:
            yield from self._success_flow(reading, username, client_ip, request_id)
            return LoginAttempt(LoginOutcome.SUCCESS, ThrottleDecision(allowed=True))
        after = yield from self._failure_flow(reading, username, client_ip, request_id)
        return LoginAttempt(LoginOutcome.INVALID, after)

    def _throttled(
        self, reading: _Reading, username: str, client_ip: str, request_id: str | None
    ) -> LoginAttempt:
        decision = reading.decision
        self._emit(
            EventName.AUTHN_LOGIN_FAIL,
            Outcome.BLOCKED,
            username=username,
            client_ip=client_ip,
            request_id=request_id,
            details={
                "reason": "throttled",
                "counter": None if decision.counter is None else decision.counter.value,
            },
        )
        return LoginAttempt(LoginOutcome.THROTTLED, decision)

    # -- async API -----------------------------------------------------------------------------

    async def check(self, username: str, client_ip: str) -> ThrottleDecision:
        """Whether ``username`` may try a password from ``client_ip`` now. Reads only."""
        return await drive_async(self._check_flow(username, client_ip), self._store)

    async def record_failure(
        self, username: str, client_ip: str, *, request_id: str | None = None
    ) -> ThrottleDecision:
        """Count a failed attempt on every counter; the decision for the next attempt."""
        flow = self._record_failure_flow(username, client_ip, request_id)
        return await drive_async(flow, self._store)

    async def record_success(
        self, username: str, client_ip: str, *, request_id: str | None = None
    ) -> None:
        """Clear the (account, client) counter and audit the login. The account-wide and
        client counters are left alone (see :mod:`bastion.core.throttle`)."""
        await drive_async(self._success_flow(None, username, client_ip, request_id), self._store)

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
        reading = await drive_async(self._read_flow(username, client_ip), self._store)
        if not reading.decision.allowed:
            return self._throttled(reading, username, client_ip, request_id)
        valid = await verify()
        flow = self._finish_flow(reading, valid, username, client_ip, request_id)
        return await drive_async(flow, self._store)

    # -- sync API (WSGI) -----------------------------------------------------------------------

    def check_sync(self, username: str, client_ip: str) -> ThrottleDecision:
        """:meth:`check` on the store's synchronous side."""
        return self._run_sync(self._check_flow(username, client_ip))

    def record_failure_sync(
        self, username: str, client_ip: str, *, request_id: str | None = None
    ) -> ThrottleDecision:
        """:meth:`record_failure` on the store's synchronous side."""
        return self._run_sync(self._record_failure_flow(username, client_ip, request_id))

    def record_success_sync(
        self, username: str, client_ip: str, *, request_id: str | None = None
    ) -> None:
        """:meth:`record_success` on the store's synchronous side."""
        self._run_sync(self._success_flow(None, username, client_ip, request_id))

    def attempt_sync(
        self,
        username: str,
        client_ip: str,
        verify: Callable[[], bool],
        *,
        request_id: str | None = None,
    ) -> LoginAttempt:
        """:meth:`attempt` for WSGI apps: ``verify`` is a plain function (for example
        ``lambda: hasher.verify_and_update(stored, password).valid``)."""
        reading = self._run_sync(self._read_flow(username, client_ip))
        if not reading.decision.allowed:
            return self._throttled(reading, username, client_ip, request_id)
        valid = verify()
        return self._run_sync(self._finish_flow(reading, valid, username, client_ip, request_id))

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
