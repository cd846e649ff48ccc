"""Why a token was refused: one reason enum for every token kind, and the typed error.

Reasons are stable values: they appear in audit events and tests. Responses show only the
RFC 6750 error code of :attr:`TokenReason.error_code` (``invalid_request``, ``invalid_token``,
``insufficient_scope``, or RFC 9449's ``invalid_dpop_proof``), never the token, a claim, a key
or a stack trace.
"""

from __future__ import annotations

import enum

from bastion.errors import BadToken

__all__ = ["TokenReason", "TokenRejected"]


class TokenReason(enum.StrEnum):
    """Why a token (access, refresh, one-time) or a DPoP proof was refused."""

    # the request itself
    MISSING = "missing"  # no credential where one is required
    MALFORMED_HEADER = "malformed_header"  # Authorization is not "<scheme> <token68>"
    TOO_LARGE = "too_large"  # over the size cap, refused before any base64 or JSON work
    HEADER_TOO_LARGE = "header_too_large"  # Authorization / DPoP header over the raw cap
    # the encoding
    MALFORMED = "malformed"  # not three base64url segments of JSON objects, or bad UTF-8
    NOT_CANONICAL = "not_canonical"  # padding, non-canonical base64url, whitespace
    DUPLICATE_KEY = "duplicate_key"  # a JSON object names a member twice
    # the header
    ALG_NONE = "alg_none"  # any spelling of "none"
    ALG_NOT_ALLOWED = "alg_not_allowed"  # not the algorithm pinned for the key id
    UNKNOWN_KID = "unknown_kid"  # no configured key has this id (or the id is not a string)
    EMBEDDED_KEY = "embedded_key"  # jwk / jku / x5u / x5c / x5t in the header
    UNKNOWN_CRIT = "unknown_crit"  # a "crit" extension we do not implement
    WRONG_TYPE = "wrong_type"  # typ header of another token kind
    # the signature
    BAD_SIGNATURE = "bad_signature"
    # the claims
    MISSING_CLAIM = "missing_claim"
    BAD_CLAIM = "bad_claim"  # a registered claim of the wrong JSON type or out of range
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"  # nbf in the future beyond the leeway
    ISSUED_IN_FUTURE = "issued_in_future"  # iat in the future beyond the leeway
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    # state
    REVOKED = "revoked"  # jti on the deny-list, family revoked, or user epoch advanced
    UNKNOWN = "unknown"  # opaque token not found (never issued, consumed, or expired)
    REUSED = "reused"  # a rotated refresh token presented again: the family is revoked
    STATE_CHANGED = "state_changed"  # a one-time token whose bound state changed
    WRONG_PURPOSE = "wrong_purpose"  # a one-time token of another purpose or user
    INSUFFICIENT_SCOPE = "insufficient_scope"
    # sender constraint (RFC 9449)
    DPOP_REQUIRED = "dpop_required"  # a DPoP-bound token presented without a proof
    NOT_BOUND = "not_bound"  # a token that is not DPoP-bound presented with the DPoP scheme
    DPOP_INVALID = "dpop_invalid"  # the proof is malformed or its signature fails
    DPOP_REPLAYED = "dpop_replayed"  # the proof's jti was seen before
    DPOP_MISMATCH = "dpop_mismatch"  # htm / htu / ath / iat / key thumbprint do not match
    DPOP_NONCE = "dpop_nonce"  # the server requires its nonce (missing or stale): retry with it

    @property
    def error_code(self) -> str | None:
        """The RFC 6750 / RFC 9449 ``error`` value a ``WWW-Authenticate`` header carries;
        ``None`` for a request without credentials (RFC 6750 section 3.1: no error code)."""
        if self is TokenReason.MISSING:
            return None
        if self in _REQUEST_ERRORS:
            return "invalid_request"
        if self is TokenReason.INSUFFICIENT_SCOPE:
            return "insufficient_scope"
        if self is TokenReason.DPOP_NONCE:
            return "use_dpop_nonce"  # RFC 9449 sections 8 and 9: send DPoP-Nonce with it
        if self.name.startswith("DPOP_") and self is not TokenReason.DPOP_REQUIRED:
            return "invalid_dpop_proof"
        return "invalid_token"

    @property
    def status(self) -> int:
        """The HTTP status of the refusal: 400 for a malformed request, 403 for a missing
        scope, 401 otherwise (RFC 6750 section 3.1)."""
        code = self.error_code
        if code == "invalid_request":
            return 400
        if code == "insufficient_scope":
            return 403
        return 401


_REQUEST_ERRORS = frozenset({TokenReason.MALFORMED_HEADER, TokenReason.HEADER_TOO_LARGE})


class TokenRejected(BadToken):
    """A token or proof failed a check; ``reason`` says which (never the token itself).

    The message is for logs and developers: it names the check and never echoes the token,
    a claim value, or key material.
    """

    def __init__(self, reason: TokenReason, message: str | None = None) -> None:
        super().__init__(message or f"token refused: {reason.value}")
        self.reason = reason
