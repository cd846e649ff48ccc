"""``CryptoPolicy``: the field-encryption slice of :class:`~bastion.config.Bastion`.

::

    policy = CryptoPolicy(
        keys=DataKeyRing(DataKey(2, SecretKey(new_secret)),
                         previous=[DataKey(1, SecretKey(old_secret))]),
        index_key=SecretKey(index_secret),          # blind indexes; a key of its own
    )

Frozen and validated, so a ring that cannot work (a short master key, an id used twice, an
index key equal to a data key) fails at start-up with a message naming the setting. No secret
appears in its ``repr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion.core.crypto.envelope import Algorithm
from bastion.core.crypto.keys import MIN_MASTER_BYTES, DataKey, DataKeyRing
from bastion.core.keys import SecretKey
from bastion.errors import ConfigurationError

__all__ = ["CryptoPolicy"]


def _ring(keys: object) -> DataKeyRing:
    if isinstance(keys, DataKeyRing):
        return keys
    if isinstance(keys, DataKey):
        return DataKeyRing(keys)
    if isinstance(keys, str):
        return DataKeyRing.from_text(keys)
    if isinstance(keys, Sequence) and keys:
        first, *rest = keys
        return DataKeyRing(first, previous=rest)
    raise ConfigurationError(
        "crypto.keys must be a DataKeyRing, a DataKey, a list of DataKey (newest first) or "
        "'id:base64url,...' text; generate a key with DataKey.generate(1)",
        setting="crypto.keys",
    )


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class CryptoPolicy:
    """How fields are encrypted.

    * ``keys``: the data keys (:class:`~bastion.core.crypto.keys.DataKeyRing`, or a
      ``DataKey``, a list of them newest first, or ``"id:base64url,..."`` text). The first is
      the current key: every new ciphertext uses it; the others decrypt only.
    * ``index_key``: the key of blind indexes (equality search on encrypted columns), 32 bytes
      or more. It must not be one of the data keys, and it does not rotate with them: an index
      must not change when the data keys do. ``None``: no blind indexes.
    * ``algorithm``: ``aes-256-gcm`` (default) or ``aes-256-gcm-siv`` (nonce-misuse
      resistant, about half the speed). Values written under either always decrypt.
    * ``index_size``: blind index length in bytes (16: exact matches; 4 to 32).
    """

    keys: DataKeyRing
    index_key: SecretKey | None = None
    algorithm: Algorithm = Algorithm.AES_256_GCM
    index_size: int = 16

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        ring = _ring(self.keys)
        set_(self, "keys", ring)
        try:
            set_(self, "algorithm", Algorithm(self.algorithm))
        except ValueError:
            raise ConfigurationError(
                f"crypto.algorithm must be one of {', '.join(a.value for a in Algorithm)}, "
                f"got {self.algorithm!r}",
                setting="crypto.algorithm",
            ) from None
        index = self.index_key
        if index is not None:
            if not isinstance(index, SecretKey):
                raise ConfigurationError(
                    f"crypto.index_key must be a SecretKey or None, not {type(index).__name__}",
                    setting="crypto.index_key",
                )
            if len(index.reveal()) < MIN_MASTER_BYTES:
                raise ConfigurationError(
                    f"crypto.index_key needs at least {MIN_MASTER_BYTES} random bytes",
                    setting="crypto.index_key",
                )
            if any(index == key.secret for key in ring):
                raise ConfigurationError(
                    "crypto.index_key must be a key of its own, not one of the data keys: "
                    "blind indexes must survive the rotation of data keys",
                    setting="crypto.index_key",
                )
        size = self.index_size
        if isinstance(size, bool) or not isinstance(size, int) or not 4 <= size <= 32:
            raise ConfigurationError(
                f"crypto.index_size must be a whole number of bytes from 4 to 32, got {size!r}",
                setting="crypto.index_size",
            )

    def __repr__(self) -> str:
        index = "None" if self.index_key is None else "SecretKey('**********')"
        return (
            f"CryptoPolicy(keys={self.keys!r}, index_key={index}, "
            f"algorithm={self.algorithm.value!r}, index_size={self.index_size})"
        )
