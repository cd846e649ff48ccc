"""The ciphertext format of field encryption, and the cipher that writes and reads it.

A ciphertext is these bytes (stored as unpadded base64url text in a string column)::

    offset  size  field
    0       1     format version (1)
    1       1     algorithm: 1 AES-256-GCM, 2 AES-256-GCM-SIV
    2       4     key id, big-endian (the DataKey that encrypted it)
    6       12    nonce, random per encryption
    18      n+16  AEAD output: the encrypted value and its 16-byte tag

The associated data authenticated with it is the 18-byte header followed by the record's
identity (:func:`record_aad`: table, primary key and column, length-prefixed). A ciphertext
copied to another row or another column, or given another header (a changed key id or
algorithm byte), fails the tag check and is refused; so does one cut short or extended.
Nothing in the format is secret except the value: the key id and algorithm are readable
without a key (:func:`key_id_of`), which is what lets ``bastion crypto rotate`` find the rows
still on an old key without decrypting them.

Nonces are 96 random bits per encryption. With AES-256-GCM that is safe for about 2**32
encryptions under one key (the birthday bound at which a repeated nonce becomes likely
enough to matter); rotate keys well before that, or choose AES-256-GCM-SIV, whose security
degrades only to revealing equal plaintexts if a nonce ever repeats.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import uuid
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV

from bastion.core.crypto.errors import (
    DecryptionFailed,
    DecryptReason,
    MalformedCiphertext,
    UnknownKey,
)
from bastion.core.crypto.keys import DataKeyRing, hkdf_subkey, length_prefixed
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "FORMAT_VERSION",
    "HEADER_BYTES",
    "OVERHEAD_BYTES",
    "Algorithm",
    "Cipher",
    "RecordAAD",
    "RowKey",
    "decode_text",
    "encode_text",
    "key_id_of",
    "record_aad",
]

FORMAT_VERSION: Final = 1
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
HEADER_BYTES: Final = 2 + 4 + NONCE_BYTES
OVERHEAD_BYTES: Final = HEADER_BYTES + TAG_BYTES
"""Bytes a ciphertext adds to its value (34; text form: base64 of value + 34 bytes)."""

_RECORD_LABEL: Final = b"bastion.field.v1\x00"

RowKey = str | int | uuid.UUID | tuple[str | int | uuid.UUID, ...]
"""A primary key: one value, or a tuple for a composite key. An ``int`` and its decimal text
name the same row (``5`` and ``"5"``), as do a ``UUID`` and its canonical text, so a key read
from a URL matches the stored one."""


class Algorithm(enum.StrEnum):
    """The AEAD that encrypts new values (every known one decrypts)."""

    AES_256_GCM = "aes-256-gcm"
    """AES-256 in Galois/Counter mode: the fastest, hardware-accelerated almost everywhere."""
    AES_256_GCM_SIV = "aes-256-gcm-siv"
    """RFC 8452: a repeated nonce reveals only that two values are equal. About half the speed."""


_ALGORITHM_BYTES: Final = {Algorithm.AES_256_GCM: 1, Algorithm.AES_256_GCM_SIV: 2}
_AEADS: Final[dict[int, type[AESGCM | AESGCMSIV]]] = {1: AESGCM, 2: AESGCMSIV}


def _part(value: str | int | uuid.UUID, setting: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, str | int | uuid.UUID):
        raise TypeError(
            f"{setting} must be str, int or UUID (or a tuple of them), not {type(value).__name__}"
        )
    text = value if isinstance(value, str) else str(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise TypeError(f"{setting} is not valid text (a lone surrogate)") from None


def record_aad(table: str, row: RowKey, column: str) -> bytes:
    """The associated data naming one field of one record (unambiguous: length-prefixed).

    ``row`` is the primary key; a composite key is a tuple, whose parts are encoded one by one
    (so ``("a", "b")`` never collides with ``"a", "b"`` read another way)."""
    parts = row if isinstance(row, tuple) else (row,)
    if not parts:
        raise TypeError("the primary key must not be an empty tuple")
    encoded = [_part(part, "the primary key") for part in parts]
    head = length_prefixed(_part(table, "the table name"), _part(column, "the column name"))
    return _RECORD_LABEL + head + len(encoded).to_bytes(4, "big") + length_prefixed(*encoded)


def encode_text(blob: bytes) -> str:
    """The text form of a ciphertext: unpadded base64url."""
    return base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii")


def decode_text(text: str) -> bytes:
    """The bytes of a ciphertext's text form; only the canonical encoding is accepted."""
    if not isinstance(text, str):
        raise MalformedCiphertext(
            DecryptReason.MALFORMED, f"a ciphertext is text, not {type(text).__name__}"
        )
    try:
        raw = binascii.a2b_base64(
            text.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(text) % 4),
            strict_mode=True,
        )
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise MalformedCiphertext(
            DecryptReason.MALFORMED, "the ciphertext is not base64url text"
        ) from None
    tail = len(text) % 4  # 2 or 3 characters: their last one carries unused bits
    if tail and text[-1] not in _CANONICAL_LAST[tail]:
        raise MalformedCiphertext(
            DecryptReason.MALFORMED, "the ciphertext is not in canonical base64url"
        )
    return raw


_FROM_URLSAFE: Final = bytes.maketrans(b"-_+/=", b"+/!!!")
# "+", "/" and "=" become an invalid character: only unpadded URL-safe text decodes.
_CANONICAL_LAST: Final = ("", "", "AQgw", "AEIMQUYcgkosw048")
# The characters whose unused low bits (4 after two characters of a group, 2 after three)
# are zero: any other last character decodes to the same bytes, so it is not canonical.


class RecordAAD:
    """:func:`record_aad` with the (table, column) part kept per pair: the same bytes, made
    in a fraction of the time for the common one-column key. The cache is bounded (table and
    column names come from the application's schema, not from requests)."""

    __slots__ = ("_heads",)

    _LIMIT: Final = 4096

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str], bytes] = {}

    def __call__(self, table: str, row: RowKey, column: str) -> bytes:
        kind = type(row)
        if kind is tuple:
            return record_aad(table, row, column)
        head = self._heads.get((table, column))
        if head is None:
            head = (
                _RECORD_LABEL
                + length_prefixed(_part(table, "the table name"), _part(column, "the column name"))
                + (1).to_bytes(4, "big")
            )
            if len(self._heads) < self._LIMIT:
                self._heads[(table, column)] = head
        if kind is int:
            part = str(row).encode("ascii")
        elif kind is str:
            part = _part(row, "the primary key")  # type: ignore[arg-type]
        else:
            return record_aad(table, row, column)  # subclasses, and the type errors
        return head + len(part).to_bytes(4, "big") + part


def key_id_of(blob: bytes) -> int:
    """The key id in a ciphertext's header, read without a key (for rotation)."""
    _check_header(blob)
    return int.from_bytes(blob[2:6], "big")


def _check_header(blob: bytes) -> None:
    if len(blob) < OVERHEAD_BYTES:
        raise MalformedCiphertext(
            DecryptReason.MALFORMED,
            f"the ciphertext is {len(blob)} bytes long, shorter than its header and tag "
            f"({OVERHEAD_BYTES} bytes): cut short",
        )
    if blob[0] != FORMAT_VERSION or blob[1] not in _AEADS:
        raise MalformedCiphertext(
            DecryptReason.UNSUPPORTED_FORMAT,
            f"unknown ciphertext format (version {blob[0]}, algorithm {blob[1]})",
        )


class Cipher:
    """Encrypts with the ring's current key under ``algorithm``; decrypts with any key of the
    ring under either algorithm.

    Every subkey and AEAD object is made here, once per key: HKDF runs at start-up, never per
    value. Sealing is one random nonce, one AEAD call and two byte joins.
    """

    __slots__ = ("_aeads", "_current_id", "_openers", "_prefix", "_sealer", "algorithm", "ring")

    def __init__(self, ring: DataKeyRing, *, algorithm: Algorithm = Algorithm.AES_256_GCM) -> None:
        if not isinstance(ring, DataKeyRing):
            raise ConfigurationError(
                "crypto.keys must be a DataKeyRing(DataKey(id, secret), ...)",
                setting="crypto.keys",
            )
        try:
            algorithm = Algorithm(algorithm)
        except ValueError:
            raise ConfigurationError(
                f"crypto.algorithm must be one of {', '.join(a.value for a in Algorithm)}, "
                f"got {algorithm!r}",
                setting="crypto.algorithm",
            ) from None
        self.ring = ring
        self.algorithm = algorithm
        self._aeads: dict[tuple[int, int], AESGCM | AESGCMSIV] = {}
        for key in ring:
            master = key.secret.reveal()
            for number, aead in _AEADS.items():
                info = b"aead\x00" + bytes((number,)) + key.id.to_bytes(4, "big")
                try:
                    self._aeads[(number, key.id)] = aead(hkdf_subkey(master, info))
                except UnsupportedAlgorithm:  # AES-GCM-SIV needs OpenSSL 3.2 or later
                    continue
        # The first six header bytes (version, algorithm, key id) select the AEAD in one lookup.
        self._openers = {
            bytes((FORMAT_VERSION, alg)) + key_id.to_bytes(4, "big"): aead
            for (alg, key_id), aead in self._aeads.items()
        }
        number = _ALGORITHM_BYTES[algorithm]
        if (number, ring.current.id) not in self._aeads:
            raise ConfigurationError(
                f"crypto.algorithm {algorithm.value} is not supported by this build of "
                "cryptography/OpenSSL (AES-GCM-SIV needs OpenSSL 3.2); choose aes-256-gcm",
                setting="crypto.algorithm",
            )
        self._current_id = ring.current.id
        self._prefix = bytes((FORMAT_VERSION, number)) + self._current_id.to_bytes(4, "big")
        self._sealer = self._aeads[(number, self._current_id)]

    @property
    def current_id(self) -> int:
        """The id of the key new ciphertexts use."""
        return self._current_id

    def seal(self, value: bytes, aad: bytes) -> bytes:
        """The ciphertext of ``value`` bound to ``aad`` (see the module docstring)."""
        nonce = os.urandom(NONCE_BYTES)
        header = self._prefix + nonce
        return header + self._sealer.encrypt(nonce, value, header + aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The value of ``blob`` if it is authentic for ``aad``; else :class:`DecryptionFailed`."""
        aead = self._openers.get(blob[:6]) if len(blob) >= OVERHEAD_BYTES else None
        key_id = int.from_bytes(blob[2:6], "big")
        if aead is None:
            _check_header(blob)  # malformed or unsupported, if that is why
            raise UnknownKey(
                DecryptReason.UNKNOWN_KEY,
                f"the ciphertext names key id {key_id}, which the ring does not hold "
                f"(ids {', '.join(str(k.id) for k in self.ring)})",
                key_id=key_id,
            )
        header = blob[:HEADER_BYTES]
        try:
            return aead.decrypt(blob[6:HEADER_BYTES], blob[HEADER_BYTES:], header + aad)
        except InvalidTag:
            raise DecryptionFailed(
                DecryptReason.NOT_AUTHENTIC,
                "the ciphertext is not authentic for this record (moved from another row or "
                "column, altered, or encrypted under another key with this id)",
                key_id=key_id,
            ) from None

    def needs_rotation(self, blob: bytes) -> bool:
        """Whether ``blob`` was made with another key or algorithm than new values use."""
        _check_header(blob)
        return blob[:6] != self._prefix

    def known_ids(self) -> Sequence[int]:
        """The key ids this cipher decrypts, newest first."""
        return tuple(key.id for key in self.ring)

    def __repr__(self) -> str:
        return f"Cipher({self.ring!r}, algorithm={self.algorithm.value!r})"
