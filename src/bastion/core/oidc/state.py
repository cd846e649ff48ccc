"""The login-state record: what bastion remembers between the redirect and the callback.

One record per login attempt, kept server-side (the engine stores it under a key derived from
``state``) and never in a cookie. ``binding`` is a digest of the browser's pre-login session
handle (:func:`bind`), so a ``state`` planted into another browser is refused
(``state_mismatch``) even though it is live. ``state`` and ``nonce`` are 256-bit random values;
``code_verifier`` is the PKCE secret, sent only to the token endpoint.

The record is JSON (:func:`encode_state` / :func:`decode_state`); :func:`decode_state` is total
over bytes: anything that is not a record it wrote raises :class:`~bastion.errors.BadData`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass
from typing import Final

from bastion.core.oidc.pkce import check_verifier, new_verifier
from bastion.errors import BadData

__all__ = [
    "LoginState",
    "bind",
    "decode_state",
    "encode_state",
    "matches_binding",
    "new_login_state",
    "new_secret",
]

_VERSION: Final = 1
_FIELDS: Final = (
    "state",
    "nonce",
    "code_verifier",
    "provider",
    "redirect_uri",
    "next",
    "binding",
)


def new_secret() -> str:
    """A 256-bit random value, base64url (43 characters): a ``state`` or a ``nonce``."""
    return secrets.token_urlsafe(32)


def bind(session_binding: str) -> str:
    """The digest of the pre-login session handle that a record stores: the handle itself
    (a session secret) never reaches the login-state record."""
    if not isinstance(session_binding, str) or not session_binding:
        raise BadData("the session binding of a login must be a non-empty string")
    return hashlib.sha256(b"bastion-oidc-binding\x00" + session_binding.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginState:
    """One login attempt (see the module docstring). ``next`` is the already checked
    post-login destination; ``created_at`` Unix seconds."""

    state: str
    nonce: str
    code_verifier: str
    provider: str
    redirect_uri: str
    next: str
    binding: str
    created_at: float

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise BadData(f"login state: {name} must be a non-empty string")
        check_verifier(self.code_verifier)
        created = self.created_at
        if isinstance(created, bool) or not isinstance(created, int | float):
            raise BadData("login state: created_at must be a number")
        if not math.isfinite(created):
            raise BadData("login state: created_at must be finite")


def new_login_state(
    *, provider: str, redirect_uri: str, next_url: str, session_binding: str, now: float
) -> LoginState:
    """A fresh record: new ``state``, ``nonce`` and PKCE verifier, bound to the browser."""
    return LoginState(
        state=new_secret(),
        nonce=new_secret(),
        code_verifier=new_verifier(),
        provider=provider,
        redirect_uri=redirect_uri,
        next=next_url,
        binding=bind(session_binding),
        created_at=float(now),
    )


def matches_binding(record: LoginState, session_binding: str) -> bool:
    """Whether ``session_binding`` is the handle ``record`` was bound to (constant time)."""
    return hmac.compare_digest(record.binding, bind(session_binding))


def encode_state(record: LoginState) -> bytes:
    """``record`` as compact JSON bytes."""
    body: dict[str, object] = {"v": _VERSION, "created_at": record.created_at}
    body.update({name: getattr(record, name) for name in _FIELDS})
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode_state(raw: bytes) -> LoginState:
    """The record :func:`encode_state` wrote, or :class:`~bastion.errors.BadData`."""
    try:
        body = json.loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadData("login state: not JSON") from exc
    if not isinstance(body, dict) or body.get("v") != _VERSION:
        raise BadData("login state: not a version 1 record")
    if set(body) != {"v", "created_at", *_FIELDS}:
        raise BadData("login state: unexpected members")
    return LoginState(
        state=body["state"],
        nonce=body["nonce"],
        code_verifier=body["code_verifier"],
        provider=body["provider"],
        redirect_uri=body["redirect_uri"],
        next=body["next"],
        binding=body["binding"],
        created_at=body["created_at"],
    )
