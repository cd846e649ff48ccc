"""One-time tokens (password reset, e-mail verification, magic links): format and records.

Sans-I/O: the store work (issue, atomic consumption) is in :mod:`bastion.engine.tokens.onetime`.

Format. ``bot_<id>.<secret>``: ``id`` is 16 random bytes and ``secret`` 32 random bytes (256
bits), each unpadded base64url (22 and 43 characters), 70 characters in all, URL-safe as is.
The ``id`` names the stored record (it is no credential: it may appear in audit events as
``token_id``); the ``secret`` is never stored and never logged. A string of any other shape is
refused as ``MALFORMED`` before any store call.

Record (JSON, under ``hash_tag("token-once", id)``)::

    {"v": 1, "p": purpose, "u": user id, "i": issued at, "e": expires at,
     "m": MAC of (id, secret, purpose, user, expiry), "s": MAC of (id, purpose, user, state)}

Both MACs are keyed names (:meth:`~bastion.core.keys.KeyRing.lookup`, purposes
``tokens:onetime`` and ``tokens:onetime-state``), so a token issued before a key rotation still
verifies while its key stays in the ring's ``previous``, and a leaked store reveals neither a
usable token nor the bound state. The first MAC binds the purpose, the user and the expiry as
well: someone who can write the store but holds no key cannot move a token to another user,
purpose or expiry. ``state`` is whatever must end the token when it changes (the current
password hash for a reset, the address for an e-mail verification): a token whose state MAC no
longer matches is ``STATE_CHANGED``.

A consumed token leaves a tombstone ``{"v": 1, "x": spent at, "u": user}`` until its record
would have gone, so that a second use is told apart (and audited as a reuse) from a token that
never existed; both answer ``UNKNOWN``.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bastion.core.keys import validate_purpose
from bastion.core.tokens.reasons import TokenReason, TokenRejected
from bastion.errors import BadData, ConfigurationError

if TYPE_CHECKING:
    from bastion.core.keys import LookupKeys

__all__ = [
    "DEFAULT_MAX_TTL",
    "MAX_USER_ID_CHARS",
    "PREFIX",
    "OneTimeRecord",
    "Spent",
    "check_state",
    "check_ttl",
    "check_user_id",
    "decode_record",
    "encode_record",
    "encode_spent",
    "matches",
    "new_token",
    "parse_token",
    "state_message",
    "token_message",
]

PREFIX: Final = "bot_"
DEFAULT_MAX_TTL: Final = 86_400.0
"""Longest lifetime :meth:`~bastion.engine.tokens.onetime.OneTimeTokens.issue` accepts by
default: one day. A reset link is usually given 15 to 60 minutes."""
_MAX_MAX_TTL: Final = 30 * 86_400.0
MAX_USER_ID_CHARS: Final = 256
_ID_BYTES: Final = 16
_SECRET_BYTES: Final = 32
_TOKEN: Final = re.compile(r"bot_([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})", re.ASCII)
_VERSION: Final = 1


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_token() -> tuple[str, str, str]:
    """A fresh ``(token, id, secret)`` from the operating system's CSPRNG."""
    token_id = _b64(secrets.token_bytes(_ID_BYTES))
    secret = _b64(secrets.token_bytes(_SECRET_BYTES))
    return f"{PREFIX}{token_id}.{secret}", token_id, secret


def parse_token(token: object) -> tuple[str, str]:
    """``(id, secret)`` of a presented token, or :class:`TokenRejected` (``MALFORMED``).

    Canonical base64url only (the last character of each part carries no spare bits), so one
    token has exactly one spelling."""
    found = _TOKEN.fullmatch(token) if type(token) is str else None
    if found is None:
        raise TokenRejected(TokenReason.MALFORMED, "not a one-time token")
    token_id, secret = found.group(1), found.group(2)
    for part, size in ((token_id, _ID_BYTES), (secret, _SECRET_BYTES)):
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        if len(raw) != size or _b64(raw) != part:
            raise TokenRejected(TokenReason.MALFORMED, "not a one-time token")
    return token_id, secret


def _fields(*parts: bytes) -> bytes:
    # Length-prefixed, so no two field lists give the same message.
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def token_message(token_id: str, secret: str, purpose: str, user_id: str, expires: float) -> bytes:
    """What the record's first MAC names (see the module docstring)."""
    return _fields(
        b"bot.v1",
        _utf8(token_id),
        _utf8(secret),
        _utf8(purpose),
        _utf8(user_id),
        repr(float(expires)).encode("ascii"),
    )


def state_message(token_id: str, purpose: str, user_id: str, state: bytes) -> bytes:
    """What the record's state MAC names."""
    return _fields(b"bot.state.v1", _utf8(token_id), _utf8(purpose), _utf8(user_id), state)


def matches(names: LookupKeys, message: bytes, stored: str) -> bool:
    """Whether ``stored`` is the name of ``message`` under some key of the ring (constant time
    per comparison; every key is tried, current first)."""
    found = False
    for name in names.names(message):
        found |= hmac.compare_digest(name, stored)
    return found


def check_ttl(ttl: object, max_ttl: float) -> float:
    """``ttl`` as seconds, or :class:`ConfigurationError`: finite, > 0 and <= ``max_ttl``."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ConfigurationError(f"ttl must be seconds, got {type(ttl).__name__}", setting="ttl")
    try:
        seconds = float(ttl)
    except OverflowError:
        seconds = math.inf
    if not (math.isfinite(seconds) and 0 < seconds <= max_ttl):
        raise ConfigurationError(
            f"ttl must be seconds greater than 0 and at most {max_ttl:g} (max_ttl); one-time "
            "tokens are short-lived (a reset link: 15 to 60 minutes)",
            setting="ttl",
        )
    return seconds


def check_max_ttl(max_ttl: object) -> float:
    if (
        isinstance(max_ttl, bool)
        or not isinstance(max_ttl, int | float)
        or not 0 < max_ttl <= _MAX_MAX_TTL
    ):
        raise ConfigurationError(
            f"max_ttl must be seconds greater than 0 and at most {_MAX_MAX_TTL:g} (30 days), "
            f"got {max_ttl!r}",
            setting="max_ttl",
        )
    return float(max_ttl)


def check_purpose(purpose: object) -> str:
    """A purpose label (``password-reset``, ``email-verify``, ``magic-link``): see
    :func:`~bastion.core.keys.validate_purpose`."""
    return validate_purpose(purpose, setting="purpose")  # type: ignore[arg-type]


def check_user_id(user_id: object) -> str:
    if type(user_id) is not str or not 0 < len(user_id) <= MAX_USER_ID_CHARS:
        raise ConfigurationError(
            f"user_id must be non-empty text of at most {MAX_USER_ID_CHARS} characters",
            setting="user_id",
        )
    return user_id


def check_state(state: object) -> bytes:
    """The bound state as bytes (text is UTF-8). Never echoed in a message."""
    if isinstance(state, str):
        return _utf8(state)
    if isinstance(state, bytes | bytearray | memoryview):
        return bytes(state)
    raise ConfigurationError(
        f"state must be str or bytes (e.g. the current password hash), got {type(state).__name__}",
        setting="state",
    )


@dataclass(frozen=True, slots=True)
class OneTimeRecord:
    """What the store holds for a live one-time token (no token, no state: only MACs)."""

    purpose: str
    user_id: str
    issued_at: float
    expires_at: float
    mac: str
    state_mac: str


@dataclass(frozen=True, slots=True)
class Spent:
    """The tombstone of a consumed token."""

    spent_at: float
    user_id: str


def encode_record(record: OneTimeRecord) -> bytes:
    payload = {
        "v": _VERSION,
        "p": record.purpose,
        "u": record.user_id,
        "i": record.issued_at,
        "e": record.expires_at,
        "m": record.mac,
        "s": record.state_mac,
    }
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode_spent(spent: Spent) -> bytes:
    payload = {"v": _VERSION, "x": spent.spent_at, "u": spent.user_id}
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadData("one-time token record has a malformed time")
    return float(value)


def decode_record(raw: bytes) -> OneTimeRecord | Spent:
    """Parse a stored record or tombstone; anything else is :class:`BadData`."""
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadData("one-time token record is not JSON") from None
    if type(payload) is not dict or payload.get("v") != _VERSION:
        raise BadData("one-time token record has an unknown format version")
    user_id = payload.get("u")
    if type(user_id) is not str:
        raise BadData("one-time token record has a malformed user")
    if "x" in payload:
        return Spent(_number(payload["x"]), user_id)
    texts = [payload.get(name) for name in ("p", "m", "s")]
    if not all(type(text) is str for text in texts):
        raise BadData("one-time token record is malformed")
    purpose, mac, state_mac = (str(text) for text in texts)
    return OneTimeRecord(
        purpose=purpose,
        user_id=user_id,
        issued_at=_number(payload.get("i")),
        expires_at=_number(payload.get("e")),
        mac=mac,
        state_mac=state_mac,
    )
