"""Login throttling over any store: counters reserved before the password check, exponential
back-off, device cookies, audit events.

The decisions are in :mod:`bastion.core.throttle` (read its docstring for the model). Here the
counters live in a :class:`~bastion.stores.base.Store`, one key each, updated by
compare-and-set so that concurrent attempts are all counted, across processes for the SQLite
and Redis stores::

    throttle:pair:<hash(account)>:<hash(client)>
    throttle:account:<hash(account)>
    throttle:client:<hash(client)>
    throttle:device:<hash(device cookie nonce)>

Identifiers in keys are keyed hashes (HMAC-SHA256 under a subkey of the server key, purpose
``throttle:keys``): a leaked store does not list who tried to log in from where. The hashes are
names under every key of the ring (:meth:`~bastion.core.keys.KeyRing.lookup`), current first:
each counter is read under the first name that holds it, and updated there, so counters made
before a key rotation keep counting after it (a new counter is made under the current name,
and an old one expires ``window`` seconds after its last failure). While the ring holds older
keys, a counter that does not exist costs one read per key. Device cookies made under an older
key of the ring stay valid for as long as that key is in the ring.

**Reserve, then verify.** :meth:`LoginThrottle.attempt` counts the attempt as a failure on
every counter (one compare-and-set each, which re-checks the back-off against the value it
replaces) *before* it calls ``verify``; a counter that refuses undoes the reservations already
made. A right password then refunds the reservation (the pair counter is cleared). So 60
concurrent wrong guesses from one client check exactly as many passwords as 60 guesses in a
row would: a check-then-record design lets them all through before the first failure lands.
A ``verify`` that raises leaves its reservation counted as a failure.

**Device cookies.** A successful :meth:`~LoginThrottle.attempt` hands back
``LoginAttempt.device_cookie``: a value signed for this account (purpose
``throttle:device-cookie`` on the key ring; it carries a keyed hash of the account, a random
nonce and its signing time, so it expires after ``policy.device_cookie_max_age``). Set it on
the response (:meth:`LoginThrottle.device_cookie` builds the ``Set-Cookie``) and pass it back
as ``device_cookie=`` on later attempts. With a valid, unlocked device cookie for the account,
failures count on that cookie's own counter instead of the account-wide one, and the
account-wide back-off does not apply: the owner's browser gets in while a distributed guesser
keeps the account-wide counter tripped. Without one, a client may still pass an app-provided
``challenge`` (a CAPTCHA or a second factor), called only when the account-wide counter alone
stands in the way. A forged, expired or locked-out cookie, or one for another account, counts
as no cookie.

The store logic is written once, as generator flows (:mod:`bastion.engine.flows`), and run by
two drivers: every async method has a blocking ``*_sync`` twin for WSGI apps (Flask) that
drives the same flow on the store's synchronous side (``store.sync``), without an event loop.

Use :meth:`LoginThrottle.attempt` (or :meth:`LoginThrottle.attempt_sync`) around the password
check. :meth:`~LoginThrottle.check`, :meth:`~LoginThrottle.record_failure` and
:meth:`~LoginThrottle.record_success` are there for flows that cannot wrap the check; they do
not reserve, so concurrent requests between a ``check`` and its ``record_failure`` all pass.
Round trips of one ``attempt``: 3 reads (4 with a device cookie) when throttled; then 3
compare-and-sets to reserve; nothing more on failure; on success 2 compare-and-sets to refund
and one delete of the pair counter (a compare-and-set costs one more read only when another
request changed the counter meanwhile). Audit events: ``authn_login_success``,
``authn_login_fail`` (also for a throttled attempt, with ``reason=throttled``),
``authn_login_lock`` when a counter starts delaying attempts, and ``authn_login_fail_max`` (an
alert on the account: it is under attack, only device cookies and challenges get through) when
the account-wide counter does.
"""

from __future__ import annotations

import enum
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, TypeVar

from bastion.core.audit import EventName, Outcome
from bastion.core.clock import system_clock
from bastion.core.cookies import Cookie, SameSite
from bastion.core.environment import is_production
from bastion.core.keys import KeyRing
from bastion.core.signing import TimestampSigner
from bastion.core.throttle import (
    BackoffRule,
    ThrottleCounter,
    ThrottleDecision,
    ThrottlePolicy,
    ThrottleState,
    client_group,
    normalize_username,
)
from bastion.engine.flows import (
    CompareAndSet,
    Delete,
    Done,
    Get,
    Write,
    drive_async,
    drive_sync,
    update,
)
from bastion.errors import ConfigurationError, StoreBusy
from bastion.stores.base import require_sync, sync_side

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.core.audit import Auditor
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.engine.flows import Flow
    from bastion.stores.base import Store, SyncStore

__all__ = [
    "DEVICE_COOKIE_NAME",
    "DEVICE_COOKIE_NAME_INSECURE",
    "LoginAttempt",
    "LoginOutcome",
    "LoginThrottle",
]

DEVICE_COOKIE_NAME: Final = "__Host-bastion-device"
"""The device cookie's name over HTTPS (``__Host-``: Secure, Path=/, no Domain)."""

DEVICE_COOKIE_NAME_INSECURE: Final = "bastion-device"
"""The device cookie's name in plain-HTTP development (a ``__Host-`` cookie needs Secure)."""

logger = logging.getLogger("bastion.security.throttle")

_COUNTER: Final = "a login throttle counter"
_DEVICE_NONCE_BYTES: Final = 16
_DEVICE_COOKIE_MAX_LENGTH: Final = 256
_RESERVATION_ORDER: Final = (
    ThrottleCounter.PAIR,
    ThrottleCounter.DEVICE,
    ThrottleCounter.ACCOUNT,
    ThrottleCounter.CLIENT,
)
_T = TypeVar("_T")


class LoginOutcome(enum.StrEnum):
    SUCCESS = "success"
    INVALID = "invalid"
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """What :meth:`LoginThrottle.attempt` decided. ``THROTTLED`` means the password was not
    even checked: answer 429 with ``Retry-After: decision.retry_after_header``.

    ``device_cookie`` is set on ``SUCCESS``: a fresh device cookie value for the account, to
    send to the browser (see :meth:`LoginThrottle.device_cookie`). ``challenge_required`` is
    true when the attempt was refused by the account-wide counter alone: the account is under
    attack, and a client with a device cookie, or one that passes the app's ``challenge``,
    would have been let through.
    """

    outcome: LoginOutcome
    decision: ThrottleDecision
    device_cookie: str | None = field(default=None, repr=False)
    challenge_required: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome is LoginOutcome.SUCCESS

    @property
    def http_status(self) -> int:
        """200 on success, 401 for wrong credentials, 429 when throttled."""
        return {LoginOutcome.SUCCESS: 200, LoginOutcome.INVALID: 401}.get(self.outcome, 429)


@dataclass(frozen=True, slots=True)
class _Reading:
    """The counters as read before a password check: key and raw value of each, the decision
    they give, and whether the account-wide counter alone refuses. The raw values are the
    expected values of the reservation's compare-and-sets."""

    keys: dict[ThrottleCounter, str]
    raws: dict[ThrottleCounter, bytes | None]
    decision: ThrottleDecision
    account_only: bool = False


@dataclass(frozen=True, slots=True)
class _Reserved:
    """One counter's reservation: the state before and after, and the value written."""

    counter: ThrottleCounter
    key: str
    before: ThrottleState
    after: ThrottleState
    written: bytes


@dataclass(frozen=True, slots=True)
class _Reservation:
    """Every counter reserved (``refused`` is None), or the decision of the counter that
    refused (the reservations made before it were undone)."""

    reserved: tuple[_Reserved, ...]
    refused: ThrottleDecision | None
    account_only: bool = False


class LoginThrottle:
    """Counts failed logins in ``store`` under ``policy`` and decides who must wait.

    The ``*_sync`` methods need a store with a synchronous side (memory, SQLite, Redis all
    have one); they raise :class:`~bastion.errors.ConfigurationError` otherwise.
    """

    __slots__ = (
        "_auditor",
        "_clock",
        "_device_signer",
        "_insecure_logged",
        "_names",
        "_policy",
        "_prefix",
        "_production",
        "_store",
        "_sync",
    )

    def __init__(
        self,
        store: Store,
        keyring: KeyRing | SecretKey,
        *,
        policy: ThrottlePolicy | None = None,
        clock: Clock = system_clock,
        auditor: Auditor | None = None,
        prefix: str = "throttle:",
        production: bool | None = None,
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
        self._device_signer = TimestampSigner(
            keyring,
            "throttle:device-cookie",
            max_age=self._policy.device_cookie_max_age,
            clock=clock,
            max_length=_DEVICE_COOKIE_MAX_LENGTH,
        )
        self._clock = clock
        self._auditor = auditor
        self._prefix = prefix
        self._production = is_production() if production is None else bool(production)
        self._insecure_logged = False

    # -- drivers -------------------------------------------------------------------------------

    def _run_sync(self, flow: Flow[_T]) -> _T:
        return drive_sync(flow, require_sync(self._sync, self._store))

    # -- device cookies ------------------------------------------------------------------------

    def new_device_cookie(self, username: str) -> str:
        """A fresh device cookie value for ``username`` (``attempt`` makes one on every
        success; call this when a login succeeds some other way, such as single sign-on)."""
        account = normalize_username(username)
        if not account:
            raise ConfigurationError(
                "a device cookie needs a non-empty user name", setting="username"
            )
        nonce = secrets.token_urlsafe(_DEVICE_NONCE_BYTES)
        return self._device_signer.sign(f"{self._hash('device-account', account)}.{nonce}")

    @staticmethod
    def device_cookie_name(*, secure: bool = True) -> str:
        """The name :meth:`device_cookie` gives the cookie: read the browser's value from it."""
        return DEVICE_COOKIE_NAME if secure else DEVICE_COOKIE_NAME_INSECURE

    def device_cookie(self, value: str, *, secure: bool = True) -> Cookie:
        """The cookie that carries a device cookie value: ``__Host-bastion-device``
        (HttpOnly, SameSite=Strict, lasting ``policy.device_cookie_max_age``), or
        ``bastion-device`` without ``Secure`` when ``secure=False`` (plain-HTTP development).
        Send ``.serialize()`` as a ``Set-Cookie`` header.

        ``secure=False`` is an opt-out: the cookie then travels over plain HTTP, where anyone
        on the network can copy it and spend its guesses past the account-wide counter. It is
        logged (once per throttle) on ``bastion.security.throttle``, and refused with a
        :class:`~bastion.errors.ConfigurationError` in production (``production=`` of the
        constructor; ``None`` reads ``ENV`` / ``BASTION_ENV``)."""
        if not secure:
            if self._production:
                raise ConfigurationError(
                    "device_cookie(secure=False) sends the device cookie over plain HTTP and is "
                    "refused when ENV=production; serve the site over HTTPS and keep "
                    "secure=True (the __Host-bastion-device cookie)",
                    setting="secure",
                )
            if not self._insecure_logged:
                self._insecure_logged = True
                logger.warning(
                    "bastion throttle: device_cookie(secure=False): the device cookie may travel "
                    "over plain HTTP (setting secure). Never use it in production"
                )
        return Cookie(
            name=self.device_cookie_name(secure=secure),
            value=value,
            max_age=int(self._policy.device_cookie_max_age),
            secure=secure,
            same_site=SameSite.STRICT,
        )

    def _device_key(self, account: str, token: str | None) -> list[str] | None:
        """The counter key of a device cookie that is valid for ``account``, else None
        (absent, malformed, forged, expired, or made for another account)."""
        if not account or not token or not isinstance(token, str):
            return None
        verified = self._device_signer.verify(token)
        if not verified.valid or verified.value is None:
            return None
        tag, dot, nonce = verified.value.partition(b".")
        if not dot or not nonce:
            return None
        # The tag was made under the ring's key of the day: any key of the ring may match.
        tags = self._hashes("device-account", account)
        if not any(hmac.compare_digest(tag, t.encode("ascii")) for t in tags):
            return None
        nonce_text = nonce.decode("ascii", "replace")
        return [f"{self._prefix}device:{h}" for h in self._hashes("device", nonce_text)]

    # -- keys and flows ------------------------------------------------------------------------

    def _hashes(self, kind: str, value: str) -> tuple[str, ...]:
        """The hash of ``value`` under every key of the ring, current first."""
        message = kind.encode("ascii") + b"\x00" + value.encode("utf-8", "surrogatepass")
        return self._names.names(message)

    def _hash(self, kind: str, value: str) -> str:
        """The hash of ``value`` under the ring's current key (what new values are made with)."""
        return self._hashes(kind, value)[0]

    def _candidates(
        self, username: str, client_ip: str, device: list[str] | None = None
    ) -> dict[ThrottleCounter, list[str]]:
        """Every store key each counter may live under, current key first."""
        account = normalize_username(username)
        clients = self._hashes("client", client_group(client_ip))
        keys = {ThrottleCounter.CLIENT: [f"{self._prefix}client:{c}" for c in clients]}
        if account:
            users = self._hashes("user", account)
            pairs = zip(users, clients, strict=True)
            keys[ThrottleCounter.PAIR] = [f"{self._prefix}pair:{u}:{c}" for u, c in pairs]
            keys[ThrottleCounter.ACCOUNT] = [f"{self._prefix}account:{u}" for u in users]
            if device is not None:
                keys[ThrottleCounter.DEVICE] = device
        return keys

    def _read_flow(
        self, username: str, client_ip: str, device: list[str] | None = None
    ) -> Flow[_Reading]:
        """One read per counter (one per key of the ring for a counter found under none but
        the last), and the decision they give now. Each counter is read under the first name
        that holds it, and updated there, so counters made before a key rotation keep counting
        after it. With a device cookie whose own counter allows an attempt, the account-wide
        counter is left out of the decision (and of the reservation); a locked-out device
        cookie counts as none."""
        keys: dict[ThrottleCounter, str] = {}
        raws: dict[ThrottleCounter, bytes | None] = {}
        for counter, names in self._candidates(username, client_ip, device).items():
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
        if ThrottleCounter.DEVICE in waits:
            if waits[ThrottleCounter.DEVICE] > 0:  # a locked-out cookie: treated as none
                del keys[ThrottleCounter.DEVICE], raws[ThrottleCounter.DEVICE]
                del waits[ThrottleCounter.DEVICE]
            else:  # a trusted device: its own counter stands in for the account-wide one
                del keys[ThrottleCounter.ACCOUNT], raws[ThrottleCounter.ACCOUNT]
                del waits[ThrottleCounter.ACCOUNT]
        others = [wait for counter, wait in waits.items() if counter is not ThrottleCounter.ACCOUNT]
        account_only = waits.get(ThrottleCounter.ACCOUNT, 0.0) > 0 and max(others, default=0.0) <= 0
        return _Reading(keys, raws, ThrottleDecision.combine(waits), account_only)

    def _check_flow(self, username: str, client_ip: str) -> Flow[ThrottleDecision]:
        return (yield from self._read_flow(username, client_ip)).decision

    def _reserve_flow(
        self, reading: _Reading, *, exempt: ThrottleCounter | None = None
    ) -> Flow[_Reservation]:
        """Count the attempt as a failure on every counter, each by one compare-and-set that
        re-checks the counter's back-off against the value it replaces (a fresh read and
        another try when another request changed it meanwhile). A counter that refuses undoes
        the reservations already made. ``exempt`` is counted but not checked (the account-wide
        counter, after the app's challenge was passed)."""
        now = self._clock.now()
        reserved: list[_Reserved] = []
        # The narrowest counter first: a guess the pair counter refuses never holds a
        # reservation on the client counter that other accounts' logins would then see.
        for counter in sorted(reading.keys, key=_RESERVATION_ORDER.index):
            rule = self._policy.rule(counter)

            def reserve(
                key: str,
                raw: bytes | None,
                counter: ThrottleCounter = counter,
                rule: BackoffRule = rule,
            ) -> Write[_Reserved | float] | Done[_Reserved | float]:
                before = ThrottleState.decode(raw, now=now, rule=rule)
                wait = before.retry_after(rule, now)
                if wait > 0 and counter is not exempt:
                    return Done(wait)
                after = before.failed(now)
                written = after.encode()
                return Write(written, _Reserved(counter, key, before, after, written), rule.window)

            try:
                got = yield from update(
                    reading.keys[counter], reserve, current=reading.raws[counter], what=_COUNTER
                )
            except StoreBusy:
                yield from self._refund_flow(reserved)
                raise
            if not isinstance(got, _Reserved):
                yield from self._refund_flow(reserved)
                refused = ThrottleDecision(allowed=False, retry_after=got, counter=counter)
                only = counter is ThrottleCounter.ACCOUNT
                return _Reservation((), refused, account_only=only)
            reserved.append(got)
        return _Reservation(tuple(reserved), None)

    def _refund_flow(self, reserved: list[_Reserved] | tuple[_Reserved, ...]) -> Flow[None]:
        """Give back one reserved failure on each counter; the pair counter is cleared instead
        (a successful login clears it; an undone reservation refunds it like the others).

        While the counter still holds exactly what the reservation wrote, the refund restores
        what was there before, time of the last failure included: keeping the reservation's
        time would make a success look like a failure that just happened, restart a back-off
        that had run out for every client sharing the counter (an office behind one address)
        and keep failures older than the window alive for as long as someone logs in. When
        another attempt changed the counter meanwhile, one failure is taken off and the time
        stays, so a refund never shortens a wait that another attempt began."""
        now = self._clock.now()
        for item in reserved:
            rule = self._policy.rule(item.counter)
            if (yield CompareAndSet(item.key, item.written, item.before.encode(), rule.window)):
                continue

            def refund(
                _key: str, raw: bytes | None, rule: BackoffRule = rule
            ) -> Write[None] | Done[None]:
                state = ThrottleState.decode(raw, now=now, rule=rule)
                if state.failures == 0:
                    return Done(None)
                return Write(state.refunded().encode(), None, rule.window)

            yield from update(item.key, refund, what=_COUNTER)

    def _failure_flow(
        self, reading: _Reading, username: str, client_ip: str, request_id: str | None
    ) -> Flow[ThrottleDecision]:
        """Count one failure on every counter, unconditionally (``record_failure``)."""
        now = self._clock.now()
        reserved: list[_Reserved] = []
        for counter, key in reading.keys.items():
            rule = self._policy.rule(counter)

            def fail(
                key: str,
                raw: bytes | None,
                counter: ThrottleCounter = counter,
                rule: BackoffRule = rule,
            ) -> Write[_Reserved]:
                before = ThrottleState.decode(raw, now=now, rule=rule)
                after = before.failed(now)
                written = after.encode()
                return Write(written, _Reserved(counter, key, before, after, written), rule.window)

            reserved.append(
                (yield from update(key, fail, current=reading.raws[counter], what=_COUNTER))
            )
        return self._failed(reserved, username, client_ip, request_id)

    def _failed(
        self,
        reserved: list[_Reserved] | tuple[_Reserved, ...],
        username: str,
        client_ip: str,
        request_id: str | None,
    ) -> ThrottleDecision:
        """Audit a failure whose counting is done; the decision for the next attempt."""
        now = self._clock.now()
        waits: dict[ThrottleCounter, float] = {}
        locked: list[ThrottleCounter] = []
        for item in reserved:
            rule = self._policy.rule(item.counter)
            waits[item.counter] = item.after.retry_after(rule, now)
            if rule.delay_for(item.before.failures) <= 0 < rule.delay_for(item.after.failures):
                locked.append(item.counter)
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
            if counter is ThrottleCounter.ACCOUNT:
                self._emit(
                    EventName.AUTHN_LOGIN_FAIL_MAX,
                    Outcome.BLOCKED,
                    username=username,
                    client_ip=client_ip,
                    request_id=request_id,
                    details={
                        "counter": counter.value,
                        "max": self._policy.account.free_attempts,
                        "action": "device_cookie_or_challenge_only",
                    },
                )
        return ThrottleDecision.combine(waits)

    def _record_failure_flow(
        self, username: str, client_ip: str, request_id: str | None
    ) -> Flow[ThrottleDecision]:
        reading = yield from self._read_flow(username, client_ip)
        return (yield from self._failure_flow(reading, username, client_ip, request_id))

    def _success_flow(
        self,
        reserved: tuple[_Reserved, ...] | None,
        username: str,
        client_ip: str,
        request_id: str | None,
    ) -> Flow[None]:
        """Clear the pair counter and refund the other reservations (``reserved`` is None for
        :meth:`record_success`, which only clears the pair counter)."""
        if reserved is None:
            for pair in self._candidates(username, client_ip).get(ThrottleCounter.PAIR, []):
                yield Delete(pair)
        else:
            yield from self._refund_flow(
                [item for item in reserved if item.counter is not ThrottleCounter.PAIR]
            )
            for item in reserved:
                if item.counter is ThrottleCounter.PAIR:
                    yield Delete(item.key)
        self._emit(
            EventName.AUTHN_LOGIN_SUCCESS,
            Outcome.SUCCESS,
            username=username,
            client_ip=client_ip,
            request_id=request_id,
            details=None,
        )

    def _finish(
        self,
        reservation: _Reservation,
        valid: bool,
        username: str,
        client_ip: str,
        request_id: str | None,
    ) -> Flow[LoginAttempt]:
        if valid:
            yield from self._success_flow(reservation.reserved, username, client_ip, request_id)
            cookie = self.new_device_cookie(username) if normalize_username(username) else None
            return LoginAttempt(
                LoginOutcome.SUCCESS, ThrottleDecision(allowed=True), device_cookie=cookie
            )
        after = self._failed(reservation.reserved, username, client_ip, request_id)
        return LoginAttempt(LoginOutcome.INVALID, after)

    def _throttled(
        self,
        decision: ThrottleDecision,
        account_only: bool,
        username: str,
        client_ip: str,
        request_id: str | None,
    ) -> LoginAttempt:
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
        return LoginAttempt(LoginOutcome.THROTTLED, decision, challenge_required=account_only)

    def _device_for(self, username: str, device_cookie: str | None) -> list[str] | None:
        return self._device_key(normalize_username(username), device_cookie)

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
        device_cookie: str | None = None,
        challenge: Callable[[], Awaitable[bool]] | None = None,
    ) -> LoginAttempt:
        """Reserve the attempt on every counter, run ``verify`` (the password check) only when
        that succeeded, then refund the reservation on success or keep it as the failure.

        ``verify`` should cost the same for unknown users (see
        :meth:`bastion.passwords.PasswordHasher.verify_and_update`). ``device_cookie`` is the
        value of the browser's device cookie, if any (see the module docstring).
        ``challenge`` is awaited only when the account-wide counter alone refuses the
        attempt: when it returns true, the attempt goes ahead (and still counts on that
        counter).
        """
        device = self._device_for(username, device_cookie)
        reading = await drive_async(self._read_flow(username, client_ip, device), self._store)
        exempt: ThrottleCounter | None = None
        if not reading.decision.allowed:
            if not (reading.account_only and challenge is not None and await challenge()):
                return self._throttled(
                    reading.decision, reading.account_only, username, client_ip, request_id
                )
            exempt = ThrottleCounter.ACCOUNT
        reservation = await drive_async(self._reserve_flow(reading, exempt=exempt), self._store)
        if reservation.refused is not None:
            return self._throttled(
                reservation.refused, reservation.account_only, username, client_ip, request_id
            )
        valid = await verify()
        flow = self._finish(reservation, valid, username, client_ip, request_id)
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
        device_cookie: str | None = None,
        challenge: Callable[[], bool] | None = None,
    ) -> LoginAttempt:
        """:meth:`attempt` for WSGI apps: ``verify`` and ``challenge`` are plain functions
        (for example ``lambda: hasher.verify_and_update(stored, password).valid``)."""
        device = self._device_for(username, device_cookie)
        reading = self._run_sync(self._read_flow(username, client_ip, device))
        exempt: ThrottleCounter | None = None
        if not reading.decision.allowed:
            if not (reading.account_only and challenge is not None and challenge()):
                return self._throttled(
                    reading.decision, reading.account_only, username, client_ip, request_id
                )
            exempt = ThrottleCounter.ACCOUNT
        reservation = self._run_sync(self._reserve_flow(reading, exempt=exempt))
        if reservation.refused is not None:
            return self._throttled(
                reservation.refused, reservation.account_only, username, client_ip, request_id
            )
        valid = verify()
        return self._run_sync(self._finish(reservation, valid, username, client_ip, request_id))

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
