"""Server-provided DPoP nonces (RFC 9449 sections 8 and 9), without server state.

Without a nonce, a client that holds the key (or malware on its device) can sign proofs dated
any time ahead and use them later; a nonce chosen by the server bounds a proof's life by the
server's clock instead. The server sends the current nonce in a ``DPoP-Nonce`` response header;
a proof without it, or with one that is no longer current, is refused with
:attr:`~bastion.core.tokens.reasons.TokenReason.DPOP_NONCE`, whose error code is
``use_dpop_nonce``: the client retries with the nonce of that response (HTTP 401 at a resource,
RFC 9449 section 9; 400 at a token endpoint, section 8). Send the header on successful
responses too, so clients pick up the next nonce before the current one goes stale.

A nonce names a time window (``lifetime`` seconds, 5 minutes by default) and carries an HMAC of
it under a key derived from the app's key ring (``tokens:dpop-nonce``), so no store is needed
and every process of the app issues and accepts the same nonces. The nonce of the current
window and of the one before are accepted, so a nonce stays usable for ``lifetime`` to twice
``lifetime`` seconds; after a key rotation, nonces made under the ring's older keys are
accepted until they go stale. Nonces are unpredictable without the key (RFC 9449 section 8),
the same for every client within a window, and not secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from typing import Final

from bastion.core.clock import Clock, system_clock
from bastion.core.keys import KeyRing, SecretKey
from bastion.core.tokens.dpop import DPoPCheck, DPoPRejected
from bastion.errors import ConfigurationError

__all__ = ["DPoPNonces"]

_PURPOSE: Final = "tokens:dpop-nonce"
_MAC_BYTES: Final = 16
_MAX_NONCE_LENGTH: Final = 64


class DPoPNonces:
    """Issues and checks the server's DPoP nonces (see the module docstring)."""

    __slots__ = ("_clock", "_keys", "lifetime")

    def __init__(
        self,
        keyring: KeyRing | SecretKey,
        *,
        lifetime: float = 300.0,
        clock: Clock = system_clock,
    ) -> None:
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or not math.isfinite(lifetime)
            or not 10 <= lifetime <= 3600
        ):
            raise ConfigurationError(
                f"lifetime must be from 10 to 3600 seconds, got {lifetime!r}", setting="lifetime"
            )
        if not isinstance(clock, Clock):
            raise ConfigurationError("clock must have a now() method", setting="clock")
        self._keys = tuple(key.reveal() for key in KeyRing.coerce(keyring).derive(_PURPOSE))
        self.lifetime = float(lifetime)
        self._clock = clock

    def __repr__(self) -> str:
        return f"DPoPNonces(lifetime={self.lifetime!r})"

    def _window(self) -> int:
        return math.floor(self._clock.now() / self.lifetime)

    @staticmethod
    def _mac(key: bytes, window: int) -> str:
        digest = hmac.digest(key, b"dpop-nonce|%d" % window, hashlib.sha256)[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def current(self) -> str:
        """The nonce to send in the ``DPoP-Nonce`` response header now."""
        window = self._window()
        return f"{window}.{self._mac(self._keys[0], window)}"

    def check(self, nonce: str | None) -> None:
        """Refuse a proof whose ``nonce`` claim is missing (``NONCE_MISSING``) or is not a
        current nonce of this server (``NONCE_STALE``), with ``DPOP_NONCE``."""
        if nonce is None:
            raise DPoPRejected(DPoPCheck.NONCE_MISSING)
        if not isinstance(nonce, str) or len(nonce) > _MAX_NONCE_LENGTH:
            raise DPoPRejected(DPoPCheck.NONCE_STALE)
        number, _, mac = nonce.partition(".")
        if not number.isascii() or not number.isdigit() or len(number) > 20:
            raise DPoPRejected(DPoPCheck.NONCE_STALE)
        window = int(number)
        if not 0 <= self._window() - window <= 1:
            raise DPoPRejected(DPoPCheck.NONCE_STALE)
        given = mac.encode("ascii", "replace")
        found = False
        for key in self._keys:  # every key, no early exit: the time does not say which matched
            found |= hmac.compare_digest(given, self._mac(key, window).encode("ascii"))
        if not found:
            raise DPoPRejected(DPoPCheck.NONCE_STALE)
