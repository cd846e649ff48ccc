"""Why a ciphertext was refused, as a typed error with a stable reason.

::

    BadData (bastion.errors)
    └── DecryptionFailed          the value was not decrypted; ``reason`` says why
        ├── MalformedCiphertext   not a bastion ciphertext: encoding, length, format version
        └── UnknownKey            its key id is not in the ring (removed, or another ring's)

``NOT_AUTHENTIC`` is raised as :class:`DecryptionFailed` itself: the authentication tag did not
verify, which covers a ciphertext moved to another row or column, a tampered or truncated-then-
padded value, and a ring whose key under that id is not the key that encrypted it. AES-GCM
cannot tell these apart, and nothing should: a reason finer than "not authentic" would be an
oracle.

Messages never contain the plaintext, the ciphertext or a key; the key id (a small number that
grants nothing) and the record's table and column are given, for the audit event.
"""

from __future__ import annotations

import enum

from bastion.errors import BadData, BastionError

__all__ = [
    "DecryptReason",
    "DecryptionFailed",
    "EncryptionFailed",
    "MalformedCiphertext",
    "UnknownKey",
]


class DecryptReason(enum.StrEnum):
    """The stable reason of a :class:`DecryptionFailed` (the ``reason`` of the audit event)."""

    MALFORMED = "malformed"
    """Not base64url text, shorter than a header and a tag, or bytes that are not canonical."""
    UNSUPPORTED_FORMAT = "unsupported_format"
    """A format version or algorithm byte this version of bastion does not know."""
    UNKNOWN_KEY = "unknown_key"
    """The key id is not in the ring: the key was removed, or the value is another ring's."""
    NOT_AUTHENTIC = "not_authentic"
    """The tag did not verify: another row or column, tampered, or the wrong key."""
    NOT_TEXT = "not_text"
    """Authentic bytes that are not UTF-8 text, asked for as text (they were stored as bytes)."""


class DecryptionFailed(BadData):
    """A ciphertext was not decrypted. ``reason`` is a :class:`DecryptReason`; ``key_id`` the
    key id read from the header (``None`` when the header could not be read)."""

    def __init__(self, reason: DecryptReason, message: str, *, key_id: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.key_id = key_id


class MalformedCiphertext(DecryptionFailed):
    """The value is not a bastion ciphertext (``MALFORMED`` or ``UNSUPPORTED_FORMAT``)."""


class UnknownKey(DecryptionFailed):
    """The ciphertext names a key id the ring does not hold (``UNKNOWN_KEY``)."""


class EncryptionFailed(BastionError, TypeError):
    """A value cannot be encrypted as asked: it is not ``str`` or ``bytes``, or text that is
    not encodable as UTF-8 (a lone surrogate). A programming error, raised before any key is
    used."""
