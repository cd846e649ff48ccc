"""Session IDs, handles and store keys: what the cookie carries and what the store is keyed by.

What the cookie carries is a session ID: 256 random bits as 43 base64url characters (signed by
the engine when the app asks for it). The store never sees the ID: a record lives under
``session:`` + the session's *handle*, the base64url SHA-256 of the ID, so a leaked store names
no live session. A 256-bit random ID needs no slow hash: nobody can search that space.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import secrets
from typing import Final

__all__ = [
    "DEFAULT_COOKIE_NAME",
    "DEVELOPMENT_COOKIE_NAME",
    "PRESESSION_PREFIX",
    "SESSION_ID_CHARS",
    "handle_of",
    "is_session_id",
    "new_csrf_secret",
    "new_session_id",
    "presession_csrf_secret",
    "record_key",
    "session_handle",
]

DEFAULT_COOKIE_NAME: Final = "__Host-session"
"""The cookie name over HTTPS: the ``__Host-`` prefix pins it to this host, path ``/``."""

DEVELOPMENT_COOKIE_NAME: Final = "session"
"""The cookie name in plain-HTTP development (a ``__Host-`` cookie needs ``Secure``)."""

SESSION_ID_CHARS: Final = 43
"""Length of a session ID: 32 random bytes in unpadded base64url."""

_ID = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)

_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def _b64_32(data: bytes) -> str:
    """Unpadded base64url of 32 bytes (43 characters)."""
    return binascii.b2a_base64(data, newline=False)[:SESSION_ID_CHARS].translate(_URLSAFE).decode()


def new_session_id() -> str:
    """A fresh session ID: 256 bits from :mod:`secrets`, 43 base64url characters."""
    return _b64_32(secrets.token_bytes(32))


def new_csrf_secret() -> str:
    """A fresh per-session CSRF secret (256 bits). Rotated with the ID on login."""
    return _b64_32(secrets.token_bytes(32))


PRESESSION_PREFIX: Final = "p."
"""Marks a session cookie that names no stored session yet: ``p.`` + 43 random characters.

An anonymous visitor who is shown a CSRF token gets this cookie instead of a stored session,
so page views write nothing to the store. The CSRF secret of such a visitor is derived from
the random value (:func:`presession_csrf_secret`); the session record is created at the first
real write and inherits that secret, so the tokens already in the page keep working."""


def presession_csrf_secret(value: str) -> str:
    """The CSRF secret of a visitor whose cookie carries the pre-session ``value``.

    A hash of a 256-bit random value that only the visitor's cookie holds (HttpOnly, and
    ``__Host-``-pinned over HTTPS): whoever can read it could read a session ID as well, and
    whoever plants one learns no more than by planting a session of their own.
    """
    return _b64_32(hashlib.sha256(b"bastion presession csrf\x00" + value.encode("ascii")).digest())


def is_session_id(text: object) -> bool:
    """Whether ``text`` has the shape of a session ID (says nothing about whether it exists)."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def session_handle(session_id: str) -> str:
    """The public, non-secret name of a session: base64url SHA-256 of its ID.

    Handles appear in the store and in the per-user registry; knowing one does not let anyone
    use the session (the cookie needs the ID itself).
    """
    return _b64_32(hashlib.sha256(session_id.encode("ascii")).digest())


def record_key(handle: str) -> str:
    """The store key of the session with ``handle``."""
    return "session:" + handle


def handle_of(key: str) -> str:
    """The handle inside a record's store key (the inverse of :func:`record_key`)."""
    return key.removeprefix("session:")
