"""What a signed-in session keeps for RP-initiated logout: the ID token, encrypted, or nothing.

The ``id_token_hint`` of the logout redirect is the ID token of the session's sign-in. Kept in
the session as it is, it sits in every store dump, backup and replica in clear: a bearer JWT
with the user's claims (e-mail, name), which some resource servers accept where they should
not. So:

* With field encryption (``OIDC(crypto=runtime.crypto)``, that is ``Bastion(crypto=
  CryptoPolicy(...))``) the token is sealed with the runtime's data keys (AES-256-GCM or
  GCM-SIV, the key id in the header, so the keys rotate) under associated data naming the
  purpose, the provider, the session's user and its ``authenticated_at``: a ciphertext
  copied into another session, another user's or a later login's, does not decrypt
  (``crypt_decrypt_fail`` is audited) and that logout simply goes without a hint. The
  ciphertext is kept as base32 (upper case): it can never contain a base64url JWT marker such
  as ``eyJ``, so a secret scanner over session dumps stays quiet.
* Without field encryption nothing is kept, and logout sends ``client_id`` with
  ``post_logout_redirect_uri`` and no ``id_token_hint``, which OpenID Connect RP-Initiated
  Logout 1.0 allows: the provider then asks the user to confirm the sign-out (a hint lets some
  providers skip that page). A session record without a token leaks none; this is the default
  because a hint is a convenience and a stored token a liability.

Sessions written by an older bastion kept the token under ``"id_token"``: it is no longer
read, so their logout goes without a hint, and the next sign-in replaces the entry.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from bastion.engine.sessions import Session

__all__ = ["LOGOUT_KEY", "FieldCipher", "hint_of", "kept_for_logout"]


class FieldCipher(Protocol):
    """What the hint needs of :class:`bastion.crypto.EncryptionService` (``runtime.crypto``):
    its two calls with associated data. A protocol, so this layer does not import the crypto
    layer beside it."""

    def encrypt(self, data: str | bytes, *, context: bytes = b"") -> str: ...

    def decrypt(self, token: str, *, context: bytes = b"") -> str: ...


LOGOUT_KEY: Final = "_bastion_oidc"
"""The session key under which a login through a provider keeps what RP-initiated logout
needs: ``{"provider": name, "hint": <base32 ciphertext of the ID token>}``, only with field
encryption (see the module docstring)."""

_PURPOSE: Final = b"bastion.oidc.id_token_hint.v1"


def _context(session: Session, provider: str) -> bytes | None:
    """The associated data binding a hint to ``provider`` and this login of this session."""
    user, at = session.user_id, session.authenticated_at
    if user is None or at is None:
        return None
    return b"\x00".join(
        (_PURPOSE, provider.encode(), user.encode("utf-8", "surrogatepass"), repr(at).encode())
    )


def kept_for_logout(
    session: Session, provider: str, id_token: str | None, crypto: FieldCipher | None
) -> dict[str, Any] | None:
    """What :data:`LOGOUT_KEY` holds after ``session.login()`` through ``provider`` (``None``:
    nothing to keep, no entry)."""
    if id_token is None or crypto is None:
        return None
    context = _context(session, provider)
    if context is None:
        return None
    from bastion.core.crypto.envelope import decode_text  # noqa: PLC0415 (the crypto extra)

    sealed = decode_text(crypto.encrypt(id_token, context=context))
    return {"provider": provider, "hint": base64.b32encode(sealed).decode("ascii").rstrip("=")}


def hint_of(session: Session, provider: str, crypto: FieldCipher | None) -> str | None:
    """The ID token to send as ``id_token_hint`` when ``session`` signed in through
    ``provider`` and its hint decrypts under this session's binding; ``None`` otherwise (an
    undecryptable hint is audited by ``crypto`` as ``crypt_decrypt_fail``)."""
    kept = session.get(LOGOUT_KEY)
    if crypto is None or not isinstance(kept, dict) or kept.get("provider") != provider:
        return None
    hint = kept.get("hint")
    context = _context(session, provider)
    if not isinstance(hint, str) or not hint or len(hint) > 32_768 or context is None:
        return None
    from bastion.core.crypto.envelope import encode_text  # noqa: PLC0415 (the crypto extra)
    from bastion.core.crypto.errors import DecryptionFailed  # noqa: PLC0415

    try:
        sealed = base64.b32decode(hint + "=" * (-len(hint) % 8))
    except (binascii.Error, ValueError):
        return None
    try:
        return crypto.decrypt(encode_text(sealed), context=context)
    except DecryptionFailed:
        return None
