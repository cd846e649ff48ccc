"""Argon2id password hashing with rehash-on-login, legacy bcrypt, and equal cost for unknown users.

:class:`PasswordHasher` wraps argon2-cffi. Every password goes through
:func:`bastion.core.passwords.normalize_password` first: over-long input is refused before any
hashing (a 1 MB password costs a ``len``), and NFKC makes the two Unicode spellings of one
password hash alike.

* :meth:`PasswordHasher.verify_and_update` says whether the password is right and, when it is
  but the stored hash uses other parameters (or is a legacy bcrypt hash), hands back a fresh
  Argon2id hash to store.
* A login for a user that does not exist must cost what a login with a wrong password costs,
  or response times reveal which accounts exist. Pass ``stored_hash=None`` for an unknown user:
  the password is verified against a dummy hash with the current parameters (one Argon2
  computation, as for a real user) and the result is always invalid.
* The ``a``-prefixed methods run the hashing in a thread pool (argon2-cffi releases the GIL),
  so the event loop keeps serving other requests during the tens of milliseconds it takes.

Profiles: :data:`OWASP_PROFILE` (the OWASP Password Storage Cheat Sheet's Argon2id minimum:
19 MiB, 2 iterations, 1 lane) is the default. :data:`TEST_ONLY_PROFILE` is for test suites only:
it offers no protection at all.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.core.passwords import DEFAULT_MAX_LENGTH, normalize_password
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import Executor

__all__ = [
    "OWASP_PROFILE",
    "TEST_ONLY_PROFILE",
    "Argon2Profile",
    "PasswordHasher",
    "VerifyResult",
]

_logger = logging.getLogger("bastion.security.passwords")
_T = TypeVar("_T")
_BCRYPT_PREFIXES: Final = ("$2a$", "$2b$", "$2y$")
_BCRYPT_MAX_BYTES: Final = 72  # bcrypt only ever hashed the first 72 bytes


_U32_MAX: Final = 2**32 - 1
_ARGON2_LIMITS: Final = {
    # setting: (least, greatest), argon2's own bounds (argon2.h in the reference implementation)
    "time_cost": (1, _U32_MAX),  # ARGON2_MIN_TIME .. ARGON2_MAX_TIME
    "memory_cost": (8, _U32_MAX),  # KiB; at least 8 per lane, checked below
    "parallelism": (1, 2**24 - 1),  # ARGON2_MIN_LANES .. ARGON2_MAX_LANES
    "hash_len": (4, _U32_MAX),  # ARGON2_MIN_OUTLEN .. ARGON2_MAX_OUTLEN
    "salt_len": (8, _U32_MAX),  # ARGON2_MIN_SALT_LENGTH .. ARGON2_MAX_SALT_LENGTH
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Argon2Profile:
    """Argon2id cost parameters. ``memory_cost`` is in KiB.

    Every parameter is checked against argon2's own limits when the profile is built (salt at
    least 8 bytes, hash at least 4 bytes, at least 8 KiB of memory per lane, lanes below
    2**24, 32-bit counts), so a bad profile fails at start-up, not at a user's first login.
    """

    time_cost: int
    memory_cost: int
    parallelism: int
    hash_len: int = 32
    salt_len: int = 16

    def __post_init__(self) -> None:
        for name, (least, greatest) in _ARGON2_LIMITS.items():
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not least <= value <= greatest
            ):
                raise ConfigurationError(
                    f"Argon2 {name} must be a whole number from {least} to {greatest} "
                    f"(argon2's own limits), got {value!r}",
                    setting=name,
                )
        if self.memory_cost < 8 * self.parallelism:
            raise ConfigurationError(
                f"Argon2 memory_cost must be at least 8 KiB per lane ({8 * self.parallelism}), "
                f"got {self.memory_cost}",
                setting="memory_cost",
            )


OWASP_PROFILE: Final = Argon2Profile(time_cost=2, memory_cost=19 * 1024, parallelism=1)
"""OWASP's recommended minimum for Argon2id: m=19 MiB, t=2, p=1."""

TEST_ONLY_PROFILE: Final = Argon2Profile(time_cost=1, memory_cost=8, parallelism=1, hash_len=16)
"""The cheapest valid Argon2id parameters. For tests only: offers no protection."""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """``valid`` tells whether the password matched. ``new_hash`` is set only when it matched
    and the stored hash should be replaced (old parameters, or a legacy bcrypt hash)."""

    valid: bool
    new_hash: str | None = None

    def __bool__(self) -> bool:
        return self.valid

    def __repr__(self) -> str:
        rehash = "None" if self.new_hash is None else "'<new hash>'"
        return f"VerifyResult(valid={self.valid}, new_hash={rehash})"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


class PasswordHasher:
    """Hash and verify passwords with Argon2id. Thread-safe and stateless between calls.

    ``max_length`` caps passwords in characters (see :func:`normalize_password`); ``executor``
    runs the async variants (``None``: the event loop's default thread pool).
    """

    __slots__ = ("_argon2", "_dummy", "_executor", "_max_length")

    def __init__(
        self,
        profile: Argon2Profile = OWASP_PROFILE,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        executor: Executor | None = None,
    ) -> None:
        if not isinstance(profile, Argon2Profile):
            raise ConfigurationError(
                f"profile must be an Argon2Profile (e.g. OWASP_PROFILE), not "
                f"{type(profile).__name__}",
                setting="profile",
            )
        hasher = argon2.PasswordHasher(
            time_cost=profile.time_cost,
            memory_cost=profile.memory_cost,
            parallelism=profile.parallelism,
            hash_len=profile.hash_len,
            salt_len=profile.salt_len,
            type=argon2.Type.ID,
        )
        self._setup(hasher, max_length, executor)

    @classmethod
    def from_argon2(
        cls,
        hasher: argon2.PasswordHasher,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        executor: Executor | None = None,
    ) -> PasswordHasher:
        """Wrap an existing argon2-cffi hasher; its parameters become the profile (and are
        checked as :class:`Argon2Profile` checks them)."""
        if not isinstance(hasher, argon2.PasswordHasher):
            raise ConfigurationError(
                f"hasher must be an argon2.PasswordHasher, not {type(hasher).__name__}",
                setting="hasher",
            )
        Argon2Profile(
            time_cost=hasher.time_cost,
            memory_cost=hasher.memory_cost,
            parallelism=hasher.parallelism,
            hash_len=hasher.hash_len,
            salt_len=hasher.salt_len,
        )
        if hasher.type is not argon2.Type.ID:
            raise ConfigurationError(
                "the argon2 hasher must use type=argon2.Type.ID (Argon2id)", setting="hasher"
            )
        wrapper = cls.__new__(cls)
        wrapper._setup(hasher, max_length, executor)
        return wrapper

    def _setup(
        self, hasher: argon2.PasswordHasher, max_length: int, executor: Executor | None
    ) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise ConfigurationError(
                f"max_length must be a whole number of characters >= 8, got {max_length!r}",
                setting="max_length",
            )
        self._argon2 = hasher
        self._max_length = max_length
        self._executor = executor
        # A well-formed hash with the current parameters that no password matches: verifying
        # against it costs one full Argon2 computation, like a real user's hash.
        self._dummy = (
            f"$argon2id$v=19$m={hasher.memory_cost},t={hasher.time_cost},p={hasher.parallelism}"
            f"${_b64(secrets.token_bytes(16))}${_b64(secrets.token_bytes(hasher.hash_len))}"
        )

    @property
    def max_length(self) -> int:
        return self._max_length

    def hash(self, password: str) -> str:
        """An Argon2id hash of ``password`` (raises PasswordRejected when over the cap)."""
        return self._argon2.hash(normalize_password(password, max_length=self._max_length))

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether ``stored_hash`` was made with other parameters, or by another algorithm."""
        if stored_hash.startswith(_BCRYPT_PREFIXES):
            return True
        try:
            return self._argon2.check_needs_rehash(stored_hash)
        except (InvalidHashError, ValueError):
            return True

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash``. ``None`` means "no such user"."""
        return self.verify_and_update(stored_hash, password).valid

    def verify_and_update(self, stored_hash: str | None, password: str) -> VerifyResult:
        """Verify ``password``; on success with outdated parameters, also rehash it.

        ``stored_hash=None`` (an unknown user) costs one Argon2 verification and is invalid.
        Raises :class:`~bastion.errors.PasswordRejected` for a password over the cap (before
        any hashing): such a password can never have been stored.
        """
        text = normalize_password(password, max_length=self._max_length)
        if stored_hash is None:
            self._verify_argon2(self._dummy, text)
            return VerifyResult(valid=False)
        if not isinstance(stored_hash, str):
            raise ConfigurationError(
                f"stored_hash must be a str or None, not {type(stored_hash).__name__}",
                setting="stored_hash",
            )
        if stored_hash.startswith(_BCRYPT_PREFIXES):
            valid = self._verify_bcrypt(stored_hash, text, password)
        elif stored_hash.startswith("$argon2"):
            valid = self._verify_argon2(stored_hash, text)
        else:
            _logger.warning(
                "stored password hash has an unknown format (%d characters); the login fails",
                len(stored_hash),
            )
            self._verify_argon2(self._dummy, text)  # same cost as a real verification
            valid = False
        if valid and self.needs_rehash(stored_hash):
            return VerifyResult(valid=True, new_hash=self._argon2.hash(text))
        return VerifyResult(valid=valid)

    def verify_unknown_user(self, password: str) -> bool:
        """Spend one verification on nothing and return ``False``; same as ``verify(None, ...)``."""
        return self.verify_and_update(None, password).valid

    def _verify_argon2(self, stored_hash: str, text: str) -> bool:
        try:
            return bool(self._argon2.verify(stored_hash, text))
        except VerifyMismatchError:
            return False
        except (InvalidHashError, VerificationError, ValueError):
            _logger.warning("stored Argon2 hash is malformed or unusable; the login fails")
            return False

    def _verify_bcrypt(self, stored_hash: str, text: str, original: str) -> bool:
        try:
            import bcrypt  # noqa: PLC0415 (the bcrypt extra is optional and loaded on demand)
        except ImportError:
            raise ConfigurationError(
                "a stored password hash is a legacy bcrypt hash, and the bcrypt package is not "
                "installed; install it with: pip install 'bastion[bcrypt]'",
                setting="bcrypt",
            ) from None
        stored = stored_hash.encode("ascii", "replace")
        # Legacy hashes may predate normalisation: try the NFKC form, then the form as typed.
        candidates = [text] if text == original else [text, original]
        matched = False
        for candidate in candidates:
            raw = candidate.encode("utf-8", "surrogatepass")[:_BCRYPT_MAX_BYTES]
            try:
                matched = bcrypt.checkpw(raw, stored) or matched
            except ValueError:
                _logger.warning("stored bcrypt hash is malformed; the login fails")
                return False
        return matched

    async def ahash(self, password: str) -> str:
        """:meth:`hash` in a worker thread (the length check runs first, here)."""
        normalize_password(password, max_length=self._max_length)
        return await self._run(partial(self.hash, password))

    async def averify(self, stored_hash: str | None, password: str) -> bool:
        """:meth:`verify` in a worker thread."""
        return await self._run(partial(self.verify, stored_hash, password))

    async def averify_and_update(self, stored_hash: str | None, password: str) -> VerifyResult:
        """:meth:`verify_and_update` in a worker thread (the length check runs first, here)."""
        normalize_password(password, max_length=self._max_length)
        return await self._run(partial(self.verify_and_update, stored_hash, password))

    async def _run(self, call: Callable[[], _T]) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, call)

    def __repr__(self) -> str:
        a = self._argon2
        return (
            f"PasswordHasher(argon2id m={a.memory_cost} t={a.time_cost} p={a.parallelism}, "
            f"max_length={self._max_length})"
        )
