"""HMAC-SHA256 signed values, bound to a purpose, with optional timestamps.

Tokens are ASCII and safe in URLs, cookies and headers without quoting: base64url fields
without padding, joined by ``.`` (which base64url never contains)::

    Signer           <value>.<signature>
    TimestampSigner  <value>.<timestamp>.<signature>

``<value>`` is the base64url of the signed bytes, ``<timestamp>`` the base64url of the signing
time in whole Unix seconds (big-endian, no leading zero byte) and ``<signature>`` the 43-character
base64url of HMAC-SHA256 over a format tag and everything before the last ``.``.

Design notes:

* Purpose separation is in the key, not the format: each signer derives its subkeys once, at
  construction, as ``keyring.derive("signer:" + purpose)``. A value signed for ``"session"``
  never verifies under ``"csrf"``, whatever the payload looks like.
* The signature covers the encoded text and is compared as encoded text, so every character of
  a token is authenticated: no alternative base64 spelling of a valid token verifies.
* :meth:`Signer.verify` tries every key of the ring (newest first) and does not stop at the
  first match, so its timing does not say which key signed. Rings are small (two or three
  keys), so the cost is one HMAC per key on every check; there is deliberately no key id.
* ``verify`` never raises for any token: wrong type, empty, huge, non-ASCII, lone surrogates,
  wrong structure or bad base64 all give a :class:`Verification` with a status. Tokens longer
  than ``max_length`` (default :data:`MAX_TOKEN_LENGTH`) are ``MALFORMED`` before any HMAC
  work is done. ``unsign`` raises :class:`~bastion.errors.BadSignature` or
  :class:`~bastion.errors.SignatureExpired` instead, for callers who prefer exceptions.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bastion.core.clock import system_clock
from bastion.core.keys import KeyRing, validate_purpose
from bastion.errors import BadData, BadSignature, ConfigurationError, SignatureExpired

if TYPE_CHECKING:
    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "MAX_TOKEN_LENGTH",
    "SignatureStatus",
    "Signer",
    "TimestampSigner",
    "Verification",
]

MAX_TOKEN_LENGTH = 8 * 1024
"""Default longest token ``verify`` will look at, in characters (twice a cookie's budget).
Longer input is ``MALFORMED`` without any HMAC work, which bounds the cost of hostile input."""

DEFAULT_CLOCK_SKEW = 60.0
"""Default number of seconds a timestamp may lie in the future, to absorb clock differences
between hosts. A value signed further ahead is refused (``BAD_SIGNATURE``)."""

# The signature is 43 characters: base64url of 32 bytes, unpadded.
_PLAIN = re.compile(rb"([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]{43})", re.ASCII)
_TIMED = re.compile(rb"([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]{2,11})\.([A-Za-z0-9_-]{43})", re.ASCII)
# Format tags, so a token of one format never verifies as the other even under the same key.
_PLAIN_TAG = b"bastion.signer.v1\x00"
_TIMED_TAG = b"bastion.timestamp-signer.v1\x00"


class SignatureStatus(enum.StrEnum):
    """Why a token did or did not verify. Stable values, suitable for logs and metrics."""

    VALID = "valid"
    MALFORMED = "malformed"
    """Not a token of this format: wrong type, too long, not ASCII, bad structure or base64."""
    BAD_SIGNATURE = "bad_signature"
    """Well-formed, but no key of the ring signed it for this purpose (tampered, other purpose,
    retired key), or it was signed further in the future than the allowed clock skew."""
    EXPIRED = "expired"
    """Signed by a key of the ring, but older than ``max_age``."""


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of :meth:`Signer.verify`. True exactly when the token is valid.

    ``value`` is the signed bytes, present only when the token is valid (it is left out of the
    ``repr``: signed values may be session identifiers). ``signed_at`` is the authenticated
    signing time (Unix seconds) from a :class:`TimestampSigner`, set when the signature verified
    (``VALID``, ``EXPIRED``, or ``BAD_SIGNATURE`` for a time too far in the future) and ``None``
    otherwise: an unauthenticated timestamp is never reported.
    """

    status: SignatureStatus
    value: bytes | None = field(default=None, repr=False)
    signed_at: float | None = None

    @property
    def valid(self) -> bool:
        return self.status is SignatureStatus.VALID

    def __bool__(self) -> bool:
        return self.status is SignatureStatus.VALID


_MALFORMED = Verification(SignatureStatus.MALFORMED)
_BAD_SIGNATURE = Verification(SignatureStatus.BAD_SIGNATURE)


def _b64encode(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _b64decode(text: bytes) -> bytes | None:
    # Callers have checked the alphabet; a length of 1 mod 4 is the one remaining impossibility.
    if len(text) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _to_bytes(value: bytes | str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadData(
                "the value to sign is not valid text (it contains a lone surrogate); "
                "sign bytes, or text that encodes as UTF-8"
            ) from None
    raise TypeError(f"the value to sign must be bytes or str, not {type(value).__name__}")


def _ascii_token(token: object, max_length: int) -> bytes | None:
    # Cheap checks first: type, length, ASCII. Everything after works on bounded ASCII bytes.
    if isinstance(token, str):
        if len(token) > max_length or not token.isascii():
            return None
        return token.encode("ascii")
    if isinstance(token, bytes):
        if len(token) > max_length or not token.isascii():
            return None
        return token
    return None


def _check_seconds(value: float, *, setting: str, allow_zero: bool) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(
            f"{setting} must be a finite number of seconds {bound}; got {value!r}",
            setting=setting,
        )
    return float(value)


def _check_max_length(max_length: int) -> int:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 64:
        raise ConfigurationError(
            f"max_length must be an int of at least 64 characters; got {max_length!r}",
            setting="max_length",
        )
    return max_length


class _Keys:
    """The purpose-derived subkeys of a signer, derived once."""

    __slots__ = ("_all", "_current")

    def __init__(self, keys: KeyRing | SecretKey, purpose: str) -> None:
        derived = KeyRing.coerce(keys).derive("signer:" + purpose)
        self._all = tuple(key.reveal() for key in derived)
        self._current = self._all[0]

    def sign(self, message: bytes) -> bytes:
        return _b64encode(hmac.digest(self._current, message, hashlib.sha256))

    def verify(self, message: bytes, signature: bytes) -> bool:
        # No early exit: the time taken does not depend on which key (if any) matched.
        matched = False
        for key in self._all:
            expected = _b64encode(hmac.digest(key, message, hashlib.sha256))
            matched |= hmac.compare_digest(expected, signature)
        return matched

    def __len__(self) -> int:
        return len(self._all)


class Signer:
    """Sign and verify values for one purpose with a key ring.

    ``purpose`` names what the value is for (``"session"``, ``"csrf"``, ``"reset-password"``);
    use a distinct purpose for every kind of value. The current key of ``keyring`` signs, every key
    verifies. ``max_length`` caps the token length both ways: ``sign`` refuses to produce a
    longer token and ``verify`` refuses to look at one.
    """

    __slots__ = ("_keys", "_max_length", "_purpose")

    def __init__(
        self,
        keyring: KeyRing | SecretKey,
        purpose: str,
        *,
        max_length: int = MAX_TOKEN_LENGTH,
    ) -> None:
        self._purpose = validate_purpose(purpose)
        self._keys = _Keys(keyring, purpose)
        self._max_length = _check_max_length(max_length)

    @property
    def purpose(self) -> str:
        return self._purpose

    def sign(self, value: bytes | str) -> str:
        """A token carrying ``value`` (text is signed as UTF-8)."""
        signed = _b64encode(_to_bytes(value))
        token = signed + b"." + self._keys.sign(_PLAIN_TAG + signed)
        return _finish(token, self._max_length, self._purpose)

    def verify(self, token: str | bytes) -> Verification:
        """Check ``token``; never raises. The result is truthy only when it is valid."""
        data = _ascii_token(token, self._max_length)
        if data is None:
            return _MALFORMED
        match = _PLAIN.fullmatch(data)
        if match is None:
            return _MALFORMED
        payload, signature = match.group(1, 2)
        if len(payload) % 4 == 1:
            return _MALFORMED
        if not self._keys.verify(_PLAIN_TAG + payload, signature):
            return _BAD_SIGNATURE
        value = _b64decode(payload)
        if value is None:  # pragma: no cover - only tokens we produced get here
            return _MALFORMED
        return Verification(SignatureStatus.VALID, value)

    def unsign(self, token: str | bytes) -> bytes:
        """The signed value, or :class:`~bastion.errors.BadSignature`."""
        result = self.verify(token)
        if result.value is None:
            raise BadSignature(_message(result, self._purpose, "<value>.<signature>"))
        return result.value

    def __repr__(self) -> str:
        return f"Signer(purpose={self._purpose!r}, keys={len(self._keys)})"


class TimestampSigner:
    """A :class:`Signer` that also signs the time, so values expire after ``max_age`` seconds.

    The signing time comes from ``clock`` in whole seconds (rounded down, so a value can expire
    up to one second early, never late). ``verify`` reports ``EXPIRED`` when the age is greater
    than ``max_age`` (an age of exactly ``max_age`` is still valid) and ``BAD_SIGNATURE`` when the
    signing time is more than ``clock_skew`` seconds in the future (default
    :data:`DEFAULT_CLOCK_SKEW`). A clock that returns NaN makes every value fail, never pass.
    """

    __slots__ = ("_clock", "_clock_skew", "_keys", "_max_age", "_max_length", "_purpose")

    def __init__(
        self,
        keyring: KeyRing | SecretKey,
        purpose: str,
        *,
        max_age: float,
        clock: Clock = system_clock,
        clock_skew: float = DEFAULT_CLOCK_SKEW,
        max_length: int = MAX_TOKEN_LENGTH,
    ) -> None:
        self._purpose = validate_purpose(purpose)
        self._keys = _Keys(keyring, purpose)
        self._max_age = _check_seconds(max_age, setting="max_age", allow_zero=False)
        self._clock_skew = _check_seconds(clock_skew, setting="clock_skew", allow_zero=True)
        self._clock = clock
        self._max_length = _check_max_length(max_length)

    @property
    def purpose(self) -> str:
        return self._purpose

    @property
    def max_age(self) -> float:
        return self._max_age

    def sign(self, value: bytes | str) -> str:
        """A token carrying ``value`` and the current time of the clock."""
        now = self._clock.now()
        if not (isinstance(now, int | float) and math.isfinite(now) and now >= 0):
            raise ConfigurationError(
                f"the clock returned {now!r}; a clock must return finite, non-negative "
                "Unix seconds",
                setting="clock",
            )
        seconds = int(now)
        stamp = _b64encode(seconds.to_bytes(max(1, (seconds.bit_length() + 7) // 8), "big"))
        signed = _b64encode(_to_bytes(value)) + b"." + stamp
        token = signed + b"." + self._keys.sign(_TIMED_TAG + signed)
        return _finish(token, self._max_length, self._purpose)

    def verify(self, token: str | bytes, *, max_age: float | None = None) -> Verification:
        """Check ``token`` and its age; never raises for any token.

        ``max_age`` overrides the signer's for this call. An invalid ``max_age`` is a programming
        error and raises :class:`~bastion.errors.ConfigurationError`.
        """
        limit = (
            self._max_age
            if max_age is None
            else _check_seconds(max_age, setting="max_age", allow_zero=False)
        )
        result = self._authenticate(token)
        if result.signed_at is None:
            return result
        signed_at = result.signed_at
        now = self._clock.now()
        # Written so that a NaN anywhere fails closed.
        if not signed_at <= now + self._clock_skew:
            return Verification(SignatureStatus.BAD_SIGNATURE, signed_at=signed_at)
        if not now - signed_at <= limit:
            return Verification(SignatureStatus.EXPIRED, signed_at=signed_at)
        return result

    def _authenticate(self, token: str | bytes) -> Verification:
        # Structure and signature only; the caller applies the time policy.
        data = _ascii_token(token, self._max_length)
        if data is None:
            return _MALFORMED
        match = _TIMED.fullmatch(data)
        if match is None:
            return _MALFORMED
        payload, stamp, signature = match.group(1, 2, 3)
        if len(payload) % 4 == 1 or len(stamp) % 4 == 1:
            return _MALFORMED
        if not self._keys.verify(_TIMED_TAG + payload + b"." + stamp, signature):
            return _BAD_SIGNATURE
        value = _b64decode(payload)
        raw_stamp = _b64decode(stamp)
        if value is None or raw_stamp is None:  # pragma: no cover - only our own tokens
            return _MALFORMED
        return Verification(SignatureStatus.VALID, value, float(int.from_bytes(raw_stamp, "big")))

    def unsign(self, token: str | bytes, *, max_age: float | None = None) -> bytes:
        """The signed value, or :class:`~bastion.errors.SignatureExpired` /
        :class:`~bastion.errors.BadSignature`."""
        result = self.verify(token, max_age=max_age)
        if result.value is not None:
            return result.value
        message = _message(result, self._purpose, "<value>.<timestamp>.<signature>")
        if result.status is SignatureStatus.EXPIRED and result.signed_at is not None:
            raise SignatureExpired(message, signed_at=result.signed_at)
        raise BadSignature(message)

    def __repr__(self) -> str:
        return (
            f"TimestampSigner(purpose={self._purpose!r}, keys={len(self._keys)}, "
            f"max_age={self._max_age!r})"
        )


def _finish(token: bytes, max_length: int, purpose: str) -> str:
    if len(token) > max_length:
        raise BadData(
            f"the signed value for purpose {purpose!r} would be a {len(token)}-character token, "
            f"over max_length={max_length}; sign less data or raise max_length"
        )
    return token.decode("ascii")


def _message(result: Verification, purpose: str, shape: str) -> str:
    # Never echoes the token: it may carry a session identifier.
    if result.status is SignatureStatus.MALFORMED:
        return (
            f"the signed value for purpose {purpose!r} is malformed: expected {shape} in "
            f"unpadded base64url, ASCII, at most the signer's max_length characters"
        )
    if result.status is SignatureStatus.EXPIRED:
        return (
            f"the signed value for purpose {purpose!r} has expired "
            f"(signed at {result.signed_at}); sign a fresh one"
        )
    if result.signed_at is not None:
        return (
            f"the signed value for purpose {purpose!r} was signed in the future "
            f"(at {result.signed_at}); check the clocks of the signing hosts"
        )
    return (
        f"the signature of the value for purpose {purpose!r} does not match: it was tampered "
        "with, signed for another purpose, or signed with a key no longer in the ring"
    )
