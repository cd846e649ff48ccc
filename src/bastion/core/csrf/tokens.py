"""CSRF tokens, sans I/O: secrets, BREACH-safe masking, constant-time checks, double submit.

The secret is 32 random bytes: the session's CSRF secret (synchronizer token; the session
rotates it on ``login()``) or, for apps without server sessions, the random half of a signed
double-submit cookie whose HMAC binds it to the request's identity (user or client-side
session). A token sent to a page is ``mask || (mask XOR secret)`` with a fresh 32-byte mask per
call, base64url: the bytes differ on every response, so a compression side channel (BREACH)
learns nothing across responses. Comparison is constant time and total: non-ASCII, truncated
or oversized input is ``TOKEN_MALFORMED``, never an exception.

Danger: the secret must never be written into a page unmasked; use :func:`mask_secret`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Final

from bastion.core.cookies import Cookie, SameSite
from bastion.core.csrf.checks import CSRFReason
from bastion.core.csrf.config import CSRFConfig, TokenSource
from bastion.core.keys import KeyRing
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.keys import SecretKey

__all__ = [
    "MASKED_TOKEN_CHARS",
    "MAX_VERIFIED_COOKIES",
    "SECRET_BYTES",
    "DoubleSubmit",
    "check_token",
    "double_submit_setup",
    "mask_secret",
    "new_secret",
    "secret_from_text",
    "unmask_token",
]

SECRET_BYTES: Final = 32
MASKED_TOKEN_CHARS: Final = 86
"""Length of a masked token: 64 bytes in unpadded base64url."""
_MAX_TOKEN_CHARS: Final = 256
MAX_VERIFIED_COOKIES: Final = 1024
"""How many verified double-submit cookies one :class:`DoubleSubmit` remembers."""


def new_secret() -> bytes:
    """32 random bytes for a double-submit cookie."""
    return secrets.token_bytes(SECRET_BYTES)


# base64url straight through binascii (the base64 module's wrappers cost more than the work).
_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")
_PADDING: Final = (b"", b"", b"==", b"=")  # by len % 4; 1 is never valid


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode()


def _unb64(text: bytes) -> bytes | None:
    """The bytes of unpadded base64url ``text``; ``None`` for anything else (a character
    outside the alphabet, padding, a length no encoding has).

    The standard alphabet's ``+`` and ``/`` and any ``=`` are refused before the translation
    to it; the strict decoder refuses every other character outside the alphabet.
    """
    if not text or b"=" in text or b"+" in text or b"/" in text or len(text) % 4 == 1:
        return None
    try:
        return binascii.a2b_base64(
            text.translate(_TO_STANDARD) + _PADDING[len(text) % 4], strict_mode=True
        )
    except binascii.Error:
        return None


def secret_from_text(text: str) -> bytes:
    """The 32 secret bytes of a session's CSRF secret (43 base64url characters).

    A session secret of any other shape (written by a third party) is hashed to 32 bytes, so
    every secret yields a usable token.
    """
    raw = _unb64(text.encode("ascii", "replace"))
    if raw is not None and len(raw) == SECRET_BYTES:
        return raw
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def mask_secret(secret: bytes) -> str:
    """A token for ``secret``: ``mask || (mask XOR secret)`` with a fresh mask, base64url.

    Every call returns different text for the same secret (BREACH defence); all of them verify.
    """
    mask = secrets.token_bytes(len(secret))
    masked = (int.from_bytes(mask) ^ int.from_bytes(secret)).to_bytes(len(secret))
    return _b64(mask + masked)


def unmask_token(token: str | bytes) -> bytes | None:
    """The secret inside a masked token, or ``None`` when ``token`` is not one. Never raises."""
    data = _ascii(token)
    if data is None or len(data) != MASKED_TOKEN_CHARS:
        return None
    raw = _unb64(data)
    if raw is None or len(raw) != 2 * SECRET_BYTES:
        return None
    mask, masked = raw[:SECRET_BYTES], raw[SECRET_BYTES:]
    return (int.from_bytes(mask) ^ int.from_bytes(masked)).to_bytes(SECRET_BYTES)


def _ascii(token: object) -> bytes | None:
    if isinstance(token, str):
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            return None
        return token.strip(" \t").encode("ascii")
    if isinstance(token, bytes | bytearray):
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            return None
        return bytes(token).strip(b" \t")
    return None


def check_token(submitted: str | bytes, secret: bytes) -> CSRFReason | None:
    """``None`` when ``submitted`` is a masked token of ``secret``; else the reason.

    Constant time in the secret; total on any input (non-ASCII and oversized tokens are
    ``TOKEN_MALFORMED``).
    """
    unmasked = unmask_token(submitted)
    if unmasked is None:
        return CSRFReason.TOKEN_MALFORMED
    if not hmac.compare_digest(unmasked, secret):
        return CSRFReason.TOKEN_INCORRECT
    return None


class DoubleSubmit:
    """Signed double-submit cookies for apps without server sessions.

    The cookie is ``<random>.<mac>`` where ``mac`` is HMAC-SHA256, under the ring's
    ``"csrf-double-submit"`` subkey, over the length-prefixed identity and the random value.
    An attacker who can plant cookies (a sibling subdomain) cannot mint one for the victim's
    identity, and a cookie stops verifying when the identity changes (login): a new one is
    issued. ``identity`` is the user or client-side session the request belongs to; ``""``
    for anonymous requests.

    A cookie's MAC cannot change, and a returning browser sends the same cookie on every
    request, so the secret of each cookie that verified is remembered with its identity (at most
    :data:`MAX_VERIFIED_COOKIES`, forgotten all at once when full): the next request with it
    costs a dictionary look-up instead of an HMAC. Only successes are remembered, so a forged
    cookie is checked, and refused, every time and cannot fill the memory; the key ring is fixed
    for the instance, so what verified stays valid. The token sent with the cookie is still
    checked against the secret on every request.
    """

    __slots__ = ("_keys", "_verified")

    def __init__(self, keyring: KeyRing | SecretKey) -> None:
        ring = KeyRing.coerce(keyring).derive("csrf-double-submit")
        # One keyed HMAC per key, copied per message: the key schedule is done once here, not
        # on every request (a copy costs about two thirds of a fresh hmac.digest).
        self._keys = tuple(hmac.new(key.reveal(), digestmod=hashlib.sha256) for key in ring)
        self._verified: dict[tuple[str, str], bytes] = {}

    @property
    def remembered(self) -> int:
        """How many verified cookies are remembered now."""
        return len(self._verified)

    def _mac(self, key: hmac.HMAC, identity: str, value: bytes) -> bytes:
        who = identity.encode("utf-8", "surrogatepass")
        mac = key.copy()
        mac.update(len(who).to_bytes(4) + who + value)
        return mac.digest()

    def issue(self, identity: str) -> tuple[str, bytes]:
        """A new ``(cookie_value, secret)`` for ``identity``."""
        value = new_secret()
        return _b64(value) + "." + _b64(self._mac(self._keys[0], identity, value)), value

    def verify(self, cookie_value: str | None, identity: str) -> bytes | None:
        """The secret of a cookie issued for ``identity`` by any key of the ring, else ``None``.

        Never raises; tries every key without an early exit.
        """
        if cookie_value is None:
            return None
        verified = self._verified
        known = verified.get((cookie_value, identity))
        if known is not None:
            return known
        value = self._check_mac(cookie_value, identity)
        if value is not None:
            if len(verified) >= MAX_VERIFIED_COOKIES:
                verified.clear()
            verified[cookie_value, identity] = value
        return value

    def _check_mac(self, cookie_value: str, identity: str) -> bytes | None:
        data = _ascii(cookie_value)
        if data is None:
            return None
        value_text, dot, mac_text = data.partition(b".")
        if not dot:
            return None
        value, mac = _unb64(value_text), _unb64(mac_text)
        if value is None or mac is None or len(value) != SECRET_BYTES or len(mac) != 32:
            return None
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(self._mac(key, identity, value), mac)
        return value if matched else None

    def __repr__(self) -> str:
        return f"DoubleSubmit(keys={len(self._keys)})"


def double_submit_setup(
    config: CSRFConfig, keyring: KeyRing | SecretKey | None
) -> tuple[DoubleSubmit, Cookie] | None:
    """The signer and the cookie template of the double-submit mode; ``None`` when tokens live
    in the session. Built once, at start-up, by both middlewares.

    The cookie is readable by the page's JavaScript on purpose: single-page apps copy it into
    the header. It is no more secret than a token in the page, and HMAC-bound to the identity.
    """
    if config.token_source is not TokenSource.DOUBLE_SUBMIT:
        return None
    if keyring is None:
        raise ConfigurationError(
            "token_source=DOUBLE_SUBMIT signs its cookie: pass keyring=KeyRing.from_secrets([...])",
            setting="keyring",
        )
    try:
        cookie = Cookie(
            name=config.cookie_name or "",
            secure=not config.development,
            http_only=False,
            same_site=SameSite.STRICT,
        )
    except ValueError as exc:
        raise ConfigurationError(f"CSRF cookie policy: {exc}", setting="cookie_name") from exc
    return DoubleSubmit(keyring), cookie
