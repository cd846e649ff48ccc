"""Keys of field encryption: versioned data keys, HKDF subkeys, passphrase keys, blind indexes.

A :class:`DataKey` is a random master key (32 bytes or more) with a key id, a whole number
written into every ciphertext it makes. The cipher never uses the master key itself: it derives
one subkey per purpose and algorithm with HKDF-SHA256 (RFC 5869), so the bytes that encrypt with
AES-256-GCM are never the bytes that encrypt with AES-256-GCM-SIV, and neither is ever an HMAC
key. A :class:`DataKeyRing` holds the current key (every new ciphertext uses it) and older keys
(their ciphertexts still decrypt until ``bastion crypto rotate`` has rewritten them).

Passphrases are not keys. A human passphrase becomes a master key only through
:class:`PassphraseKDF`: PBKDF2-HMAC-SHA256 with at least 600,000 iterations (the OWASP figure for
2023 onwards) and a random 16-byte salt, which is not secret and must be stored beside the
configuration (``kdf.to_text()``) to derive the same key again. A fixed salt, as tutorials
write it, lets one precomputed dictionary attack every installation at once.

The blind-index key (:class:`BlindIndexKey`) is separate from the data keys on purpose: an index
must stay the same when data keys rotate, or every equality search would miss the rows not yet
re-encrypted. Each (table, column) gets its own HMAC subkey, so equal values in two columns do
not have equal indexes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from typing import TYPE_CHECKING, Final, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion.core.crypto.errors import EncryptionFailed
from bastion.core.keys import SecretKey
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = [
    "MAX_KEY_ID",
    "MIN_MASTER_BYTES",
    "MIN_PBKDF2_ITERATIONS",
    "BlindIndexKey",
    "DataKey",
    "DataKeyRing",
    "PassphraseKDF",
    "hkdf_subkey",
    "length_prefixed",
]

MIN_MASTER_BYTES: Final = 32
"""Shortest master key accepted, in bytes, in every environment (it encrypts data at rest)."""

MAX_KEY_ID: Final = 2**32 - 1
"""Key ids are written as 4 bytes, big-endian; 0 is reserved (never a key)."""

MIN_PBKDF2_ITERATIONS: Final = 600_000
"""The least PBKDF2-HMAC-SHA256 iteration count accepted for a passphrase."""

_SALT_BYTES: Final = 16
_HKDF_LABEL: Final = b"bastion.crypto.v1\x00"
_PASSPHRASE_TEXT: Final = re.compile(r"pbkdf2-sha256\$([1-9][0-9]{0,9})\$([A-Za-z0-9_-]{22,88})")


def length_prefixed(*parts: bytes) -> bytes:
    """``parts`` joined so that no two different lists give the same bytes (4-byte lengths)."""
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def hkdf_subkey(master: bytes, info: bytes, *, length: int = 32) -> bytes:
    """The HKDF-SHA256 subkey of ``master`` for ``info`` (no salt: ``master`` is uniformly
    random, which RFC 5869 section 3.1 allows; ``info`` carries the domain separation)."""
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=None, info=_HKDF_LABEL + info
    ).derive(master)


def _master(secret: object, setting: str) -> SecretKey:
    if not isinstance(secret, SecretKey):
        raise ConfigurationError(
            f"{setting} must be a SecretKey (SecretKey.generate(), or SecretKey(text) from the "
            f"configuration), not {type(secret).__name__}",
            setting=setting,
        )
    if len(secret.reveal()) < MIN_MASTER_BYTES:
        raise ConfigurationError(
            f"{setting} is {len(secret.reveal())} bytes long; a master key needs at least "
            f"{MIN_MASTER_BYTES} random bytes (`bastion secret`, or PassphraseKDF for a "
            "passphrase) in every environment",
            setting=setting,
        )
    return secret


class DataKey:
    """One master key of field encryption and its id (``1`` to :data:`MAX_KEY_ID`).

    Ids are the versions of the ring: give each new key the next number and never reuse one,
    since the id in a ciphertext is how the ring finds its key.
    """

    __slots__ = ("id", "secret")

    id: int
    secret: SecretKey

    def __init__(self, id: int, secret: SecretKey) -> None:  # noqa: A002 (the key id)
        if isinstance(id, bool) or not isinstance(id, int) or not 1 <= id <= MAX_KEY_ID:
            raise ConfigurationError(
                f"DataKey id must be a whole number from 1 to {MAX_KEY_ID}, got {id!r}",
                setting="crypto.keys.id",
            )
        self.id = id
        self.secret = _master(secret, f"crypto.keys[{id}].secret")

    @classmethod
    def generate(cls, id: int) -> DataKey:  # noqa: A002 (the key id)
        """A new random 32-byte master key with id ``id``."""
        return cls(id, SecretKey.generate())

    def __repr__(self) -> str:
        return f"DataKey(id={self.id}, secret=SecretKey('**********'))"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DataKey):
            return NotImplemented
        return self.id == other.id and self.secret == other.secret

    __hash__ = None  # type: ignore[assignment]  # holds a secret (see SecretKey)

    def __reduce__(self) -> NoReturn:
        raise TypeError("DataKey cannot be pickled: it holds a secret")


class DataKeyRing:
    """The current data key (new ciphertexts) and older ones (decrypt only), newest first.

    To rotate: add a key with a new id as ``current`` and keep the old one in ``previous``; run
    ``bastion crypto rotate`` (or let rows be rewritten as they are saved); drop the old key
    once no ciphertext names it. With several processes, deploy the new key in ``previous``
    first, so that every process can read what the first updated one writes.
    """

    __slots__ = ("_by_id", "_keys")

    _keys: tuple[DataKey, ...]
    _by_id: dict[int, DataKey]

    def __init__(self, current: DataKey, *, previous: Sequence[DataKey] = ()) -> None:
        if isinstance(previous, DataKey):
            raise ConfigurationError(
                "previous must be a sequence of DataKey (for example [old_key]), not one key",
                setting="crypto.keys",
            )
        keys = (current, *previous)
        for index, key in enumerate(keys):
            if not isinstance(key, DataKey):
                raise ConfigurationError(
                    f"crypto.keys[{index}] must be a DataKey(id, secret), not {type(key).__name__}",
                    setting="crypto.keys",
                )
        by_id: dict[int, DataKey] = {}
        for key in keys:
            if key.id in by_id:
                raise ConfigurationError(
                    f"the data key ring holds key id {key.id} twice; every key needs its own id",
                    setting="crypto.keys",
                )
            if any(key.secret == other.secret for other in by_id.values()):
                raise ConfigurationError(
                    f"data key {key.id} has the same secret as another key of the ring: a "
                    "rotation needs a new random secret",
                    setting="crypto.keys",
                )
            by_id[key.id] = key
        self._keys = keys
        self._by_id = by_id

    @classmethod
    def from_text(cls, text: str) -> DataKeyRing:
        """A ring from ``"2:<base64url>,1:<base64url>"`` (newest first), the form of an
        environment variable: each secret is the base64url text of ``SecretKey.to_text()``
        (``bastion secret`` prints one) and is decoded to its bytes."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(
                "crypto keys must be 'id:base64url' entries separated by commas, newest first",
                setting="crypto.keys",
            )
        keys: list[DataKey] = []
        for index, entry in enumerate(text.split(",")):
            number, sep, encoded = entry.strip().partition(":")
            if not sep or not number.isdigit() or not number.isascii():
                raise ConfigurationError(
                    f"crypto keys entry {index} is not 'id:base64url'", setting="crypto.keys"
                )
            keys.append(DataKey(int(number), SecretKey._trusted(_b64decode(encoded, index))))
        return cls(keys[0], previous=keys[1:])

    @property
    def current(self) -> DataKey:
        """The key every new ciphertext uses."""
        return self._keys[0]

    @property
    def keys(self) -> tuple[DataKey, ...]:
        """Every key, newest first."""
        return self._keys

    def get(self, key_id: int) -> DataKey | None:
        """The key with id ``key_id``, or ``None``."""
        return self._by_id.get(key_id)

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[DataKey]:
        return iter(self._keys)

    def __repr__(self) -> str:
        ids = ", ".join(str(key.id) for key in self._keys)
        return f"DataKeyRing(<ids {ids}; current {self.current.id}>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("DataKeyRing cannot be pickled: it holds secrets")


def _b64decode(encoded: str, index: int) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) < MIN_MASTER_BYTES:
        raise ConfigurationError(
            f"crypto keys entry {index}: the secret must be base64url text of at least "
            f"{MIN_MASTER_BYTES} bytes (`bastion secret` prints one)",
            setting="crypto.keys",
        )
    return raw


class PassphraseKDF:
    """PBKDF2-HMAC-SHA256 parameters that turn a human passphrase into a master key.

    ``PassphraseKDF.new()`` draws a random salt; store ``kdf.to_text()`` (not secret) with the
    configuration and rebuild it with :meth:`from_text` to derive the same key::

        kdf = PassphraseKDF.new()                          # once; save kdf.to_text()
        key = DataKey(1, kdf.derive(passphrase))

    Danger: a passphrase is only as strong as its guessability; 600,000 iterations make each
    guess slow, they do not make a short passphrase safe. Prefer random keys (``bastion
    secret``) wherever no human has to type the secret.
    """

    __slots__ = ("iterations", "salt")

    salt: bytes
    iterations: int

    def __init__(self, *, salt: bytes, iterations: int = MIN_PBKDF2_ITERATIONS) -> None:
        if not isinstance(salt, bytes) or len(salt) < _SALT_BYTES:
            raise ConfigurationError(
                f"PassphraseKDF salt must be at least {_SALT_BYTES} random bytes "
                "(PassphraseKDF.new() draws one)",
                setting="crypto.passphrase.salt",
            )
        if (
            isinstance(iterations, bool)
            or not isinstance(iterations, int)
            or not MIN_PBKDF2_ITERATIONS <= iterations <= 10**10 - 1
        ):
            raise ConfigurationError(
                f"PassphraseKDF iterations must be a whole number of at least "
                f"{MIN_PBKDF2_ITERATIONS:,}, got {iterations!r}",
                setting="crypto.passphrase.iterations",
            )
        self.salt = salt
        self.iterations = iterations

    @classmethod
    def new(cls, *, iterations: int = MIN_PBKDF2_ITERATIONS) -> PassphraseKDF:
        """Parameters with a fresh random salt."""
        return cls(salt=secrets.token_bytes(_SALT_BYTES), iterations=iterations)

    @classmethod
    def from_text(cls, text: str) -> PassphraseKDF:
        """Parameters from :meth:`to_text` (``pbkdf2-sha256$<iterations>$<salt>``)."""
        match = _PASSPHRASE_TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigurationError(
                "passphrase parameters must read 'pbkdf2-sha256$<iterations>$<base64url salt>' "
                "(PassphraseKDF.to_text())",
                setting="crypto.passphrase",
            )
        salt = base64.urlsafe_b64decode(match[2] + "=" * (-len(match[2]) % 4))
        return cls(salt=salt, iterations=int(match[1]))

    def to_text(self) -> str:
        """The parameters as one line of text (not secret)."""
        salt = base64.urlsafe_b64encode(self.salt).rstrip(b"=").decode("ascii")
        return f"pbkdf2-sha256${self.iterations}${salt}"

    def derive(self, passphrase: str | bytes) -> SecretKey:
        """The 32-byte master key of ``passphrase``. Slow on purpose (about a second)."""
        try:
            raw = passphrase.encode("utf-8") if isinstance(passphrase, str) else passphrase
        except UnicodeEncodeError:  # undecodable bytes of an environment variable (surrogateescape)
            raw = b""
        if not isinstance(raw, bytes) or not raw:
            raise ConfigurationError(
                "the passphrase must be non-empty UTF-8 text", setting="crypto.passphrase"
            )
        derived = hashlib.pbkdf2_hmac("sha256", raw, self.salt, self.iterations, dklen=32)
        return SecretKey._trusted(derived)

    def __repr__(self) -> str:
        return f"PassphraseKDF(iterations={self.iterations})"


class BlindIndexKey:
    """Keyed equality indexes of field values: HMAC-SHA256 under a subkey per (table, column).

    ``size`` is the index length in bytes (hex text of twice as many characters). 16 bytes
    give exact matches; a shorter index (down to 4 bytes) makes matches approximate (the query
    then filters the decrypted rows) and tells an attacker with the table less about which
    rows hold equal values.

    Danger: equal values have equal indexes, so the index column reveals which rows share a
    value and how often; index only columns whose frequency may be known (an e-mail address,
    not a yes/no field).
    """

    __slots__ = ("_cache", "_secret", "size")

    _secret: bytes
    _cache: dict[tuple[str, str], bytes]
    size: int

    _CACHE_LIMIT: Final = 1024

    def __init__(self, secret: SecretKey, *, size: int = 16) -> None:
        self._secret = _master(secret, "crypto.index_key").reveal()
        if isinstance(size, bool) or not isinstance(size, int) or not 4 <= size <= 32:
            raise ConfigurationError(
                f"blind index size must be a whole number of bytes from 4 to 32, got {size!r}",
                setting="crypto.index_size",
            )
        self.size = size
        self._cache = {}

    def _column_key(self, table: str, column: str) -> bytes:
        key = self._cache.get((table, column))
        if key is None:
            info = b"blind-index\x00" + length_prefixed(table.encode(), column.encode())
            key = hkdf_subkey(self._secret, info)
            if len(self._cache) < self._CACHE_LIMIT:  # names come from the app's schema
                self._cache[(table, column)] = key
        return key

    def index(self, value: str | bytes, *, table: str, column: str) -> str:
        """The index of ``value`` in ``table.column`` (hex)."""
        if isinstance(value, str):
            try:
                raw = value.encode("utf-8")
            except UnicodeEncodeError:  # a JSON body may hold "\ud800": typed, as encrypt is
                raise EncryptionFailed("the value is not valid text (a lone surrogate)") from None
        else:
            raw = value
        if not isinstance(raw, bytes):
            raise TypeError(f"a blind index is made of str or bytes, not {type(value).__name__}")
        key = self._column_key(table, column)
        return hmac.digest(key, raw, hashlib.sha256)[: self.size].hex()

    def __repr__(self) -> str:
        return f"BlindIndexKey(size={self.size})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("BlindIndexKey cannot be pickled: it holds a secret")
