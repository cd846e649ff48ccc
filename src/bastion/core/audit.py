"""Audit events: structured, named after the OWASP Logging Vocabulary, safe to ship anywhere.

An :class:`AuditEvent` is a frozen record of one security-relevant thing that happened. Its
fields are built to be logged without a review of every call site:

* ``name`` is an :class:`EventName` from the `OWASP Application Logging Vocabulary
  <https://cheatsheetseries.owasp.org/cheatsheets/Logging_Vocabulary_Cheat_Sheet.html>`_, or a
  custom ``snake_case`` name (``^[a-z]+(_[a-z0-9]+)*$``) for events the vocabulary lacks.
* ``user``, ``client_ip`` and ``session`` hold only :class:`HashedIdentifier` values: keyed,
  truncated HMAC-SHA256 digests made by an :class:`IdentifierHasher`. A leaked log cannot be
  reversed with a dictionary of user names or of IPv4 addresses without the key.
* ``details`` is a flat mapping of ``snake_case`` keys to scalars. Keys that look like they
  name a secret (``password``, ``token``, ``api_key``, ``session_id``, ``otp``, ``code`` ...)
  are **refused** with :class:`~bastion.errors.ConfigurationError`, not redacted: detail keys
  are written by developers, not attackers, so a refusal shows up on the first test run of the
  call site, whereas silent redaction would hide the mistake. A few common, harmless names
  that contain such a word are allowed (:data:`SAFE_DETAIL_KEYS`).
* ``user_agent`` is the request's ``User-Agent``, as sent (attacker-controlled, so cleaned and
  credential-shaped parts redacted like detail text, cut to :data:`MAX_USER_AGENT_CHARS`).
  Inside a request bound by :func:`bind_request_id` with a ``describe`` (the security-headers
  layer binds one), :class:`Auditor` fills in the user agent and, for events that name none,
  the client address; both are read once per request, on its first event.
* Text (detail values, ``request_id``, ``user_agent``) is cut to a bound and every
  non-printable character (CR, LF, other controls, Unicode line separators, bidi overrides,
  lone surrogates) is escaped, as is the backslash, so one event is always one line and no
  value can forge another.

Danger: a value under an innocent key can still be a secret. Only pass what an operator may
read.

:class:`Auditor` builds events with an injected clock and a hasher and hands them to an
:class:`AuditSink`. :class:`LoggingAuditSink` writes each as one compact JSON line through
:mod:`logging`.

**Floods are aggregated** (:class:`AuditAggregation`, on by default). For the noisy event
names (rate-limit refusals, CSRF and CORS refusals, failed logins ...) the first occurrence of
each key (name, outcome, hashed identifiers and details) is written at once; the repeats in
the following ``interval`` seconds are only counted, and one summary event (the first event's
fields plus ``aggregated_count``, ``aggregated_since`` and ``aggregated_seconds``) is written
when the interval is over: at the next event of any name (no timer thread) or at
:meth:`Auditor.flush`. A flood from one address therefore writes two lines per interval,
however many requests it sends. The table of keys is bounded (``max_keys``): once it is full,
events of a new key are counted under one overflow entry per name and outcome (its first event
written at once, its summary marked ``aggregated_overflow``), so traffic from ever new
addresses cannot grow it. Names in :data:`SIGNIFICANT_EVENTS` (logins, logouts, lockouts,
token and account changes) are never aggregated: each is written as it happens.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import re
import secrets
from collections import OrderedDict
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from threading import Lock
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias, TypeVar, runtime_checkable

from bastion.core import _check
from bastion.core.keys import KeyRing, validate_purpose
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey

__all__ = [
    "AGGREGATED_EVENTS",
    "DEFAULT_LEVELS",
    "MAX_DETAILS",
    "MAX_TEXT_CHARS",
    "MAX_USER_AGENT_CHARS",
    "SAFE_DETAIL_KEYS",
    "SIGNIFICANT_EVENTS",
    "AuditAggregation",
    "AuditEvent",
    "AuditSink",
    "Auditor",
    "DetailValue",
    "EventName",
    "HashedIdentifier",
    "IdentifierHasher",
    "Level",
    "LoggingAuditSink",
    "Outcome",
    "bind_request_id",
    "clean_text",
    "current_client",
    "current_request_id",
    "default_level",
    "redact_credentials",
]

DetailValue: TypeAlias = str | int | float | bool | None

MAX_TEXT_CHARS = 256
"""Longest text kept from a detail value or request id, in characters after escaping."""

MAX_USER_AGENT_CHARS = 256
"""Longest user agent kept, in characters after escaping (real ones are under 200)."""

MAX_DETAILS = 32
"""Most detail entries in one event. Events are records, not dumps."""

_REQUEST_ID: ContextVar[list[Any] | None] = ContextVar("bastion_request_id", default=None)
"""The request being handled, per asyncio task and per thread (a ContextVar is context-local,
not shared state): ``[request id, describe, source, described]``. The id is drawn on first use
so a request that emits no event draws no random id; ``describe(source)`` gives the request's
``(user agent, client address)`` and is called once, on the first event, so a request that
emits nothing pays nothing for them."""
_REQUEST_ID_BYTES = 8

Describe: TypeAlias = "Callable[[Any], tuple[str | None, str | None]]"
"""``describe(source) -> (user_agent, client_address)``: how a layer reads the two from its
request (an ASGI scope, a WSGI environ)."""


def bind_request_id(
    request_id: str | None = None,
    *,
    describe: Describe | None = None,
    source: object = None,
) -> Token[list[Any] | None]:
    """Make ``request_id`` (``None``: a random one, drawn on first use) the id of every audit
    event :class:`Auditor` builds in this context until ``token.var.reset(token)``.

    With ``describe``, events that name no client address get the one ``describe(source)``
    gives, and every event gets its user agent (see :func:`current_client`).
    SecurityHeadersMiddleware binds all three per request; an app without it can bind its
    own."""
    return _REQUEST_ID.set([request_id, describe, source, None])


def current_request_id() -> str | None:
    """The id bound by :func:`bind_request_id` (drawn now if it was left to draw), or
    ``None`` outside a request."""
    holder = _REQUEST_ID.get()
    return None if holder is None else _request_id_of(holder)


def current_client() -> tuple[str | None, str | None]:
    """``(user agent, client address)`` of the request bound by :func:`bind_request_id`,
    ``(None, None)`` outside a request or when the binding layer gave no ``describe``. A
    ``describe`` that fails gives ``(None, None)`` too: an event is never lost to it."""
    holder = _REQUEST_ID.get()
    if holder is None or holder[1] is None:
        return None, None
    return _client_of(holder)


def _request_id_of(holder: list[Any]) -> str:
    if holder[0] is None:
        holder[0] = secrets.token_hex(_REQUEST_ID_BYTES)
    return holder[0]  # type: ignore[no-any-return]


def _client_of(holder: list[Any]) -> tuple[str | None, str | None]:
    """The bound ``describe``'s answer, asked once per request (``holder[1]`` is set)."""
    described = holder[3]
    if described is None:
        try:
            described = holder[1](holder[2])
        except Exception:  # noqa: BLE001 (an odd request must not cost the event)
            described = (None, None)
        holder[3] = described
    return described  # type: ignore[no-any-return]


_TRUNCATED = "...[truncated]"
_NAME = re.compile(r"[a-z]+(?:_[a-z0-9]+)*", re.ASCII)
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
_HEX_DIGEST = re.compile(r"[0-9a-f]{32}", re.ASCII)
_MAX_NAME_CHARS = 64
_INT_BOUND = 2**63  # larger ints are stringified by size, never by value


class EventName(enum.StrEnum):
    """The OWASP Logging Vocabulary events that a web security layer emits or an app reports.

    Left out: upload, privilege (file permission) and monitor events, and the sensitive-data
    events other than ``sensitive_read`` (a user reading data, as in the guide's
    ``DATA_EXPORT``), which belong to other layers. ``malicious_csrf`` is bastion's addition
    in the same style (the vocabulary has ``malicious_cors`` but no CSRF event), as is
    ``authn_login_suspicious`` (a pattern of logins the login monitor flagged; the guide's
    ``SUSPICIOUS_ACTIVITY``).
    """

    AUTHN_LOGIN_SUCCESS = "authn_login_success"
    AUTHN_LOGIN_SUCCESSAFTERFAIL = "authn_login_successafterfail"
    AUTHN_LOGIN_FAIL = "authn_login_fail"
    AUTHN_LOGIN_FAIL_MAX = "authn_login_fail_max"
    AUTHN_LOGIN_LOCK = "authn_login_lock"
    AUTHN_PASSWORD_CHANGE = "authn_password_change"  # noqa: S105 (an event name, not a password)
    AUTHN_PASSWORD_CHANGE_FAIL = "authn_password_change_fail"  # noqa: S105 (an event name, not a password)
    AUTHN_IMPOSSIBLE_TRAVEL = "authn_impossible_travel"
    AUTHN_LOGIN_SUSPICIOUS = "authn_login_suspicious"
    AUTHN_TOKEN_CREATED = "authn_token_created"  # noqa: S105 (an event name, not a password)
    AUTHN_TOKEN_REVOKED = "authn_token_revoked"  # noqa: S105 (an event name, not a password)
    AUTHN_TOKEN_REUSE = "authn_token_reuse"  # noqa: S105 (an event name, not a password)
    AUTHN_TOKEN_DELETE = "authn_token_delete"  # noqa: S105 (an event name, not a password)
    AUTHZ_FAIL = "authz_fail"
    AUTHZ_CHANGE = "authz_change"
    AUTHZ_ADMIN = "authz_admin"
    CRYPT_DECRYPT_FAIL = "crypt_decrypt_fail"
    CRYPT_ENCRYPT_FAIL = "crypt_encrypt_fail"
    EXCESS_RATE_LIMIT_EXCEEDED = "excess_rate_limit_exceeded"
    INPUT_VALIDATION_FAIL = "input_validation_fail"
    INPUT_VALIDATION_DISCRETE_FAIL = "input_validation_discrete_fail"
    MALICIOUS_EXCESS_404 = "malicious_excess_404"
    MALICIOUS_EXTRANEOUS = "malicious_extraneous"
    MALICIOUS_ATTACK_TOOL = "malicious_attack_tool"
    MALICIOUS_CORS = "malicious_cors"
    MALICIOUS_CSRF = "malicious_csrf"
    MALICIOUS_DIRECT_REFERENCE = "malicious_direct_reference"
    SENSITIVE_READ = "sensitive_read"
    SEQUENCE_FAIL = "sequence_fail"
    SESSION_CREATED = "session_created"
    SESSION_RENEWED = "session_renewed"
    SESSION_EXPIRED = "session_expired"
    SESSION_USE_AFTER_EXPIRE = "session_use_after_expire"
    SYS_STARTUP = "sys_startup"
    SYS_SHUTDOWN = "sys_shutdown"
    SYS_RESTART = "sys_restart"
    SYS_CRASH = "sys_crash"
    USER_CREATED = "user_created"
    USER_UPDATED = "user_updated"
    USER_ARCHIVED = "user_archived"
    USER_DELETED = "user_deleted"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    """The action was attempted and did not succeed (wrong password, expired token)."""
    BLOCKED = "blocked"
    """bastion refused the request before the action (CSRF, rate limit, authorization)."""


class Level(enum.StrEnum):
    """The vocabulary's three levels, mapped to logging's INFO, WARNING and CRITICAL."""

    INFO = "info"
    WARN = "warn"
    CRITICAL = "critical"


_I, _W, _C = Level.INFO, Level.WARN, Level.CRITICAL
DEFAULT_LEVELS: Mapping[EventName, Level] = MappingProxyType(
    {
        EventName.AUTHN_LOGIN_SUCCESS: _I,
        EventName.AUTHN_LOGIN_SUCCESSAFTERFAIL: _I,
        EventName.AUTHN_LOGIN_FAIL: _W,
        EventName.AUTHN_LOGIN_FAIL_MAX: _W,
        EventName.AUTHN_LOGIN_LOCK: _W,
        EventName.AUTHN_PASSWORD_CHANGE: _I,
        EventName.AUTHN_PASSWORD_CHANGE_FAIL: _C,
        EventName.AUTHN_IMPOSSIBLE_TRAVEL: _C,
        EventName.AUTHN_LOGIN_SUSPICIOUS: _C,
        EventName.AUTHN_TOKEN_CREATED: _I,
        EventName.AUTHN_TOKEN_REVOKED: _I,
        EventName.AUTHN_TOKEN_REUSE: _C,
        EventName.AUTHN_TOKEN_DELETE: _W,
        EventName.AUTHZ_FAIL: _C,
        EventName.AUTHZ_CHANGE: _W,
        EventName.AUTHZ_ADMIN: _W,
        EventName.CRYPT_DECRYPT_FAIL: _W,
        EventName.CRYPT_ENCRYPT_FAIL: _W,
        EventName.EXCESS_RATE_LIMIT_EXCEEDED: _W,
        EventName.INPUT_VALIDATION_FAIL: _W,
        EventName.INPUT_VALIDATION_DISCRETE_FAIL: _W,
        EventName.MALICIOUS_EXCESS_404: _W,
        EventName.MALICIOUS_EXTRANEOUS: _C,
        EventName.MALICIOUS_ATTACK_TOOL: _C,
        EventName.MALICIOUS_CORS: _C,
        # Most CSRF refusals are stale forms or misconfigured proxies, not attacks.
        EventName.MALICIOUS_CSRF: _W,
        EventName.MALICIOUS_DIRECT_REFERENCE: _C,
        EventName.SENSITIVE_READ: _W,
        EventName.SEQUENCE_FAIL: _C,
        EventName.SESSION_CREATED: _I,
        EventName.SESSION_RENEWED: _I,
        EventName.SESSION_EXPIRED: _I,
        EventName.SESSION_USE_AFTER_EXPIRE: _C,
        EventName.SYS_STARTUP: _W,
        EventName.SYS_SHUTDOWN: _W,
        EventName.SYS_RESTART: _W,
        EventName.SYS_CRASH: _W,
        EventName.USER_CREATED: _W,
        EventName.USER_UPDATED: _W,
        EventName.USER_ARCHIVED: _W,
        EventName.USER_DELETED: _W,
    }
)
"""The level of each vocabulary event, as the OWASP cheat sheet gives it. Custom names default
to ``info`` on success and ``warn`` otherwise."""

SIGNIFICANT_EVENTS: frozenset[str] = frozenset(
    {
        EventName.AUTHN_LOGIN_SUCCESS,
        EventName.AUTHN_LOGIN_SUCCESSAFTERFAIL,
        EventName.AUTHN_LOGIN_FAIL_MAX,
        EventName.AUTHN_LOGIN_LOCK,
        EventName.AUTHN_PASSWORD_CHANGE,
        EventName.AUTHN_PASSWORD_CHANGE_FAIL,
        EventName.AUTHN_IMPOSSIBLE_TRAVEL,
        EventName.AUTHN_LOGIN_SUSPICIOUS,
        EventName.AUTHN_TOKEN_CREATED,
        EventName.AUTHN_TOKEN_REVOKED,
        EventName.AUTHN_TOKEN_REUSE,
        EventName.AUTHN_TOKEN_DELETE,
        EventName.AUTHZ_CHANGE,
        EventName.AUTHZ_ADMIN,
        EventName.SESSION_CREATED,
        EventName.SESSION_RENEWED,
        EventName.SYS_STARTUP,
        EventName.SYS_SHUTDOWN,
        EventName.SYS_RESTART,
        EventName.SYS_CRASH,
        EventName.USER_CREATED,
        EventName.USER_UPDATED,
        EventName.USER_ARCHIVED,
        EventName.USER_DELETED,
        "session_destroyed",  # a logout, or a revocation
    }
)
"""Events that are never aggregated: each is one line, written when it happens."""

AGGREGATED_EVENTS: frozenset[str] = frozenset(
    {
        EventName.AUTHN_LOGIN_FAIL,
        EventName.AUTHZ_FAIL,
        EventName.EXCESS_RATE_LIMIT_EXCEEDED,
        EventName.INPUT_VALIDATION_FAIL,
        EventName.INPUT_VALIDATION_DISCRETE_FAIL,
        EventName.MALICIOUS_EXCESS_404,
        EventName.MALICIOUS_CORS,
        EventName.MALICIOUS_CSRF,
        EventName.SESSION_USE_AFTER_EXPIRE,
        "session_store_unavailable",
    }
)
"""The events :class:`AuditAggregation` aggregates by default: those one client can repeat
at request rate. CSP reports (``csp_violation``) are left out: the report receiver has its own
budget, which refuses a flood before it is audited."""

_AGGREGATE_DETAILS: Final = ("aggregated_count", "aggregated_seconds", "aggregated_since")
_MAX_AGGREGATION_INTERVAL: Final = 86_400.0
_MAX_AGGREGATION_KEYS: Final = 1_000_000


_LOGGING_LEVELS: Mapping[Level, int] = MappingProxyType(
    {Level.INFO: logging.INFO, Level.WARN: logging.WARNING, Level.CRITICAL: logging.CRITICAL}
)

# Words that make a detail key look like it names a secret. Whole words of the key:
_SECRET_WORDS = frozenset(
    {
        "auth",
        "code",
        "csrf",
        "hotp",
        "key",
        "keys",
        "nonce",
        "otp",
        "pass",
        "pin",
        "pwd",
        "salt",
        "sid",
        "sig",
        "signature",
        "totp",
        "xsrf",
    }
)
# ... and anywhere in the key once underscores are removed (catches api_key, sessionid, ...):
_SECRET_STEMS = (
    "apikey",
    "authoriz",
    "bearer",
    "cookie",
    "credential",
    "jwt",
    "passphrase",
    "passw",
    "passwd",
    "privatekey",
    "secret",
    "sessionid",
    "token",
)

SAFE_DETAIL_KEYS = frozenset(
    {"country_code", "error_code", "key_id", "reason_code", "status_code", "token_id", "token_type"}
)
"""Detail keys allowed although they contain a secret-looking word: identifiers and codes that
grant nothing (an HTTP status, a JOSE ``kid``, a token's ``jti``)."""


def _looks_secret(key: str) -> bool:
    if key in SAFE_DETAIL_KEYS:
        return False
    if not _SECRET_WORDS.isdisjoint(key.split("_")):
        return True
    joined = key.replace("_", "")
    return any(stem in joined for stem in _SECRET_STEMS)


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def clean_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` made safe for a log line: non-printable characters and ``\\`` escaped (``\\n``
    becomes the four characters ``\\x0a``), then cut to ``limit`` characters plus a marker.

    Non-printable means :meth:`str.isprintable` is false: controls (CR, LF, ESC, NEL), format
    characters (bidi overrides, zero-width), line and paragraph separators, surrogates, private
    use, unassigned code points, and spaces other than U+0020.
    """
    if len(text) <= limit and text.isprintable() and "\\" not in text:
        return text
    pieces: list[str] = []
    used = 0
    for char in text:
        piece = char if char.isprintable() and char != "\\" else _escape(char)
        if used + len(piece) > limit:
            pieces.append(_TRUNCATED)
            break
        pieces.append(piece)
        used += len(piece)
    return "".join(pieces)


_CREDENTIAL = re.compile(
    r"\b(bst|brt|bot)_[A-Za-z0-9_-]{16,}(?:\.[A-Za-z0-9_-]+)?"  # bastion's opaque tokens
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*"  # a compact JWS or JWT
)


def redact_credentials(text: str) -> str:
    """``text`` with every credential-shaped part replaced: bastion's API keys (``bst_``),
    refresh tokens (``brt_``) and one-time tokens (``bot_``), and anything shaped like a JWT.
    Every string detail of an event goes through it, so a path such as
    ``/reset-password/bot_...`` in a refusal's event never carries the token."""
    if "_" not in text and "eyJ" not in text:
        return text
    return _CREDENTIAL.sub(lambda m: f"{m.group(1)}_[redacted]" if m.group(1) else "[jwt]", text)


def _clean_value(key: str, value: object) -> DetailValue:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -_INT_BOUND < value < _INT_BOUND:
            return value
        return f"<int of {value.bit_length()} bits>"
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clean_text(redact_credentials(value))
    raise ConfigurationError(
        f"audit detail {key!r} must be a str, int, float, bool or None, not "
        f"{type(value).__name__}; pass a scalar (convert it with str() if it is safe to log)",
        setting=f"details.{key}",
    )


def _clean_details(details: Mapping[str, object]) -> Mapping[str, DetailValue]:
    if len(details) > MAX_DETAILS:
        raise ConfigurationError(
            f"an audit event takes at most {MAX_DETAILS} details, got {len(details)}; "
            "keep events small and log the rest elsewhere",
            setting="details",
        )
    cleaned: dict[str, DetailValue] = {}
    for key in sorted(details, key=str):
        if not isinstance(key, str) or len(key) > 64 or _DETAIL_KEY.fullmatch(key) is None:
            raise ConfigurationError(
                f"audit detail key {key!r} must be snake_case ASCII (a-z, 0-9, _), starting "
                "with a letter, at most 64 characters",
                setting="details",
            )
        if _looks_secret(key):
            raise ConfigurationError(
                f"audit detail key {key!r} looks like it names a secret, and secrets are never "
                "logged: leave it out, or record a non-secret fact under a name without "
                "secret-like words (for example 'reason': 'wrong_password')",
                setting=f"details.{key}",
            )
        cleaned[key] = _clean_value(key, details[key])
    return MappingProxyType(cleaned)


def _check_name(name: str) -> EventName | str:
    if isinstance(name, EventName):
        return name
    if not isinstance(name, str):
        raise ConfigurationError(
            f"an audit event name must be an EventName or a str, not {type(name).__name__}",
            setting="name",
        )
    try:
        return EventName(name)
    except ValueError:
        pass  # a custom name: checked below
    if len(name) > _MAX_NAME_CHARS or _NAME.fullmatch(name) is None:
        raise ConfigurationError(
            f"custom audit event name {clean_text(name, 80)!r} must be snake_case: lowercase "
            f"words of a-z and 0-9 joined by '_', starting with a letter, at most "
            f"{_MAX_NAME_CHARS} characters (for example 'authn_mfa_fail')",
            setting="name",
        )
    return name


def default_level(name: EventName | str, outcome: Outcome | str) -> Level:
    """The level of ``name`` in :data:`DEFAULT_LEVELS`; for a custom name, ``info`` on success
    and ``warn`` otherwise."""
    checked = _check_name(name)
    if isinstance(checked, EventName):
        return DEFAULT_LEVELS[checked]
    success = _member(Outcome, outcome, "outcome") is Outcome.SUCCESS
    return Level.INFO if success else Level.WARN


_E = TypeVar("_E", Outcome, Level)


def _member(kind: type[_E], value: str, setting: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in kind)
        raise ConfigurationError(
            f"{setting} must be one of {choices}; got {clean_text(str(value), 80)!r}",
            setting=setting,
        ) from None


@dataclass(frozen=True, slots=True)
class HashedIdentifier:
    """A keyed digest of an identifier (32 lowercase hex characters), made by
    :class:`IdentifierHasher`. The only form in which an :class:`AuditEvent` holds a user,
    client address or session.

    ``previous`` holds the digests of the same identifier under the ring's older keys, newest
    first (empty when the ring has one key): the correlation across a key rotation. It is not
    part of equality, which compares ``digest`` only.
    """

    digest: str
    previous: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        digests = (self.digest, *self.previous) if isinstance(self.previous, tuple) else (None,)
        for digest in digests:
            if not isinstance(digest, str) or _HEX_DIGEST.fullmatch(digest) is None:
                raise ConfigurationError(
                    "a HashedIdentifier holds 32 lowercase hex characters (and a tuple of "
                    "such digests in previous); build it with IdentifierHasher.hash(), never "
                    "from a raw identifier",
                    setting="digest",
                )

    def __str__(self) -> str:
        return self.digest


class IdentifierHasher:
    """Keyed, truncated hashes of identifiers for audit events.

    ``HMAC-SHA256(audit key, kind + NUL + identifier)`` cut to 16 bytes (32 hex characters).
    The audit key is derived from ``keyring`` for ``"audit:" + purpose``, so it is independent of
    every signing key. The same identifier, kind and key give the same digest in every process,
    so events about one user can be correlated; the ``kind`` (``"user"``, ``"client_ip"``,
    ``"session"``) keeps a user named like an IP address apart from that address.

    Digests are made with the ring's current key, so after a rotation the same user gets a new
    digest. The correlation is explicit: while the ring still holds the older keys, each
    :class:`HashedIdentifier` also carries the digests under them (``previous``), which an
    event writes under its ``"previous"`` entry, so a search for the digest a user had before
    the rotation finds the events after it as well. Once the old key leaves the ring the link
    is no longer written; events that carried it keep it. :meth:`candidates` gives the digest
    under every key of the ring, to search logs that span a rotation.
    """

    __slots__ = ("_names",)

    def __init__(self, keyring: KeyRing | SecretKey, *, purpose: str = "identifiers") -> None:
        validate_purpose(purpose)
        self._names = KeyRing.coerce(keyring).lookup("audit:" + purpose)

    def hash(self, identifier: str | int, *, kind: str = "user") -> HashedIdentifier:
        """The digest of ``identifier`` (text, or an integer id) as ``kind``, with its
        digests under the ring's older keys."""
        current, *previous = self._names.names(_message(identifier, kind))
        return HashedIdentifier(current, tuple(previous))

    def candidates(self, identifier: str | int, *, kind: str = "user") -> tuple[str, ...]:
        """The digest under each key of the ring, newest first. For log searches."""
        return self._names.names(_message(identifier, kind))

    def __repr__(self) -> str:
        return f"IdentifierHasher(keys={len(self._names)})"


def _message(identifier: str | int, kind: str) -> bytes:
    if isinstance(identifier, bool) or not isinstance(identifier, str | int):
        raise ConfigurationError(
            f"an audit identifier must be a str or an int, not {type(identifier).__name__}",
            setting=kind,
        )
    if _NAME.fullmatch(kind) is None:
        raise ConfigurationError(
            f"identifier kind {kind!r} must be snake_case (for example 'user')", setting="kind"
        )
    # surrogatepass: hashing never fails on text that cannot be encoded as strict UTF-8.
    text = str(identifier).encode("utf-8", "surrogatepass")
    return kind.encode("ascii") + b"\x00" + text


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEvent:
    """One security event. Validated and normalised on construction, immutable afterwards.

    ``time`` must be timezone-aware and is stored in UTC. ``outcome`` and ``level`` accept their
    enums or the enums' values; :func:`default_level` gives the usual level. ``request_id`` and
    string detail values are cleaned like all text (see the module docstring). Build events
    through :class:`Auditor`, which fills in the time, the level and the hashes.
    """

    name: EventName | str
    time: datetime
    outcome: Outcome
    level: Level
    request_id: str | None = None
    user: HashedIdentifier | None = None
    client_ip: HashedIdentifier | None = None
    session: HashedIdentifier | None = None
    user_agent: str | None = None
    details: Mapping[str, DetailValue] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def __post_init__(self) -> None:
        name = _check_name(self.name)
        object.__setattr__(self, "name", name)
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise ConfigurationError(
                "an audit event's time must be a timezone-aware datetime "
                "(for example datetime.now(UTC)); build events with Auditor",
                setting="time",
            )
        object.__setattr__(self, "time", self.time.astimezone(UTC))
        object.__setattr__(self, "outcome", _member(Outcome, self.outcome, "outcome"))
        object.__setattr__(self, "level", _member(Level, self.level, "level"))
        if self.request_id is not None:
            if not isinstance(self.request_id, str):
                raise ConfigurationError(
                    f"request_id must be a str or None, not {type(self.request_id).__name__}",
                    setting="request_id",
                )
            object.__setattr__(self, "request_id", clean_text(self.request_id, 128))
        if self.user_agent is not None:
            if not isinstance(self.user_agent, str):
                raise ConfigurationError(
                    f"user_agent must be a str or None, not {type(self.user_agent).__name__}",
                    setting="user_agent",
                )
            agent = clean_text(redact_credentials(self.user_agent), MAX_USER_AGENT_CHARS)
            object.__setattr__(self, "user_agent", agent)
        for setting in ("user", "client_ip", "session"):
            value = getattr(self, setting)
            if value is not None and not isinstance(value, HashedIdentifier):
                raise ConfigurationError(
                    f"{setting} must be a HashedIdentifier (from IdentifierHasher.hash) or "
                    f"None, not {type(value).__name__}: raw identifiers are never logged",
                    setting=setting,
                )
        object.__setattr__(self, "details", _clean_details(self.details))

    def to_dict(self) -> dict[str, Any]:
        """The event as plain JSON-ready data, keys in a fixed order, absent fields as None."""
        return {
            "time": self.time.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": str(self.name),
            "level": str(self.level),
            "outcome": str(self.outcome),
            "request_id": self.request_id,
            "user": None if self.user is None else self.user.digest,
            "client_ip": None if self.client_ip is None else self.client_ip.digest,
            "session": None if self.session is None else self.session.digest,
            "user_agent": self.user_agent,
            "details": dict(self.details),
            **self._previous(),
        }

    def _previous(self) -> dict[str, dict[str, list[str]]]:
        # Present only during a key rotation (see IdentifierHasher), so the usual line is
        # unchanged.
        found = {
            setting: list(value.previous)
            for setting, value in (
                ("user", self.user),
                ("client_ip", self.client_ip),
                ("session", self.session),
            )
            if value is not None and value.previous
        }
        return {"previous": found} if found else {}

    def to_json(self) -> str:
        """One compact, pure-ASCII JSON line (no newline at the end)."""
        return _dumps(self.to_dict())


def _dumps(data: Mapping[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@runtime_checkable
class AuditSink(Protocol):
    """Where audit events go. ``emit`` must not block for long: it runs on the request path."""

    def emit(self, event: AuditEvent) -> None: ...


class LoggingAuditSink:
    """Writes each event as one JSON line on a logger, at the event's level.

    The record also carries the event as ``record.audit_event`` (its :meth:`AuditEvent.to_dict`)
    for structured handlers.
    """

    __slots__ = ("_logger",)

    def __init__(self, logger_name: str = "bastion.audit") -> None:
        self._logger = logging.getLogger(logger_name)

    def emit(self, event: AuditEvent) -> None:
        level = _LOGGING_LEVELS[Level(event.level)]
        if self._logger.isEnabledFor(level):
            data = event.to_dict()
            self._logger.log(level, "%s", _dumps(data), extra={"audit_event": data})

    def __repr__(self) -> str:
        return f"LoggingAuditSink(logger_name={self._logger.name!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditAggregation:
    """How :class:`Auditor` aggregates repeated events (see the module docstring).

    ``interval`` is the length of one window in seconds; ``max_keys`` bounds the table of keys
    being counted (memory: one event per key); ``events`` are the names aggregated (default
    :data:`AGGREGATED_EVENTS`; a name in :data:`SIGNIFICANT_EVENTS` is refused).
    """

    interval: float = 60.0
    max_keys: int = 4096
    events: frozenset[str] = AGGREGATED_EVENTS

    def __post_init__(self) -> None:
        interval = _check.seconds(
            "interval", self.interval, high=_MAX_AGGREGATION_INTERVAL, hint="one day"
        )
        object.__setattr__(self, "interval", interval)
        _check.whole_number("max_keys", self.max_keys, low=1, high=_MAX_AGGREGATION_KEYS)
        names: Iterable[object] = self.events
        if isinstance(names, str) or not hasattr(names, "__iter__"):
            raise ConfigurationError(
                "events must be a collection of event names (for example "
                "[EventName.EXCESS_RATE_LIMIT_EXCEEDED]), not a single name",
                setting="events",
            )
        checked = frozenset(_check_name(name) for name in names)  # type: ignore[arg-type]
        significant = sorted(str(name) for name in checked & SIGNIFICANT_EVENTS)
        if significant:
            raise ConfigurationError(
                f"events {', '.join(significant)} are never aggregated (each one matters); "
                "leave them out of AuditAggregation(events=...)",
                setting="events",
            )
        object.__setattr__(self, "events", checked)


class _Window:
    """One key being counted: its first event and the repeats since."""

    __slots__ = ("first", "overflow", "repeats", "start")

    def __init__(self, first: AuditEvent, start: float, *, overflow: bool) -> None:
        self.first = first
        self.start = start
        self.repeats = 0
        self.overflow = overflow


_Key: TypeAlias = tuple[object, ...]


class _Aggregator:
    """The bounded table of :class:`_Window` in the order they opened (so the oldest closes
    first and a sweep costs only what it closes). Thread-safe; never calls the sink itself."""

    __slots__ = ("_lock", "_overflow", "_settings", "_windows")

    def __init__(self, settings: AuditAggregation) -> None:
        self._settings = settings
        self._windows: OrderedDict[_Key, _Window] = OrderedDict()
        self._overflow = 0
        self._lock = Lock()

    def __len__(self) -> int:
        return len(self._windows)

    def offer(self, event: AuditEvent, now: float) -> list[AuditEvent]:
        """The events to write now: summaries of the windows that have closed, then
        ``event`` itself unless it is a repeat inside an open window."""
        with self._lock:
            out = self._sweep(now)
            if event.name not in self._settings.events:
                out.append(event)
                return out
            key = _key_of(event)
            window = self._windows.get(key)
            if window is None and len(self._windows) - self._overflow >= self._settings.max_keys:
                key = ("overflow", str(event.name), str(event.outcome))
                window = self._windows.get(key)
                if window is None:
                    self._windows[key] = _Window(event, now, overflow=True)
                    self._overflow += 1
                    out.append(event)
                    return out
            if window is None:
                self._windows[key] = _Window(event, now, overflow=False)
                out.append(event)
            else:
                window.repeats += 1
            return out

    def flush(self, now: float) -> list[AuditEvent]:
        """The summaries of every open window, which are closed."""
        with self._lock:
            return self._sweep(now, everything=True)

    def _sweep(self, now: float, *, everything: bool = False) -> list[AuditEvent]:
        interval = self._settings.interval
        out: list[AuditEvent] = []
        while self._windows:
            key, window = next(iter(self._windows.items()))
            end = window.start + interval
            if end > now and not everything:
                break
            del self._windows[key]
            if window.overflow:
                self._overflow -= 1
            if window.repeats:
                out.append(_summary(window, min(end, now), interval))
        return out


def _key_of(event: AuditEvent) -> _Key:
    return (
        str(event.name),
        str(event.outcome),
        None if event.user is None else event.user.digest,
        None if event.client_ip is None else event.client_ip.digest,
        None if event.session is None else event.session.digest,
        tuple(event.details.items()),
    )


def _summary(window: _Window, at: float, interval: float) -> AuditEvent:
    first = window.first
    kept = dict(list(first.details.items())[: MAX_DETAILS - len(_AGGREGATE_DETAILS) - 1])
    kept["aggregated_count"] = window.repeats
    kept["aggregated_seconds"] = interval
    since = datetime.fromtimestamp(window.start, tz=UTC)
    kept["aggregated_since"] = since.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if window.overflow:
        # The repeats came from many keys: the first event's identifiers stand for none.
        kept["aggregated_overflow"] = True
    return AuditEvent(
        name=first.name,
        time=datetime.fromtimestamp(at, tz=UTC),
        outcome=first.outcome,
        level=first.level,
        user=None if window.overflow else first.user,
        client_ip=None if window.overflow else first.client_ip,
        session=None if window.overflow else first.session,
        user_agent=None if window.overflow else first.user_agent,
        details=kept,
    )


def _hashed(
    hasher: IdentifierHasher, value: str | int | HashedIdentifier | None, kind: str
) -> HashedIdentifier | None:
    if value is None or isinstance(value, HashedIdentifier):
        return value
    return hasher.hash(value, kind=kind)


class Auditor:
    """Builds audit events (time from ``clock``, identifiers through ``hasher``) and sends them
    to ``sink``. ``level`` defaults to :func:`default_level`. For example::

        auditor.emit(EventName.SESSION_CREATED, outcome=Outcome.SUCCESS, user="alice")

    Repeated events are aggregated as ``aggregation`` says (see the module docstring);
    ``aggregation=None`` writes every event. Call :meth:`flush` at shutdown so that the last
    summaries are written.

    ``observers`` see every event as it is built, before aggregation, so that a detector
    (:class:`bastion.core.login_monitor.LoginMonitor`) counts each failed login even when the
    sink only gets a summary. An observer may emit through this auditor (its own events are
    observed too, and must be ignored by it).
    """

    __slots__ = ("_aggregator", "_clock", "_hasher", "_observers", "_sink")

    def __init__(
        self,
        hasher: IdentifierHasher,
        clock: Clock,
        sink: AuditSink,
        *,
        aggregation: AuditAggregation | None = AuditAggregation(),
        observers: Iterable[AuditSink] = (),
    ) -> None:
        if aggregation is not None and not isinstance(aggregation, AuditAggregation):
            raise ConfigurationError(
                "aggregation must be an AuditAggregation(...) or None (write every event)",
                setting="aggregation",
            )
        self._hasher = hasher
        self._clock = clock
        self._sink = sink
        self._aggregator = None if aggregation is None else _Aggregator(aggregation)
        self._observers = tuple(observers)

    @property
    def tracked(self) -> int:
        """How many keys are being counted now (at most ``max_keys`` plus one overflow entry
        per aggregated name and outcome)."""
        return 0 if self._aggregator is None else len(self._aggregator)

    def add_observer(self, observer: AuditSink) -> None:
        """Show every later event to ``observer`` too (see the class docstring)."""
        self._observers = (*self._observers, observer)

    def flush(self) -> None:
        """Write the summary of every window still counting, and close them."""
        if self._aggregator is not None:
            for summary in self._aggregator.flush(self._clock.now()):
                self._sink.emit(summary)

    @classmethod
    def default(cls, keyring: KeyRing | SecretKey | None, clock: Clock) -> Auditor:
        """What a middleware uses when the app passes no auditor: identifiers hashed under
        ``keyring`` and JSON lines on the ``bastion.audit`` logger. Without a key ring a
        throwaway key is drawn, so hashes differ from process to process: pass a ring (or an
        auditor) to correlate events across workers and restarts."""
        ring = keyring if keyring is not None else KeyRing.generate()
        return cls(IdentifierHasher(ring), clock, LoggingAuditSink())

    def event(
        self,
        name: EventName | str,
        *,
        outcome: Outcome,
        level: Level | None = None,
        request_id: str | None = None,
        user: str | int | HashedIdentifier | None = None,
        client_ip: str | HashedIdentifier | None = None,
        session: str | None = None,
        user_agent: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEvent:
        """Build an event without sending it. Identifiers are given raw and hashed here (or
        as the :class:`HashedIdentifier` an earlier event carried, kept as they are);
        ``request_id`` defaults to the request's (:func:`current_request_id`), ``user_agent``
        and ``client_ip`` to the request's (:func:`current_client`)."""
        hasher = self._hasher
        holder = _REQUEST_ID.get()
        if holder is not None:
            if request_id is None:
                request_id = _request_id_of(holder)
            if holder[1] is not None and (user_agent is None or client_ip is None):
                agent, address = _client_of(holder)
                user_agent = agent if user_agent is None else user_agent
                client_ip = address if client_ip is None else client_ip
        return AuditEvent(
            name=name,
            time=datetime.fromtimestamp(self._clock.now(), tz=UTC),
            outcome=outcome,
            level=default_level(name, outcome) if level is None else level,
            request_id=request_id,
            user=_hashed(hasher, user, "user"),
            client_ip=_hashed(hasher, client_ip, "client_ip"),
            session=None if session is None else hasher.hash(session, kind="session"),
            user_agent=user_agent,
            details=MappingProxyType({}) if details is None else details,
        )

    def emit(
        self,
        name: EventName | str,
        *,
        outcome: Outcome,
        level: Level | None = None,
        request_id: str | None = None,
        user: str | int | HashedIdentifier | None = None,
        client_ip: str | HashedIdentifier | None = None,
        session: str | None = None,
        user_agent: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEvent:
        """Build an event, send it to the sink (or count it, when it repeats an event of
        its key in the current window) and return it."""
        event = self.event(
            name,
            outcome=outcome,
            level=level,
            request_id=request_id,
            user=user,
            client_ip=client_ip,
            session=session,
            user_agent=user_agent,
            details=details,
        )
        for observer in self._observers:
            observer.emit(event)
        if self._aggregator is None:
            self._sink.emit(event)
            return event
        for written in self._aggregator.offer(event, event.time.timestamp()):
            self._sink.emit(written)
        return event

    def __repr__(self) -> str:
        return f"Auditor(hasher={self._hasher!r}, clock={self._clock!r}, sink={self._sink!r})"
