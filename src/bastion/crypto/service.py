"""``EncryptionService``: the guide's four calls, with keys that rotate and values bound to
their record.

::

    crypto = EncryptionService(policy, auditor=runtime.auditor)
    token = crypto.encrypt_field("+44 20 7946 0000", table="users", row=42, column="phone")
    crypto.decrypt_field(token, table="users", row=42, column="phone")   # the phone number
    crypto.decrypt_field(token, table="users", row=43, column="phone")   # DecryptionFailed

Tutorials derive one Fernet key with PBKDF2 over a fixed salt and encrypt every field with it:
a ciphertext copied into another user's row decrypts there, and changing the key means
re-encrypting the whole database at once. Here each field's ciphertext names the record it
belongs to (table, primary key, column) in its associated data, carries the id of the key that
made it, and decrypts under any key of the ring, so keys rotate row by row.

``encrypt``/``decrypt`` take free ``context`` bytes instead of a record (nothing is bound when
it is empty); a field ciphertext never decrypts through them, nor the other way round.

Every refused ciphertext is audited as ``crypt_decrypt_fail`` (outcome ``failure``, details
``reason``, ``key_id`` when the header was readable, ``table`` and ``column`` for fields; never
the value or the row's key) before :class:`~bastion.core.crypto.errors.DecryptionFailed` is
raised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bastion.core.audit import EventName, Outcome
from bastion.core.crypto.envelope import Cipher, RecordAAD, decode_text, encode_text
from bastion.core.crypto.errors import DecryptionFailed, DecryptReason, EncryptionFailed
from bastion.core.crypto.keys import BlindIndexKey
from bastion.crypto.policy import CryptoPolicy
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.audit import Auditor, DetailValue
    from bastion.core.crypto.envelope import RowKey

__all__ = ["Ciphertext", "EncryptionService"]

_VALUE_LABEL: Final = b"bastion.value.v1\x00"


class Ciphertext(str):
    """Text made by :class:`EncryptionService`. The SQLAlchemy ``EncryptedString`` type
    stores only values of this class, so a plaintext can never be written into an encrypted
    column by mistake (nor an attacker's string that merely looks like a ciphertext)."""

    __slots__ = ()


def _utf8(value: object) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise EncryptionFailed("the value is not valid text (a lone surrogate)") from None
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise EncryptionFailed(f"only str or bytes are encrypted, not {type(value).__name__}")


class EncryptionService:
    """Encrypts and decrypts with a :class:`~bastion.crypto.policy.CryptoPolicy` (see the
    module docstring). Thread-safe: it holds no mutable state but a bounded subkey cache."""

    __slots__ = ("_aad", "_auditor", "_cipher", "_index", "policy")

    def __init__(self, policy: CryptoPolicy, *, auditor: Auditor | None = None) -> None:
        if not isinstance(policy, CryptoPolicy):
            raise ConfigurationError(
                f"EncryptionService needs a CryptoPolicy, not {type(policy).__name__}",
                setting="crypto",
            )
        self.policy = policy
        self._cipher = Cipher(policy.keys, algorithm=policy.algorithm)
        self._auditor = auditor
        self._aad = RecordAAD()
        self._index = (
            None
            if policy.index_key is None
            else BlindIndexKey(policy.index_key, size=policy.index_size)
        )

    @property
    def current_key_id(self) -> int:
        """The id of the key new ciphertexts use."""
        return self._cipher.current_id

    # -- the guide's calls -------------------------------------------------------------------

    def encrypt(self, data: str | bytes, *, context: bytes = b"") -> Ciphertext:
        """``data`` encrypted under the current key, bound to ``context`` (may be empty)."""
        blob = self._cipher.seal(_utf8(data), _VALUE_LABEL + context)
        return Ciphertext(encode_text(blob))

    def decrypt(self, token: str, *, context: bytes = b"") -> str:
        """The text ``encrypt`` was given; :class:`DecryptionFailed` (audited) otherwise."""
        return self._text(self._open(token, _VALUE_LABEL + context))

    def decrypt_bytes(self, token: str, *, context: bytes = b"") -> bytes:
        """The bytes ``encrypt`` was given (text comes back as its UTF-8 bytes)."""
        return self._open(token, _VALUE_LABEL + context)

    def encrypt_field(
        self, value: str | None, *, table: str, row: RowKey, column: str
    ) -> Ciphertext | None:
        """``value`` encrypted for one field of one record (``None`` stays ``None``)."""
        if value is None:
            return None
        blob = self._cipher.seal(_utf8(value), self._aad(table, row, column))
        return Ciphertext(encode_text(blob))

    def decrypt_field(
        self, token: str | None, *, table: str, row: RowKey, column: str
    ) -> str | None:
        """The text of a field ciphertext if it belongs to exactly this record's field
        (``None`` stays ``None``); :class:`DecryptionFailed` (audited) otherwise."""
        if token is None:
            return None
        raw = self._open(token, self._aad(table, row, column), table, column)
        return self._text(raw, table, column)

    # -- rotation and search -----------------------------------------------------------------

    def needs_rotation(self, token: str) -> bool:
        """Whether ``token`` was made under another key (or algorithm) than new values use.
        Reads the header only: no key is needed and nothing is decrypted."""
        try:
            return self._cipher.needs_rotation(decode_text(token))
        except DecryptionFailed as error:
            self._audit(error, {})
            raise

    def rotate_field(self, token: str, *, table: str, row: RowKey, column: str) -> Ciphertext:
        """``token`` re-encrypted under the current key (the same text when it already is)."""
        if not self.needs_rotation(token):
            return Ciphertext(token)
        value = self.decrypt_field(token, table=table, row=row, column=column)
        rotated = self.encrypt_field(value, table=table, row=row, column=column)
        if rotated is None:  # pragma: no cover (token is a str, so value is one)
            raise DecryptionFailed(DecryptReason.MALFORMED, "no value")
        return rotated

    def key_id_of(self, token: str) -> int:
        """The key id in ``token``'s header (without decrypting it)."""
        blob = decode_text(token)
        self._cipher.needs_rotation(blob)  # checks the header
        return int.from_bytes(blob[2:6], "big")

    def blind_index(self, value: str | bytes, *, table: str, column: str) -> str:
        """The equality index of ``value`` for ``table.column``: the same for equal values,
        whatever the data keys. Needs ``CryptoPolicy(index_key=...)``."""
        if self._index is None:
            raise ConfigurationError(
                "blind indexes need CryptoPolicy(index_key=SecretKey(...)), a key that is not "
                "one of the data keys",
                setting="crypto.index_key",
            )
        return self._index.index(value, table=table, column=column)

    # -- internals ---------------------------------------------------------------------------

    def _open(
        self, token: str, aad: bytes, table: str | None = None, column: str | None = None
    ) -> bytes:
        try:
            return self._cipher.open(decode_text(token), aad)
        except DecryptionFailed as error:
            details: dict[str, DetailValue] = {}
            if table is not None:
                details["table"] = table
                details["column"] = column
            self._audit(error, details)
            raise

    def _text(self, raw: bytes, table: str | None = None, column: str | None = None) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            error = DecryptionFailed(
                DecryptReason.NOT_TEXT, "the decrypted value is bytes, not UTF-8 text"
            )
            details: dict[str, DetailValue] = {}
            if table is not None:  # the same details as every other refused field
                details["table"] = table
                details["column"] = column
            self._audit(error, details)
            raise error from None

    def _audit(self, error: DecryptionFailed, details: dict[str, DetailValue]) -> None:
        if self._auditor is None:
            return
        details["reason"] = error.reason.value
        if error.key_id is not None:
            details["key_id"] = error.key_id
        self._auditor.emit(EventName.CRYPT_DECRYPT_FAIL, outcome=Outcome.FAILURE, details=details)

    def __repr__(self) -> str:
        return f"EncryptionService({self.policy!r})"
