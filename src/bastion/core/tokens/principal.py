"""Who a verified access token speaks for, and the one protocol every HTTP adapter verifies with.

The adapters (:mod:`bastion.asgi.bearer`, :mod:`bastion.wsgi.bearer`, :mod:`bastion.fastapi`,
:mod:`bastion.starlette`, :mod:`bastion.flask`) never decode a token themselves: they build a
:class:`BearerRequest` from the request and hand it to a :class:`BearerVerifier` (bastion's
token service implements it), which returns a :class:`Principal` or raises
:class:`~bastion.core.tokens.reasons.TokenRejected`. A
:class:`~bastion.errors.StoreUnavailable` from the verifier is an outage (503 with
``Retry-After``); any other exception is a bug in the verifier and propagates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["BearerRequest", "BearerVerifier", "Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The subject of a verified access token and what it may do.

    ``scopes`` are the token's granted scopes, compared exactly (RFC 6749 section 3.3: a scope
    is an opaque string; ``"posts"`` does not grant ``"posts:read"``). ``claims`` are the
    verified claims for the app's own use; nothing in bastion echoes them into a response or a
    log. ``cnf_jkt`` is the thumbprint of the key the token is bound to (RFC 9449), ``None``
    for a plain bearer token.
    """

    subject: str
    scopes: frozenset[str]
    token_id: str
    expires_at: float
    claims: Mapping[str, object] = field(repr=False)
    kind: str = "access"
    cnf_jkt: str | None = None

    def has_scopes(self, required: Iterable[str]) -> bool:
        """Whether every scope in ``required`` was granted (an empty ``required`` is true)."""
        return self.scopes.issuperset(required)

    def missing_scopes(self, required: Iterable[str]) -> tuple[str, ...]:
        """The scopes of ``required`` that were not granted, in the order given."""
        return tuple(scope for scope in required if scope not in self.scopes)


@dataclass(frozen=True, slots=True)
class BearerRequest:
    """What a verifier needs to know about one request.

    ``authorization`` is the raw ``Authorization`` header (the adapters have already checked
    it: one header, within the size cap, ``Bearer``/``DPoP`` and one token68; parse it again
    with :func:`bastion.core.tokens.bearer.parse_authorization`). ``dpop`` is the raw ``DPoP``
    proof header, or ``None``. ``method`` is the request method as sent; ``url`` is
    ``scheme://host/path`` without query or fragment, built from the scheme and host that the
    trusted proxies vouch for (never from a forwarding header of an untrusted peer), for the
    DPoP ``htu`` check. The ``repr`` never shows the header values.
    """

    authorization: str | None = field(repr=False)
    dpop: str | None = field(repr=False)
    method: str
    url: str


class BearerVerifier(Protocol):
    """Verifies the credentials of a :class:`BearerRequest` (bastion's token service is one).

    Both methods raise :class:`~bastion.core.tokens.reasons.TokenRejected` for every refusal
    (no credentials: ``TokenReason.MISSING``; a DPoP-bound token sent as ``Bearer``:
    ``TokenReason.DPOP_REQUIRED``) and :class:`~bastion.errors.StoreUnavailable` when the
    revocation state cannot be read. ``authenticate_sync`` serves WSGI apps (no event loop).
    """

    async def authenticate(self, request: BearerRequest) -> Principal: ...

    def authenticate_sync(self, request: BearerRequest) -> Principal: ...
