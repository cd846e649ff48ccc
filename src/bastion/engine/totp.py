"""TOTP second factor (RFC 6238, through pyotp) with replay refusal, and recovery codes.

Needs the ``totp`` extra (``pip install 'bastion[totp]'``: pyotp and segno); both are imported
when first used.

* :meth:`TOTPManager.enroll` makes a secret, its ``otpauth://`` URI and an SVG QR code (segno).
  The application stores the secret with the account (encrypted at rest, ideally) once the user
  has confirmed one code; bastion does not keep it.
* :meth:`TOTPManager.verify` accepts the current code and those one step either side (clock
  drift), and refuses any code whose time step is not newer than the last one accepted for that
  user. The last step lives in the store, updated by compare-and-set, so one code is accepted
  once even by concurrent requests to several processes.
* **Wrong-code budget.** A code has a million values, so verification is bounded per user, in
  the store, whatever path calls it (a second-factor view, a login form that takes the code
  with the password, an enrolment check): before a code is compared, :meth:`TOTPManager.verify`
  reserves one failure on the user's counter by compare-and-set (the login throttle's
  :class:`~bastion.core.throttle.BackoffRule`; default: 5 free failures, then waits from one
  minute doubling up to an hour, forgotten a day after the last failure). While the counter's
  back-off runs, verification answers :attr:`TOTPResult.LOCKED` without comparing the code, so
  N concurrent guesses compare no more codes than N guesses in a row, and a new session (the
  password entered again) does not reset the count. An accepted code, or a used recovery code,
  clears it; a right code that was already used (``REPLAYED``) gives its reservation back.
  Recovery codes (50 bits) are not counted: they stay the owner's way in while TOTP is locked.
* Recovery codes: :meth:`TOTPManager.new_recovery_codes` returns 10 codes to show once and keeps
  only their HMACs; :meth:`TOTPManager.use_recovery_code` accepts each code once.
* The store logic is written once, as generator flows (:mod:`bastion.engine.flows`); every
  async method has a blocking ``*_sync`` twin (``verify_sync``, ``use_recovery_code_sync``...)
  that runs the same flow on ``store.sync``, for WSGI apps (Flask) without an event loop.

Store keys hold keyed hashes of user ids, never the ids::

    totp:step:<hash(user)>       last accepted time step (expires when no longer needed)
    totp:failures:<hash(user)>   wrong codes counted against the budget (expires ``window``
                                 seconds after the last one)
    totp:recovery:<hash(user)>   JSON list of hex HMACs of the unused recovery codes

**Key rotation.** The hashes are names under every key of the ring
(:meth:`~bastion.core.keys.KeyRing.lookup`), current first. A verification reads the step
under each name and refuses any step not newer than the newest found, so a code accepted
just before a rotation is a replay after it; the new step is written under the current name
(the old record expires within ``interval * (2 * valid_window + 2)`` seconds). Recovery codes
are found under the first name that holds a set and checked with the key that made it; a new
set is written under the current name and removes the older ones. A set made under an old key
works while that key stays in the ring's ``previous``: have users make new codes (or wait
until they have) before dropping it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from bastion.core.clock import system_clock
from bastion.core.keys import KeyRing
from bastion.core.throttle import BackoffRule, ThrottleState
from bastion.core.totp import (
    RECOVERY_CODE_COUNT,
    generate_recovery_codes,
    normalize_recovery_code,
    normalize_totp_code,
    validate_totp_secret,
)
from bastion.engine.flows import (
    CompareAndSet,
    Delete,
    Done,
    Get,
    Set,
    Write,
    drive_async,
    drive_sync,
    update,
)
from bastion.errors import ConfigurationError
from bastion.stores.base import require_sync, sync_side

if TYPE_CHECKING:
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey
    from bastion.engine.flows import Flow
    from bastion.stores.base import Store, SyncStore

__all__ = ["DEFAULT_TOTP_FAILURES", "TOTPEnrollment", "TOTPManager", "TOTPResult"]


DEFAULT_TOTP_FAILURES: Final = BackoffRule(
    free_attempts=5, base_delay=60.0, max_delay=3600.0, window=86_400.0
)
"""The default wrong-code budget per user: 6 codes compared at once (5 free failures, the sixth
starts the wait), then one after 1, 2, 4 ... minutes, at most one an hour; forgotten a day
after the last wrong code. About 30 guesses a day against a 10**6 code space."""
_T = TypeVar("_T")


def _pyotp() -> Any:
    try:
        import pyotp  # noqa: PLC0415 (the totp extra is optional and loaded on demand)
    except ImportError:
        raise ConfigurationError(
            "TOTP needs the pyotp package; install it with: pip install 'bastion[totp]'",
            setting="totp",
        ) from None
    return pyotp


def _segno() -> Any:
    try:
        import segno  # noqa: PLC0415 (the totp extra is optional and loaded on demand)
    except ImportError:
        raise ConfigurationError(
            "TOTP QR codes need the segno package; install it with: pip install 'bastion[totp]'",
            setting="totp",
        ) from None
    return segno


class TOTPResult(enum.StrEnum):
    """The verdict on a second-factor code."""

    ACCEPTED = "accepted"
    INVALID = "invalid"
    """Well-formed but wrong (or outside the drift window)."""
    REPLAYED = "replayed"
    """Right, but its time step was already used: a replay, or a second submit."""
    MALFORMED = "malformed"
    """Not a code of the configured number of digits; no store call was made."""
    LOCKED = "locked"
    """Too many wrong codes for this user lately: the code was not compared. The user waits
    for the back-off to run out, or uses a recovery code."""


@dataclass(frozen=True, slots=True)
class TOTPEnrollment:
    """What the enrolment page shows: the ``secret`` (for manual entry), the ``uri`` and the
    QR code ``svg`` encoding it. All three reveal the secret: show them once, over HTTPS."""

    secret: str
    uri: str
    svg: str

    def __repr__(self) -> str:
        return "TOTPEnrollment(secret='**********', uri='otpauth://...', svg='<svg ...>')"


class TOTPManager:
    """TOTP verification and recovery codes for one site (``issuer``), state in ``store``."""

    __slots__ = (
        "_clock",
        "_digits",
        "_failures",
        "_ids",
        "_interval",
        "_issuer",
        "_prefix",
        "_recovery_keys",
        "_store",
        "_sync",
        "_valid_window",
    )

    def __init__(
        self,
        store: Store,
        keyring: KeyRing | SecretKey,
        *,
        issuer: str,
        clock: Clock = system_clock,
        digits: int = 6,
        interval: int = 30,
        valid_window: int = 1,
        failures: BackoffRule = DEFAULT_TOTP_FAILURES,
        prefix: str = "totp:",
    ) -> None:
        if not isinstance(issuer, str) or not issuer.strip() or ":" in issuer:
            raise ConfigurationError(
                f"issuer must be the site's name without ':' (it is shown in the "
                f"authenticator app), got {issuer!r}",
                setting="issuer",
            )
        if digits not in (6, 7, 8):
            raise ConfigurationError(f"digits must be 6, 7 or 8, got {digits!r}", setting="digits")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 15:
            raise ConfigurationError(
                f"interval must be whole seconds >= 15 (30 is standard), got {interval!r}",
                setting="interval",
            )
        if valid_window not in (0, 1, 2):
            raise ConfigurationError(
                f"valid_window must be 0, 1 or 2 steps of drift, got {valid_window!r}",
                setting="valid_window",
            )
        if not isinstance(failures, BackoffRule):
            raise ConfigurationError(
                "failures must be a BackoffRule(free_attempts=...), the wrong-code budget",
                setting="failures",
            )
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ConfigurationError(
                f"prefix must be non-empty text without braces, got {prefix!r}", setting="prefix"
            )
        ring = KeyRing.coerce(keyring)
        self._ids = ring.lookup("totp:ids")
        self._recovery_keys = tuple(key.reveal() for key in ring.derive("totp:recovery"))
        self._store = store
        self._sync: SyncStore | None = sync_side(store)
        self._issuer = issuer.strip()
        self._clock = clock
        self._digits = digits
        self._interval = interval
        self._valid_window = valid_window
        self._failures = failures
        self._prefix = prefix

    def _user_hashes(self, user_id: str) -> tuple[str, ...]:
        """The user's hash under every key of the ring, current first."""
        if not isinstance(user_id, str) or not user_id:
            raise ConfigurationError("user_id must be a non-empty str", setting="user_id")
        return self._ids.names(user_id.encode("utf-8", "surrogatepass"))

    def _totp(self, secret: str) -> Any:
        return _pyotp().TOTP(secret, digits=self._digits, interval=self._interval)

    def enroll(self, account_name: str) -> TOTPEnrollment:
        """A new secret for ``account_name`` (the user's login or e-mail, shown in the app)."""
        if not isinstance(account_name, str) or not account_name or ":" in account_name:
            raise ConfigurationError(
                "account_name must be non-empty text without ':'", setting="account_name"
            )
        secret = validate_totp_secret(_pyotp().random_base32())
        uri = self._totp(secret).provisioning_uri(name=account_name, issuer_name=self._issuer)
        svg = _segno().make(uri, error="m").svg_inline(scale=4, omitsize=False)
        return TOTPEnrollment(secret=secret, uri=uri, svg=svg)

    def _run_sync(self, flow: Flow[_T]) -> _T:
        return drive_sync(flow, require_sync(self._sync, self._store))

    # -- flows ---------------------------------------------------------------------------------

    def _verify_flow(self, user_id: str, secret: str, code: str) -> Flow[TOTPResult]:
        # The secret first, so a damaged one is noticed even while users type malformed codes.
        totp = self._totp(validate_totp_secret(secret))
        cleaned = normalize_totp_code(code, digits=self._digits)
        if cleaned is None:
            return TOTPResult.MALFORMED
        failures = yield from self._reserve_flow(user_id)
        if failures is None:
            return TOTPResult.LOCKED
        now = self._clock.now()
        current = int(now) // self._interval
        matched: int | None = None
        for offset in range(-self._valid_window, self._valid_window + 1):
            expected = totp.at(now, counter_offset=offset)
            # Every offset is compared (no early exit), each in constant time.
            if hmac.compare_digest(expected.encode("ascii"), cleaned.encode("ascii")):
                matched = current + offset
        if matched is None:
            return TOTPResult.INVALID  # the reservation stays: one wrong code counted
        key, *older = (f"{self._prefix}step:{user}" for user in self._user_hashes(user_id))
        floor: int | None = None
        for name in older:  # steps accepted under a key the ring has since rotated out of
            step = _decode_step((yield Get(name)))
            if step is not None and (floor is None or step > floor):
                floor = step
        ttl = float(self._interval * (2 * self._valid_window + 2))

        def consume(_key: str, raw: bytes | None) -> Write[bool] | Done[bool]:
            last = _decode_step(raw)
            if floor is not None and (last is None or floor > last):
                last = floor
            if last is not None and matched <= last:
                return Done(result=False)
            return Write(str(matched).encode("ascii"), result=True, ttl=ttl)

        if not (yield from update(key, consume, what="a TOTP step")):
            # A right code, only used already: not a guess, so the reservation goes back.
            yield from self._refund_flow(failures)
            return TOTPResult.REPLAYED
        yield from self._clear_failures_flow(user_id)
        return TOTPResult.ACCEPTED

    def _failure_keys(self, user_id: str) -> list[str]:
        return [f"{self._prefix}failures:{user}" for user in self._user_hashes(user_id)]

    def _reserve_flow(self, user_id: str) -> Flow[tuple[str, bytes, bytes] | None]:
        """Count one wrong code for ``user_id`` before the code is compared: the counter's key,
        the value written and the value it replaced; None (nothing counted) while the back-off
        runs. The counter is read under the first
        name of the ring that holds it and updated there, so a rotation does not reset it."""
        names = self._failure_keys(user_id)
        key, raw = names[0], None
        for name in names:
            found = yield Get(name)
            if found is not None:
                key, raw = name, found
                break
        rule = self._failures
        now = self._clock.now()

        def reserve(
            key: str, raw: bytes | None
        ) -> Write[tuple[str, bytes, bytes] | None] | Done[tuple[str, bytes, bytes] | None]:
            state = ThrottleState.decode(raw, now=now, rule=rule)
            if state.retry_after(rule, now) > 0:
                return Done(None)
            written = state.failed(now).encode()
            return Write(written, (key, written, state.encode()), rule.window)

        return (yield from update(key, reserve, current=raw, what="a TOTP failure counter"))

    def _refund_flow(self, reservation: tuple[str, bytes, bytes]) -> Flow[None]:
        """Undo a reservation: exactly (the time of the last failure included) while the counter
        holds what it wrote, else one failure off with the time kept (see
        :meth:`bastion.engine.throttle.LoginThrottle` for why)."""
        key, written, before = reservation
        rule = self._failures
        if (yield CompareAndSet(key, written, before, rule.window)):
            return
        now = self._clock.now()

        def refund(_key: str, raw: bytes | None) -> Write[None] | Done[None]:
            state = ThrottleState.decode(raw, now=now, rule=rule)
            if raw is None or state.failures == 0:
                return Done(None)
            return Write(state.refunded().encode(), None, rule.window)

        yield from update(key, refund, what="a TOTP failure counter")

    def _clear_failures_flow(self, user_id: str) -> Flow[None]:
        for name in self._failure_keys(user_id):
            yield Delete(name)

    def _recovery_digest(self, index: int, user_hash: str, code: str) -> str:
        message = user_hash.encode("ascii") + b"\x00" + code.encode("ascii")
        return hmac.digest(self._recovery_keys[index], message, hashlib.sha256).hex()

    def _recovery_store_key(self, user: str) -> str:
        return f"{self._prefix}recovery:{user}"

    def _find_codes_flow(self, user_id: str) -> Flow[tuple[int, str, bytes | None]]:
        """The first stored set of codes, current key first: ``(key index, user hash, raw)``;
        index 0 and ``None`` when the user has none."""
        users = self._user_hashes(user_id)
        for index, user in enumerate(users):
            raw = yield Get(self._recovery_store_key(user))
            if raw is not None:
                return index, user, raw
        return 0, users[0], None

    def _new_codes_flow(self, user_id: str, count: int) -> Flow[tuple[str, ...]]:
        user, *older = self._user_hashes(user_id)
        codes = generate_recovery_codes(count)
        digests = [self._recovery_digest(0, user, _canonical(code)) for code in codes]
        yield Set(self._recovery_store_key(user), json.dumps(digests).encode())
        for name in older:  # the set made under an older key is replaced too
            yield Delete(self._recovery_store_key(name))
        return codes

    def _forget_flow(self, user_id: str) -> Flow[None]:
        for user in self._user_hashes(user_id):
            yield Delete(self._recovery_store_key(user))
        yield from self._clear_failures_flow(user_id)

    def _remaining_flow(self, user_id: str) -> Flow[int]:
        _, _, raw = yield from self._find_codes_flow(user_id)
        return len(_decode_digests(raw))

    def _use_code_flow(self, user_id: str, code: str) -> Flow[bool]:
        cleaned = normalize_recovery_code(code)
        if cleaned is None:
            return False
        index, user, raw = yield from self._find_codes_flow(user_id)
        key = self._recovery_store_key(user)
        wanted = self._recovery_digest(index, user, cleaned)

        def use(_key: str, raw: bytes | None) -> Write[bool] | Done[bool]:
            digests = _decode_digests(raw)
            found = [
                d for d in digests if hmac.compare_digest(d.encode("ascii"), wanted.encode("ascii"))
            ]
            if not found or raw is None:
                return Done(result=False)
            remaining = [d for d in digests if d != wanted]
            return Write(json.dumps(remaining).encode(), result=True)

        if not (yield from update(key, use, current=raw, what="a set of recovery codes")):
            return False
        yield from self._clear_failures_flow(user_id)  # the owner is back in
        return True

    # -- async API -----------------------------------------------------------------------------

    async def verify(self, user_id: str, secret: str, code: str) -> TOTPResult:
        """Check ``code`` against ``secret`` for ``user_id`` and consume its time step.
        A malformed code costs no store call. A well-formed one first reserves a failure on the
        user's wrong-code budget (a read and a compare-and-set; :attr:`TOTPResult.LOCKED`,
        nothing compared, while the budget's back-off runs); a right one then costs a read and
        a compare-and-set of the step, and clears the budget. A ``secret`` that is not base32
        or is shorter than 128 bits raises :class:`~bastion.errors.ConfigurationError` (see
        :func:`~bastion.core.totp.validate_totp_secret`) before any store call."""
        return await drive_async(self._verify_flow(user_id, secret, code), self._store)

    async def new_recovery_codes(
        self, user_id: str, *, count: int = RECOVERY_CODE_COUNT
    ) -> tuple[str, ...]:
        """Fresh recovery codes for ``user_id``, replacing any earlier set. Show them once."""
        return await drive_async(self._new_codes_flow(user_id, count), self._store)

    async def remaining_recovery_codes(self, user_id: str) -> int:
        return await drive_async(self._remaining_flow(user_id), self._store)

    async def use_recovery_code(self, user_id: str, code: str) -> bool:
        """Accept ``code`` once: it is removed from the stored set in the same step."""
        return await drive_async(self._use_code_flow(user_id, code), self._store)

    async def forget(self, user_id: str) -> None:
        """Delete what this manager keeps for ``user_id`` (its recovery codes under every key
        of the ring, its wrong-code budget): for an account being deleted, so a later account
        of the same name starts with none of it. The TOTP secret is the app's to delete."""
        await drive_async(self._forget_flow(user_id), self._store)

    # -- sync API (WSGI) -----------------------------------------------------------------------

    def verify_sync(self, user_id: str, secret: str, code: str) -> TOTPResult:
        """:meth:`verify` on the store's synchronous side."""
        return self._run_sync(self._verify_flow(user_id, secret, code))

    def new_recovery_codes_sync(
        self, user_id: str, *, count: int = RECOVERY_CODE_COUNT
    ) -> tuple[str, ...]:
        """:meth:`new_recovery_codes` on the store's synchronous side."""
        return self._run_sync(self._new_codes_flow(user_id, count))

    def remaining_recovery_codes_sync(self, user_id: str) -> int:
        """:meth:`remaining_recovery_codes` on the store's synchronous side."""
        return self._run_sync(self._remaining_flow(user_id))

    def use_recovery_code_sync(self, user_id: str, code: str) -> bool:
        """:meth:`use_recovery_code` on the store's synchronous side."""
        return self._run_sync(self._use_code_flow(user_id, code))

    def forget_sync(self, user_id: str) -> None:
        """:meth:`forget` on the store's synchronous side."""
        self._run_sync(self._forget_flow(user_id))

    def __repr__(self) -> str:
        return f"TOTPManager(issuer={self._issuer!r}, digits={self._digits})"


def _canonical(code: str) -> str:
    cleaned = normalize_recovery_code(code)
    if cleaned is None:  # generate_recovery_codes always produces valid codes
        raise ConfigurationError("internal error: a generated recovery code did not normalise")
    return cleaned


def _decode_step(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def _decode_digests(raw: bytes | None) -> list[str]:
    if raw is None:
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [item for item in data if isinstance(item, str) and item.isascii()]
