"""API keys: the token format, its checksum, scopes, the stored record and the verdicts.

Sans-I/O: :mod:`bastion.engine.apikeys` stores records and audits; this module decides.

Format (40 ASCII characters)::

    bst_ <30 random base62 characters> <6 base62 characters of CRC32>

The random part carries 178 bits from :mod:`secrets`. The checksum is the CRC32 of everything
before it, so a mistyped, truncated or invented key is refused by :func:`is_well_formed`
without any lookup, and secret scanners can tell a real bastion key from a look-alike. The
checksum is not a secret and not a signature: anyone can compute it, and it only filters noise.

Keys are never stored. The server stores ``HMAC-SHA256(server key, token)`` and finds the record
by that digest: a leaked database reveals no usable key, and unlike a slow password hash the
lookup costs a microsecond (a 178-bit random key needs no stretching).

Scopes are ``resource:action`` strings. A granted scope may end in ``*``: ``posts:*`` grants
``posts:read`` and ``posts:write``; ``*`` grants everything. Required scopes never contain
wildcards.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
import zlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from bastion.core import _check
from bastion.core.ratelimit import Rate
from bastion.errors import BadToken, ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "API_KEY_LENGTH",
    "API_KEY_PREFIX",
    "APIKeyRecord",
    "APIKeyStatus",
    "RateLimitSetting",
    "api_key_checksum",
    "api_key_from_headers",
    "generate_api_key",
    "is_well_formed",
    "scope_allows",
    "validate_scopes",
]

API_KEY_PREFIX: Final = "bst_"
_BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RANDOM_CHARS: Final = 30
_CHECKSUM_CHARS: Final = 6  # 62**6 > 2**32
API_KEY_LENGTH: Final = len(API_KEY_PREFIX) + _RANDOM_CHARS + _CHECKSUM_CHARS
"""Length of every key, in characters (40)."""

_WELL_FORMED = re.compile(rf"bst_[0-9A-Za-z]{{{_RANDOM_CHARS + _CHECKSUM_CHARS}}}", re.ASCII)
_SCOPE = re.compile(r"\*|[a-z0-9][a-z0-9_.-]{0,63}(?::[a-z0-9_.-]{1,64})*(?::\*)?", re.ASCII)
_REQUIRED_SCOPE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}(?::[a-z0-9_.-]{1,64})*", re.ASCII)
_RECORD_VERSION: Final = 1


def _base62(value: int, width: int) -> str:
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def api_key_checksum(body: str) -> str:
    """The 6-character base62 CRC32 of ``body`` (the prefix and the random part)."""
    return _base62(zlib.crc32(body.encode("ascii")), _CHECKSUM_CHARS)


def generate_api_key() -> str:
    """A new key: prefix, 30 random base62 characters, checksum. Show it once, store its HMAC."""
    body = API_KEY_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_CHARS))
    return body + api_key_checksum(body)


def is_well_formed(token: object) -> bool:
    """Whether ``token`` has the key format and a correct checksum. No lookup, no secrets."""
    if not isinstance(token, str) or len(token) != API_KEY_LENGTH:
        return False
    if _WELL_FORMED.fullmatch(token) is None:
        return False
    split = API_KEY_LENGTH - _CHECKSUM_CHARS
    return api_key_checksum(token[:split]) == token[split:]


def api_key_from_headers(*, x_api_key: str | None, authorization: str | None) -> str | None:
    """The presented key: the ``X-API-Key`` header, else an ``Authorization: Bearer`` token that
    starts with ``bst_``. Other bearer tokens (a JWT) are left for other authenticators."""
    if x_api_key is not None:
        return x_api_key.strip(" \t")
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip(" \t").partition(" ")
    token = credentials.strip(" \t")
    if scheme.lower() == "bearer" and token.startswith(API_KEY_PREFIX):
        return token
    return None


def validate_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` sorted and de-duplicated, or ConfigurationError naming the bad one."""
    if isinstance(scopes, str):
        raise ConfigurationError(
            f"scopes must be a list of scopes such as ['posts:read'], not the string {scopes!r}",
            setting="scopes",
        )
    checked = set()
    for scope in scopes:
        if not isinstance(scope, str) or _SCOPE.fullmatch(scope) is None:
            raise ConfigurationError(
                f"scope {scope!r} must be lowercase 'resource:action' words of a-z, 0-9, "
                "'_', '.', '-', optionally ending in ':*' (or '*' for everything)",
                setting="scopes",
            )
        checked.add(scope)
    return tuple(sorted(checked))


def scope_allows(granted: Iterable[str], required: str) -> bool:
    """Whether any granted scope covers ``required`` (exact, ``prefix:*`` or ``*``).

    A wildcard covers whole segments only: ``posts:*`` covers ``posts:read`` and
    ``posts:comments:write`` but not ``postsecret:read``.
    """
    if _REQUIRED_SCOPE.fullmatch(required) is None:
        raise ConfigurationError(
            f"required scope {required!r} must be a plain 'resource:action' (no wildcard)",
            setting="required_scope",
        )
    for scope in granted:
        if scope in ("*", required):
            return True
        if scope.endswith(":*") and required.startswith(scope[:-1]):
            return True
    return False


class APIKeyStatus(enum.StrEnum):
    """The verdict on a presented key. Stable values, for logs and error bodies."""

    VALID = "valid"
    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    INSUFFICIENT_SCOPE = "insufficient_scope"

    @property
    def http_status(self) -> int:
        """200 when valid, 403 for a missing scope, 401 for every other refusal."""
        if self is APIKeyStatus.VALID:
            return 200
        return 403 if self is APIKeyStatus.INSUFFICIENT_SCOPE else 401


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitSetting:
    """A per-key rate limit carried as data: ``limit`` requests per ``period`` seconds.

    The verified key's record carries it; :meth:`rate` turns it into a rate-limit
    :class:`~bastion.core.ratelimit.Rate` for the limiter (``Rule(name, setting.rate())``).
    """

    limit: int
    period: float

    def __post_init__(self) -> None:
        _check.whole_number("rate_limit.limit", self.limit, low=1, unit="requests")
        object.__setattr__(self, "period", _check.seconds("rate_limit.period", self.period))

    def rate(self) -> Rate:
        """``limit`` per ``period`` as a rate for :class:`bastion.engine.ratelimit.Rule`."""
        return Rate.per(self.limit, self.period)


@dataclass(frozen=True, slots=True, kw_only=True)
class APIKeyRecord:
    """What the store keeps about a key. Never the key itself: ``digest`` is its HMAC.

    ``replaced_by`` names the key that a rotation created; the old key keeps working until its
    (shortened) ``expires_at``. Times are Unix seconds.
    """

    key_id: str
    owner: str
    name: str
    scopes: tuple[str, ...]
    digest: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None
    rate_limit: RateLimitSetting | None = None
    replaced_by: str | None = None

    def status_at(self, now: float) -> APIKeyStatus:
        """REVOKED, EXPIRED or VALID at ``now`` (scopes are checked separately)."""
        if self.revoked_at is not None:
            return APIKeyStatus.REVOKED
        if self.expires_at is not None and now >= self.expires_at:
            return APIKeyStatus.EXPIRED
        return APIKeyStatus.VALID

    def allows(self, required_scope: str) -> bool:
        return scope_allows(self.scopes, required_scope)

    def with_changes(self, **changes: Any) -> APIKeyRecord:
        return replace(self, **changes)

    def to_bytes(self) -> bytes:
        """Compact JSON (never pickle)."""
        data: dict[str, Any] = {
            "v": _RECORD_VERSION,
            "id": self.key_id,
            "owner": self.owner,
            "name": self.name,
            "scopes": list(self.scopes),
            "digest": self.digest,
            "created": self.created_at,
            "expires": self.expires_at,
            "revoked": self.revoked_at,
            "used": self.last_used_at,
            "rate": None
            if self.rate_limit is None
            else [self.rate_limit.limit, self.rate_limit.period],
            "replaced_by": self.replaced_by,
        }
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> APIKeyRecord:
        """Decode :meth:`to_bytes`; raises :class:`~bastion.errors.BadToken` on damaged data."""
        try:
            data = json.loads(raw)
            if data["v"] != _RECORD_VERSION:
                raise BadToken(f"API key record version {data['v']!r} is not supported")
            rate = data["rate"]
            return cls(
                key_id=data["id"],
                owner=data["owner"],
                name=data["name"],
                scopes=tuple(data["scopes"]),
                digest=data["digest"],
                created_at=data["created"],
                expires_at=data["expires"],
                revoked_at=data["revoked"],
                last_used_at=data["used"],
                rate_limit=None
                if rate is None
                else RateLimitSetting(limit=rate[0], period=rate[1]),
                replaced_by=data["replaced_by"],
            )
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise BadToken("stored API key record is damaged; revoke and reissue the key") from (
                error
            )

    def __repr__(self) -> str:
        return (
            f"APIKeyRecord(key_id={self.key_id!r}, owner={self.owner!r}, name={self.name!r}, "
            f"scopes={self.scopes!r}, status_revoked={self.revoked_at is not None}, "
            f"expires_at={self.expires_at!r})"
        )
