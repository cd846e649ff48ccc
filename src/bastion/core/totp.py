"""Second-factor decisions: the "password ok, second factor pending" state and recovery codes.

Sans-I/O: :mod:`bastion.engine.totp` computes TOTP codes (pyotp) and keeps replay and
recovery-code state in a store; this module holds what needs neither.

**Secrets** are base32 text (RFC 4648, the ``otpauth://`` form) of at least
:data:`MIN_TOTP_SECRET_BITS` bits (RFC 4226 requires 128; bastion's enrolment makes 160).
:func:`validate_totp_secret` checks one and gives its canonical form; verification calls it
first, so a damaged or imported secret is a :class:`~bastion.errors.ConfigurationError` that
names the problem, never a ``binascii.Error`` from deep inside the OTP library.

**Pending state.** After a correct password on an account with a second factor, the session
holds a :class:`PendingSecondFactor` and nothing else: no user id under the key the app reads
for "logged in", so every view that checks for a user sees an anonymous visitor. Only the second
factor view reads the pending state (:func:`pending_status`), and only a correct code turns it
into a login (which must rotate the session ID). The state expires (default 5 minutes) and
allows a bounded number of wrong codes (default 5), after which the password must be entered
again. That count lives in the session and is not the bound on guessing: the per-user budget of
:meth:`bastion.engine.totp.TOTPManager.verify`, kept in the store, is.

**Recovery codes** are 10 random characters from a 32-letter alphabet without look-alikes
(50 bits), shown as ``xxxxx-xxxxx``. Input is normalised (case, spaces, hyphens, and the
look-alikes ``0 1 l 8`` read as ``o i i b``) so that a code copied by hand still works.
"""

from __future__ import annotations

import enum
import math
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_PENDING_ATTEMPTS",
    "DEFAULT_PENDING_TTL",
    "MIN_TOTP_SECRET_BITS",
    "RECOVERY_CODE_COUNT",
    "PendingSecondFactor",
    "PendingStatus",
    "generate_recovery_codes",
    "normalize_recovery_code",
    "normalize_totp_code",
    "pending_status",
    "validate_totp_secret",
]

RECOVERY_CODE_COUNT: Final = 10
DEFAULT_PENDING_TTL: Final = 300.0
DEFAULT_PENDING_ATTEMPTS: Final = 5

_RECOVERY_ALPHABET: Final = "abcdefghijkmnopqrstuvwxyz2345679"  # 32 letters: no l, 0, 1, 8
_RECOVERY_CHARS: Final = 10
_LOOKALIKES: Final = str.maketrans({"0": "o", "1": "i", "l": "i", "8": "b"})
_PENDING_VERSION: Final = 1

MIN_TOTP_SECRET_BITS: Final = 128
"""Shortest TOTP secret accepted, in bits of key (RFC 4226, section 4, requirement R6)."""

_BASE32: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_BASE32_REMAINDERS: Final = frozenset({0, 2, 4, 5, 7})  # characters past a full 8-char group
_MAX_SECRET_CHARS: Final = 1024


def validate_totp_secret(secret: str) -> str:
    """The canonical form of a base32 TOTP secret (upper case, no ``=`` padding).

    Case and trailing padding are forgiven; anything else that is not base32, or a key shorter
    than :data:`MIN_TOTP_SECRET_BITS`, raises :class:`~bastion.errors.ConfigurationError`
    (``setting="secret"``) with a message that describes the secret by length, never echoes it.
    Call it when a secret enters the application from elsewhere (an import, a migration).
    """
    if not isinstance(secret, str):
        raise ConfigurationError(
            f"a TOTP secret is base32 text, not {type(secret).__name__}", setting="secret"
        )
    text = secret.upper().rstrip("=")
    if (
        len(text) > _MAX_SECRET_CHARS
        or not _BASE32.issuperset(text)
        or len(text) % 8 not in _BASE32_REMAINDERS
    ):
        raise ConfigurationError(
            f"the stored TOTP secret ({len(secret)} characters) is not base32 text "
            "(letters A-Z and digits 2-7): it is damaged, or not a TOTP secret; enrol the "
            "user again",
            setting="secret",
        )
    bits = len(text) * 5 // 8 * 8
    if bits < MIN_TOTP_SECRET_BITS:
        raise ConfigurationError(
            f"the stored TOTP secret is too short: {bits} bits, at least "
            f"{MIN_TOTP_SECRET_BITS} are required (bastion makes 160); enrol the user again",
            setting="secret",
        )
    return text


def generate_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> tuple[str, ...]:
    """``count`` distinct recovery codes, formatted ``xxxxx-xxxxx``. Show them once."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        raise ConfigurationError(f"count must be 1 to 100, got {count!r}", setting="count")
    codes: set[str] = set()
    while len(codes) < count:
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_CHARS))
        codes.add(f"{raw[:5]}-{raw[5:]}")
    return tuple(sorted(codes))


def normalize_recovery_code(text: str) -> str | None:
    """The canonical 10 letters of a typed recovery code, or ``None`` when it cannot be one."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    cleaned = "".join(text.split()).replace("-", "").lower().translate(_LOOKALIKES)
    if len(cleaned) != _RECOVERY_CHARS or any(c not in _RECOVERY_ALPHABET for c in cleaned):
        return None
    return cleaned


def normalize_totp_code(text: str, *, digits: int = 6) -> str | None:
    """The code's ASCII digits without spaces, or ``None`` when it is not ``digits`` digits."""
    if not isinstance(text, str) or len(text) > 32:
        return None
    cleaned = "".join(text.split())
    if len(cleaned) != digits or not (cleaned.isascii() and cleaned.isdigit()):
        return None
    return cleaned


class PendingStatus(enum.StrEnum):
    """Where a login stands between the password and the second factor."""

    NONE = "none"
    """No pending login: show the password form."""
    ACTIVE = "active"
    """Password verified; waiting for the second factor."""
    EXPIRED = "expired"
    """Too slow: start again with the password."""
    EXHAUSTED = "exhausted"
    """Too many wrong codes: start again with the password."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingSecondFactor:
    """The session state between a correct password and a correct second factor.

    It grants nothing: store it under its own session key (``SESSION_KEY``), never under the
    key that marks a user as logged in.
    """

    SESSION_KEY = "_bastion_second_factor"

    user_id: str
    started_at: float
    failed_attempts: int = 0

    @property
    def grants_access(self) -> bool:
        """Always ``False``: a pending second factor is not a login."""
        return False

    def failed(self) -> PendingSecondFactor:
        """The state after one more wrong code."""
        return replace(self, failed_attempts=self.failed_attempts + 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data for the session."""
        return {
            "v": _PENDING_VERSION,
            "user_id": self.user_id,
            "started_at": self.started_at,
            "failed_attempts": self.failed_attempts,
        }

    @classmethod
    def from_dict(cls, data: object) -> PendingSecondFactor | None:
        """Decode :meth:`to_dict`; ``None`` for anything else (never raises)."""
        if not isinstance(data, dict) or data.get("v") != _PENDING_VERSION:
            return None
        user_id = data.get("user_id")
        started_at = data.get("started_at")
        failed = data.get("failed_attempts")
        if not isinstance(user_id, str) or not user_id:
            return None
        if isinstance(started_at, bool) or not isinstance(started_at, int | float):
            return None
        if isinstance(failed, bool) or not isinstance(failed, int) or failed < 0:
            return None
        if not math.isfinite(started_at):
            return None
        return cls(user_id=user_id, started_at=float(started_at), failed_attempts=failed)


def pending_status(
    session: Mapping[str, Any],
    *,
    now: float,
    ttl: float = DEFAULT_PENDING_TTL,
    max_attempts: int = DEFAULT_PENDING_ATTEMPTS,
) -> tuple[PendingStatus, PendingSecondFactor | None]:
    """The pending state found in ``session`` (a mapping such as ``request.session``)."""
    state = PendingSecondFactor.from_dict(session.get(PendingSecondFactor.SESSION_KEY))
    if state is None:
        return PendingStatus.NONE, None
    if not state.started_at <= now < state.started_at + ttl:
        return PendingStatus.EXPIRED, state
    if state.failed_attempts >= max_attempts:
        return PendingStatus.EXHAUSTED, state
    return PendingStatus.ACTIVE, state
