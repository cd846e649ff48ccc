"""Field encryption with rotating keys and blind indexes (``Bastion(crypto=CryptoPolicy(...))``).

::

    from bastion.crypto import CryptoPolicy, DataKey, EncryptionService

    crypto = EncryptionService(CryptoPolicy(keys=[DataKey(1, secret)]))
    token = crypto.encrypt_field("555-0100", table="users", row=7, column="phone")

Values are encrypted with AES-256-GCM (or AES-256-GCM-SIV) under an HKDF subkey of the current
data key; each ciphertext carries its format version and key id and is bound to its record
(table, primary key, column). :mod:`bastion.crypto.sqlalchemy` has the ``EncryptedString``
column type and blind-index columns; ``bastion crypto rotate`` re-encrypts old rows.
"""

from __future__ import annotations

from bastion.core.crypto.envelope import Algorithm
from bastion.core.crypto.errors import (
    DecryptionFailed,
    DecryptReason,
    EncryptionFailed,
    MalformedCiphertext,
    UnknownKey,
)
from bastion.core.crypto.keys import DataKey, DataKeyRing, PassphraseKDF
from bastion.crypto.policy import CryptoPolicy
from bastion.crypto.service import Ciphertext, EncryptionService

__all__ = [
    "Algorithm",
    "Ciphertext",
    "CryptoPolicy",
    "DataKey",
    "DataKeyRing",
    "DecryptReason",
    "DecryptionFailed",
    "EncryptionFailed",
    "EncryptionService",
    "MalformedCiphertext",
    "PassphraseKDF",
    "UnknownKey",
]
