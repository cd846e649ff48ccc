"""Group ``crypto``: field encryption of a 32-byte value against the guide's Fernet service.

The baseline is the tutorial recipe (issue 17): an ``EncryptionService`` that derives one
Fernet key with PBKDF2-HMAC-SHA256 over a fixed salt **once**, in its constructor, and then
``encrypt(data) = fernet.encrypt(data.encode()).decode()`` and the reverse; the key derivation
is outside the timed loop (the "PBKDF2 key reused"), so the rows compare the per-value work
alone: Fernet's AES-128-CBC, HMAC-SHA256, timestamp and base64, against bastion's
:meth:`~bastion.crypto.service.EncryptionService.encrypt_field` and ``decrypt_field`` (AES-256-GCM
and AES-256-GCM-SIV under an HKDF subkey, the record's table, primary key and column as
associated data, a versioned header, base64url) with the same text in and out.

Target (issue 17, "Speed"): bastion's encrypt and decrypt rows at least twice the guide's rate
(a ratio <= 0.50). Case names carry the stored size of each ciphertext of the 32-byte value.

Every case is proved at set-up: each decrypt returns the 32-byte value, and bastion's refuses
the same ciphertext for another row, so a decrypt that checks nothing cannot be timed.
"""

from __future__ import annotations

import base64
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from bastion.core.keys import SecretKey
from bastion.crypto import Algorithm, CryptoPolicy, DataKey, DecryptionFailed, EncryptionService
from bench.group import Group
from bench.measure import sync_case

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from bench.group import Options
    from bench.measure import Case

__all__ = ["GROUP", "VALUE", "GuideEncryptionService", "crypto_cases", "sizes"]

VALUE: Final = "0123456789abcdef0123456789ABCDEF"  # 32 bytes of text
FIELD: Final = {"table": "users", "row": 42, "column": "phone"}
GUIDE_ENCRYPT: Final = "guide Fernet encrypt"
GUIDE_DECRYPT: Final = "guide Fernet decrypt"


class GuideEncryptionService:
    """The tutorial's service: a Fernet key from PBKDF2 over a fixed salt, derived once.

    Reproduced for the comparison only. Its defects are the issue's: the fixed salt, one key
    for every field (a ciphertext copied to another row decrypts there) and no key id (a
    rotation is a re-encryption of everything at once).
    """

    def __init__(self, master_key: str) -> None:
        kdf = PBKDF2HMAC(
            algorithm=hashes.SHA256(), length=32, salt=b"fixed_salt", iterations=100_000
        )
        self.cipher = Fernet(base64.urlsafe_b64encode(kdf.derive(master_key.encode())))

    def encrypt(self, data: str) -> str:
        return self.cipher.encrypt(data.encode()).decode()

    def decrypt(self, encrypted_data: str) -> str:
        return self.cipher.decrypt(encrypted_data.encode()).decode()


def _ours(algorithm: Algorithm) -> EncryptionService:
    policy = CryptoPolicy(keys=[DataKey(1, SecretKey.generate())], algorithm=algorithm)
    return EncryptionService(policy)


def sizes() -> dict[str, int]:
    """Characters of the stored text of each ciphertext of :data:`VALUE`."""
    guide = GuideEncryptionService("correct horse battery staple")
    found = {"guide Fernet": len(guide.encrypt(VALUE))}
    for algorithm in Algorithm:
        token = _ours(algorithm).encrypt_field(VALUE, **FIELD)  # type: ignore[arg-type]
        found[f"bastion {algorithm.value}"] = len(token or "")
    return found


def _prove(crypto: EncryptionService, token: str) -> None:
    if crypto.decrypt_field(token, **FIELD) != VALUE:  # type: ignore[arg-type]
        raise RuntimeError("bastion's decrypt_field did not return the value")
    try:
        crypto.decrypt_field(token, table="users", row=43, column="phone")
    except DecryptionFailed:
        return
    raise RuntimeError("bastion's decrypt_field accepted a ciphertext of another row")


@asynccontextmanager
async def crypto_cases(_options: Options) -> AsyncIterator[list[Case]]:
    guide = GuideEncryptionService("correct horse battery staple")
    guide_token = guide.encrypt(VALUE)
    if guide.decrypt(guide_token) != VALUE:
        raise RuntimeError("the guide's service did not round-trip")
    size = sizes()
    cases = [
        sync_case(f"{GUIDE_ENCRYPT} ({size['guide Fernet']} chars)", lambda: guide.encrypt(VALUE)),
        sync_case(
            f"{GUIDE_DECRYPT} ({size['guide Fernet']} chars)", lambda: guide.decrypt(guide_token)
        ),
    ]
    guide_encrypt, guide_decrypt = cases[0].name, cases[1].name
    for algorithm in Algorithm:
        crypto = _ours(algorithm)
        token = crypto.encrypt_field(VALUE, **FIELD)  # type: ignore[arg-type]
        if token is None:  # pragma: no cover (a str in gives a str out)
            raise RuntimeError("no ciphertext")
        _prove(crypto, token)
        label = f"bastion {algorithm.value}"
        cases.append(
            sync_case(
                f"{label} encrypt_field ({size[label]} chars)",
                lambda c=crypto: c.encrypt_field(VALUE, **FIELD),  # type: ignore[misc, arg-type]
                baseline=guide_encrypt,
            )
        )
        cases.append(
            sync_case(
                f"{label} decrypt_field ({size[label]} chars)",
                lambda c=crypto, t=token: c.decrypt_field(t, **FIELD),  # type: ignore[misc, arg-type]
                baseline=guide_decrypt,
            )
        )
    yield cases


GROUP = Group(
    name="crypto",
    title=(
        "Field encryption of a 32-byte text value: the guide's Fernet service (PBKDF2 key "
        "derived once) against bastion's EncryptionService.encrypt_field / decrypt_field "
        "(record bound as associated data); ciphertext sizes in characters of stored text."
    ),
    iterations=20_000,
    cases=crypto_cases,
)
