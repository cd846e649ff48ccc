"""Secret keys, key rings and purpose-derived subkeys.

A :class:`SecretKey` is the one place raw secret bytes live. Its ``repr``, ``str`` and f-string
forms are redacted, it compares in constant time, it refuses to be hashed or pickled, and the raw
bytes come out only through the explicit :meth:`SecretKey.reveal`.

A :class:`KeyRing` holds the current key (which signs) and older keys (which still verify), so a
secret can be rotated without logging anyone out: put the new secret first, keep the old one
until every token it signed has expired, then drop it.

Features never use a configured secret directly. Each derives a subkey for its purpose
(``ring.derive("signer:session")``) with HMAC-SHA256 under a fixed domain-separation label, so
a value produced for one purpose is worthless for every other, whatever its format. bastion's own
consumers prefix the purpose with their namespace (``signer:``, ``audit:``), so a purpose chosen
by an application can never select another consumer's subkey.

**Lookups across a rotation.** A signature carries its own proof, so "newest key signs, every
key verifies" is enough for cookies and tokens. State found by a *keyed name* is different: a
store key such as ``totp:step:<HMAC(key, user)>`` or the HMAC of an API key changes with the
key, so a lookup made with the current key alone misses everything written before a rotation
(recovery codes stop working, TOTP steps and login-throttle counters start from zero). Every
such lookup goes through :meth:`KeyRing.lookup`, whose :meth:`LookupKeys.names` gives the
name under every key of the ring, current first: readers try them in that order, new records
are written under the current name, and a record found under an older name is used (and, for
short-lived state, updated) where it is until it expires or is replaced. The rule for
dropping an old key is the same as for signatures: once nothing that must keep working was
written under it (see each consumer's docstring for how long that is).

Several processes: while a rotation is rolled out, a process still on the old ring neither
verifies what the new key signed nor sees state written under the new name (a TOTP step
accepted by an updated process, a throttle failure counted there). Where that matters, rotate
in two deployments: first ``KeyRing(old, previous=[new])`` everywhere (every process reads both
names, the old key still writes), then ``KeyRing(new, previous=[old])``.

Danger: derivation does not strengthen a weak secret. Secrets must be random; 32 bytes is the
minimum (:data:`MIN_SECRET_BYTES`). Production refuses shorter ones, other environments log a
warning on the ``bastion.security.keys`` logger.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from typing import TYPE_CHECKING, NoReturn

from bastion.core.environment import is_production
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "MIN_SECRET_BYTES",
    "KeyRing",
    "LookupKeys",
    "SecretKey",
    "validate_purpose",
]

MIN_SECRET_BYTES = 32
"""Shortest secret accepted in production, in bytes (256 bits, the HMAC-SHA256 key size)."""

_DERIVE_LABEL = b"bastion.derive.v1\x00"
# The label and the NUL keep derived keys apart from any other HMAC computed with the raw secret.

_PURPOSE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}", re.ASCII)

_FIX = (
    "generate one with `bastion secret` "
    "(or python -c 'import secrets; print(secrets.token_urlsafe(32))')"
)

_logger = logging.getLogger("bastion.security.keys")


def validate_purpose(purpose: str, *, setting: str = "purpose") -> str:
    """Check that ``purpose`` is a usable purpose label and return it.

    A purpose is 1 to 200 ASCII letters, digits and ``. _ : / -``, starting with a letter or
    digit. The alphabet excludes NUL, so ``label + NUL + purpose`` is unambiguous.
    """
    if not isinstance(purpose, str) or _PURPOSE.fullmatch(purpose) is None:
        raise ConfigurationError(
            f"{setting} must be 1-200 ASCII letters, digits or '._:/-' starting with a letter "
            f"or digit (for example 'session' or 'csrf'); got {purpose!r}",
            setting=setting,
        )
    return purpose


class SecretKey:
    """Secret bytes with a redacted ``repr``, constant-time equality and no hash.

    ``value`` is bytes, or text that is encoded as UTF-8. An empty secret is always refused. A
    secret shorter than :data:`MIN_SECRET_BYTES` raises :class:`ConfigurationError` in production
    (``production=None`` asks :func:`bastion.core.environment.is_production`) and logs a warning
    elsewhere. ``setting`` names the configuration setting in messages.

    Hashing is disabled: a hash is a secret-derived value, and dict or set lookups compare hashes
    before calling ``__eq__``, which defeats the constant-time comparison.
    """

    __slots__ = ("_value",)

    _value: bytes

    def __init__(
        self,
        value: bytes | str,
        *,
        setting: str = "secret_key",
        production: bool | None = None,
    ) -> None:
        if isinstance(value, str):
            try:
                raw = value.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigurationError(
                    f"{setting} is not valid text (it contains a lone surrogate); {_FIX}",
                    setting=setting,
                ) from None
        elif isinstance(value, bytes | bytearray):
            raw = bytes(value)
        else:
            raise ConfigurationError(
                f"{setting} must be bytes or str, not {type(value).__name__}; {_FIX}",
                setting=setting,
            )
        if not raw:
            raise ConfigurationError(f"{setting} is empty; {_FIX}", setting=setting)
        if len(raw) < MIN_SECRET_BYTES:
            message = (
                f"{setting} is {len(raw)} bytes long; at least {MIN_SECRET_BYTES} random bytes "
                f"are required; {_FIX}"
            )
            if is_production() if production is None else production:
                raise ConfigurationError(message, setting=setting)
            _logger.warning("%s (allowed outside production only)", message)
        self._value = raw

    @classmethod
    def generate(cls, nbytes: int = MIN_SECRET_BYTES) -> SecretKey:
        """A new key of ``nbytes`` bytes from the operating system's CSPRNG (:mod:`secrets`)."""
        if not isinstance(nbytes, int) or nbytes < MIN_SECRET_BYTES:
            raise ConfigurationError(
                f"nbytes must be an int of at least {MIN_SECRET_BYTES}; got {nbytes!r}",
                setting="nbytes",
            )
        return cls._trusted(secrets.token_bytes(nbytes))

    @classmethod
    def _trusted(cls, raw: bytes) -> SecretKey:
        # For bytes bastion produced itself (random or derived, always long enough).
        key = cls.__new__(cls)
        key._value = raw
        return key

    def reveal(self) -> bytes:
        """The raw secret bytes. Danger: never log, display or store what this returns."""
        return self._value

    def to_text(self) -> str:
        """The secret as unpadded base64url text, for a configuration file or variable.

        Danger: this reveals the secret. Configured text is used as-is (its UTF-8 bytes are the
        secret), so ``SecretKey(key.to_text())`` is a different key from ``key``, of equal
        strength: put the text in the configuration and load it from there.
        """
        return base64.urlsafe_b64encode(self._value).rstrip(b"=").decode("ascii")

    def derive(self, purpose: str) -> SecretKey:
        """The 32-byte subkey of this secret for ``purpose`` (HMAC-SHA256 with a fixed label)."""
        label = _DERIVE_LABEL + validate_purpose(purpose).encode("ascii")
        return SecretKey._trusted(hmac.digest(self._value, label, hashlib.sha256))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    __hash__ = None  # type: ignore[assignment]  # see the class docstring

    def __repr__(self) -> str:
        return "SecretKey('**********')"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("SecretKey cannot be pickled or copied by value: it holds a secret")

    def __copy__(self) -> SecretKey:
        return self  # immutable

    def __deepcopy__(self, memo: object) -> SecretKey:
        return self  # immutable


class KeyRing:
    """The current key plus older keys that still verify. Newest first.

    The current key signs; every key verifies. To rotate, build the ring with the new secret as
    ``current`` and the old one in ``previous``; remove the old one once everything it signed
    has expired. Duplicate keys are refused: they usually mean a rotation that was not done.
    """

    __slots__ = ("_keys",)

    _keys: tuple[SecretKey, ...]

    def __init__(self, current: SecretKey, *, previous: Sequence[SecretKey] = ()) -> None:
        if isinstance(previous, SecretKey | str | bytes):
            raise ConfigurationError(
                "previous must be a sequence of SecretKey (for example [old_key]), "
                "not a single key",
                setting="previous",
            )
        keys = (current, *previous)
        for index, key in enumerate(keys):
            if not isinstance(key, SecretKey):
                name = "current" if index == 0 else f"previous[{index - 1}]"
                raise ConfigurationError(
                    f"{name} must be a SecretKey, not {type(key).__name__}; "
                    "wrap secrets with SecretKey(...) or use KeyRing.from_secrets([...])",
                    setting=name,
                )
        _refuse_duplicates(keys)
        self._keys = keys

    @classmethod
    def from_secrets(
        cls,
        values: Sequence[str | bytes],
        *,
        setting: str = "secret_keys",
        production: bool | None = None,
    ) -> KeyRing:
        """A ring from raw secrets, newest first: ``KeyRing.from_secrets([new, old])``."""
        if isinstance(values, str | bytes) or not values:
            raise ConfigurationError(
                f"{setting} must be a non-empty list of secrets, newest first "
                f"(for example [new_secret, old_secret]); {_FIX}",
                setting=setting,
            )
        keys = [
            SecretKey(value, setting=f"{setting}[{index}]", production=production)
            for index, value in enumerate(values)
        ]
        return cls(keys[0], previous=keys[1:])

    @classmethod
    def generate(cls) -> KeyRing:
        """A ring of one fresh random key. For tests and throwaway processes."""
        return cls(SecretKey.generate())

    @property
    def current(self) -> SecretKey:
        """The key that signs."""
        return self._keys[0]

    @property
    def keys(self) -> tuple[SecretKey, ...]:
        """Every key, newest first."""
        return self._keys

    def __eq__(self, other: object) -> bool:
        """Same keys in the same order (each compared in constant time)."""
        if not isinstance(other, KeyRing):
            return NotImplemented
        return len(self._keys) == len(other._keys) and all(
            mine == theirs for mine, theirs in zip(self._keys, other._keys, strict=True)
        )

    __hash__ = None  # type: ignore[assignment]  # unhashable, as its keys are

    def derive(self, purpose: str) -> KeyRing:
        """The ring of subkeys for ``purpose``, in the same order as this ring."""
        validate_purpose(purpose)
        ring = KeyRing.__new__(KeyRing)
        ring._keys = tuple(key.derive(purpose) for key in self._keys)
        return ring

    def lookup(self, purpose: str, *, size: int = 16) -> LookupKeys:
        """Keyed lookup names for ``purpose`` under every key of this ring, current first.

        ``size`` is the digest length in bytes (names are twice as many hex characters).
        """
        return LookupKeys(self.derive(purpose), size=size)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[SecretKey]:
        return iter(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing(<{len(self._keys)} key{'s' if len(self._keys) != 1 else ''}>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("KeyRing cannot be pickled: it holds secrets")

    @classmethod
    def coerce(cls, keys: KeyRing | SecretKey) -> KeyRing:
        """Accept a single key where a ring is expected."""
        if isinstance(keys, KeyRing):
            return keys
        if isinstance(keys, SecretKey):
            return cls(keys)
        raise ConfigurationError(
            f"expected a KeyRing or a SecretKey, not {type(keys).__name__}; "
            "use KeyRing.from_secrets([...])",
            setting="keys",
        )


class LookupKeys:
    """Keyed names (truncated HMAC-SHA256, hex) of messages under every key of a derived ring.

    Made by :meth:`KeyRing.lookup`. :meth:`name` is the name under the current key, where new
    records are written; :meth:`names` is the name under each key, current first, in the order
    a reader tries them, so state written before a rotation is still found after it (see the
    module docstring). A ring of one key gives one name, and the current name is the same as
    before any rotation, so records written by older versions are found unchanged.
    """

    __slots__ = ("_keys", "_size")

    _keys: tuple[bytes, ...]
    _size: int

    def __init__(self, derived: KeyRing, *, size: int = 16) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 32:
            raise ConfigurationError(
                f"size must be an int of 8 to 32 bytes; got {size!r}", setting="size"
            )
        self._keys = tuple(key.reveal() for key in KeyRing.coerce(derived))
        self._size = size

    def name(self, message: bytes) -> str:
        """The name of ``message`` under the current key."""
        return hmac.digest(self._keys[0], message, hashlib.sha256)[: self._size].hex()

    def names(self, message: bytes) -> tuple[str, ...]:
        """The name of ``message`` under each key, current first."""
        size = self._size
        return tuple(hmac.digest(k, message, hashlib.sha256)[:size].hex() for k in self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"LookupKeys(<{len(self._keys)} key{'s' if len(self._keys) != 1 else ''}>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("LookupKeys cannot be pickled: it holds secrets")


def _refuse_duplicates(keys: tuple[SecretKey, ...]) -> None:
    for i, first in enumerate(keys):
        for j in range(i + 1, len(keys)):
            if first == keys[j]:
                raise ConfigurationError(
                    f"the key ring holds the same secret twice (positions {i} and {j}); "
                    "remove the duplicate, or finish the rotation with a new secret: " + _FIX,
                    setting="secret_keys",
                )
