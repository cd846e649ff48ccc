"""Field encryption, sans-I/O: the ciphertext format, data keys, passphrase keys, blind indexes.

* :mod:`bastion.core.crypto.envelope`: the versioned ciphertext (format version, algorithm, key
  id, nonce, AEAD output) and :class:`Cipher`, AES-256-GCM or AES-256-GCM-SIV with the
  record's identity (table, primary key, column) as associated data.
* :mod:`bastion.core.crypto.keys`: :class:`DataKey` and :class:`DataKeyRing` (versioned master
  keys, HKDF subkeys), :class:`PassphraseKDF` (PBKDF2, at least 600,000 iterations, random
  salt) and :class:`BlindIndexKey` (HMAC equality indexes under a key of their own).
* :mod:`bastion.core.crypto.errors`: :class:`DecryptionFailed` and its reasons.

The service applications use (audited failures, text in and out) is
:class:`bastion.crypto.EncryptionService`.
"""

from __future__ import annotations

from bastion.core.crypto.envelope import (
    FORMAT_VERSION,
    OVERHEAD_BYTES,
    Algorithm,
    Cipher,
    RecordAAD,
    RowKey,
    decode_text,
    encode_text,
    key_id_of,
    record_aad,
)
from bastion.core.crypto.errors import (
    DecryptionFailed,
    DecryptReason,
    EncryptionFailed,
    MalformedCiphertext,
    UnknownKey,
)
from bastion.core.crypto.keys import (
    MIN_PBKDF2_ITERATIONS,
    BlindIndexKey,
    DataKey,
    DataKeyRing,
    PassphraseKDF,
)

__all__ = [
    "FORMAT_VERSION",
    "MIN_PBKDF2_ITERATIONS",
    "OVERHEAD_BYTES",
    "Algorithm",
    "BlindIndexKey",
    "Cipher",
    "DataKey",
    "DataKeyRing",
    "DecryptReason",
    "DecryptionFailed",
    "EncryptionFailed",
    "MalformedCiphertext",
    "PassphraseKDF",
    "RecordAAD",
    "RowKey",
    "UnknownKey",
    "decode_text",
    "encode_text",
    "key_id_of",
    "record_aad",
]
