"""PKCE (RFC 7636), S256 only: the verifier bastion keeps and the challenge it sends.

``plain`` is never offered: it protects nothing against an attacker who reads the
authorization request, which is exactly the attacker PKCE is for.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Final

from bastion.errors import BadData

__all__ = ["METHOD", "challenge", "check_verifier", "new_verifier"]

METHOD: Final = "S256"
_VERIFIER: Final = re.compile(r"[A-Za-z0-9\-._~]{43,128}", re.ASCII)


def new_verifier() -> str:
    """A fresh code verifier: 32 random bytes, base64url without padding (43 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def check_verifier(verifier: str) -> str:
    """``verifier`` if it has RFC 7636's form (43 to 128 unreserved characters), else
    :class:`~bastion.errors.BadData`."""
    if not isinstance(verifier, str) or _VERIFIER.fullmatch(verifier) is None:
        raise BadData("a PKCE code verifier is 43 to 128 unreserved characters")
    return verifier


def challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier``: base64url(SHA-256(verifier)), unpadded."""
    digest = hashlib.sha256(check_verifier(verifier).encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
