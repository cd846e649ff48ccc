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
* Text (detail values, ``request_id``) is cut to a bound and every non-printable character
  (CR, LF, other controls, Unicode line separators, bidi overrides, lone surrogates) is escaped,
  as is the backslash, so one event is always one line and no value can forge another.

Danger: a value under an innocent key can still be a secret. Only pass what an operator may
read.

:class:`Auditor` builds events with an injected clock and a hasher and hands them to an
:class:`AuditSink`. :class:`LoggingAuditSink` writes each as one compact JSON line through
:mod:`logging`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, runtime_checkable

from bastion.core.keys import KeyRing, validate_purpose
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from bastion.core.clock import Clock
    from bastion.core.keys import SecretKey

__all__ = [
    "DEFAULT_LEVELS",
    "MAX_DETAILS",
    "MAX_TEXT_CHARS",
    "SAFE_DETAIL_KEYS",
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
    "current_request_id",
    "default_level",
]

DetailValue: TypeAlias = str | int | float | bool | None

MAX_TEXT_CHARS = 256
"""Longest text kept from a detail value or request id, in characters after escaping."""

MAX_DETAILS = 32
"""Most detail entries in one event. Events are records, not dumps."""

_REQUEST_ID: ContextVar[list[str | None] | None] = ContextVar("bastion_request_id", default=None)
"""The id of the request being handled, per asyncio task and per thread (a ContextVar is
context-local, not shared state): a one-item list, filled on first use so a request that
emits no event draws no random id."""
_REQUEST_ID_BYTES = 8


def bind_request_id(request_id: str | None = None) -> Token[list[str | None] | None]:
    """Make ``request_id`` (``None``: a random one, drawn on first use) the id of every audit
    event :class:`Auditor` builds in this context until ``token.var.reset(token)``.
    SecurityHeadersMiddleware binds one per request; an app without it can bind its own."""
    return _REQUEST_ID.set([request_id])


def current_request_id() -> str | None:
    """The id bound by :func:`bind_request_id` (drawn now if it was left to draw), or
    ``None`` outside a request."""
    holder = _REQUEST_ID.get()
    if holder is None:
        return None
    if holder[0] is None:
        holder[0] = secrets.token_hex(_REQUEST_ID_BYTES)
    return holder[0]


_TRUNCATED = "...[truncated]"
_NAME = re.compile(r"[a-z]+(?:_[a-z0-9]+)*", re.ASCII)
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]*", re.ASCII)
_HEX_DIGEST = re.compile(r"[0-9a-f]{32}", re.ASCII)
_MAX_NAME_CHARS = 64
_INT_BOUND = 2**63  # larger ints are stringified by size, never by value


class EventName(enum.StrEnum):
    """The OWASP Logging Vocabulary events that a web security layer emits or an app reports.

    Left out: upload, privilege (file permission), sensitive-data and monitor events, which
    belong to other layers. ``malicious_csrf`` is bastion's addition in the same style (the
    vocabulary has ``malicious_cors`` but no CSRF event).
    """

    AUTHN_LOGIN_SUCCESS = "authn_login_success"
    AUTHN_LOGIN_SUCCESSAFTERFAIL = "authn_login_successafterfail"
    AUTHN_LOGIN_FAIL = "authn_login_fail"
    AUTHN_LOGIN_FAIL_MAX = "authn_login_fail_max"
    AUTHN_LOGIN_LOCK = "authn_login_lock"
    AUTHN_PASSWORD_CHANGE = "authn_password_change"  # noqa: S105 (an event name, not a password)
    AUTHN_PASSWORD_CHANGE_FAIL = "authn_password_change_fail"  # noqa: S105 (an event name, not a password)
    AUTHN_IMPOSSIBLE_TRAVEL = "authn_impossible_travel"
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
        return clean_text(value)
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
    client address or session."""

    digest: str

    def __post_init__(self) -> None:
        if not isinstance(self.digest, str) or _HEX_DIGEST.fullmatch(self.digest) is None:
            raise ConfigurationError(
                "a HashedIdentifier holds 32 lowercase hex characters; build it with "
                "IdentifierHasher.hash(), never from a raw identifier",
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

    Digests are made with the ring's current key; after a rotation the same user gets a new
    digest. :meth:`candidates` gives the digest under every key of the ring, to search logs that
    span a rotation.
    """

    __slots__ = ("_all", "_current")

    def __init__(self, keyring: KeyRing | SecretKey, *, purpose: str = "identifiers") -> None:
        validate_purpose(purpose)
        derived = KeyRing.coerce(keyring).derive("audit:" + purpose)
        self._all = tuple(key.reveal() for key in derived)
        self._current = self._all[0]

    def hash(self, identifier: str | int, *, kind: str = "user") -> HashedIdentifier:
        """The digest of ``identifier`` (text, or an integer id) as ``kind``."""
        return HashedIdentifier(_digest(self._current, identifier, kind))

    def candidates(self, identifier: str | int, *, kind: str = "user") -> tuple[str, ...]:
        """The digest under each key of the ring, newest first. For log searches."""
        return tuple(_digest(key, identifier, kind) for key in self._all)

    def __repr__(self) -> str:
        return f"IdentifierHasher(keys={len(self._all)})"


def _digest(key: bytes, identifier: str | int, kind: str) -> str:
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
    message = kind.encode("ascii") + b"\x00" + text
    return hmac.digest(key, message, hashlib.sha256)[:16].hex()


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
            "details": dict(self.details),
        }

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


class Auditor:
    """Builds audit events (time from ``clock``, identifiers through ``hasher``) and sends them
    to ``sink``. ``level`` defaults to :func:`default_level`. For example::

        auditor.emit(EventName.SESSION_CREATED, outcome=Outcome.SUCCESS, user="alice")
    """

    __slots__ = ("_clock", "_hasher", "_sink")

    def __init__(self, hasher: IdentifierHasher, clock: Clock, sink: AuditSink) -> None:
        self._hasher = hasher
        self._clock = clock
        self._sink = sink

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
        user: str | int | None = None,
        client_ip: str | None = None,
        session: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEvent:
        """Build an event without sending it. Identifiers are given raw and hashed here;
        ``request_id`` defaults to the request's (:func:`current_request_id`)."""
        hasher = self._hasher
        if request_id is None:
            request_id = current_request_id()
        return AuditEvent(
            name=name,
            time=datetime.fromtimestamp(self._clock.now(), tz=UTC),
            outcome=outcome,
            level=default_level(name, outcome) if level is None else level,
            request_id=request_id,
            user=None if user is None else hasher.hash(user, kind="user"),
            client_ip=None if client_ip is None else hasher.hash(client_ip, kind="client_ip"),
            session=None if session is None else hasher.hash(session, kind="session"),
            details=MappingProxyType({}) if details is None else details,
        )

    def emit(
        self,
        name: EventName | str,
        *,
        outcome: Outcome,
        level: Level | None = None,
        request_id: str | None = None,
        user: str | int | None = None,
        client_ip: str | None = None,
        session: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEvent:
        """Build an event, send it to the sink and return it."""
        event = self.event(
            name,
            outcome=outcome,
            level=level,
            request_id=request_id,
            user=user,
            client_ip=client_ip,
            session=session,
            details=details,
        )
        self._sink.emit(event)
        return event

    def __repr__(self) -> str:
        return f"Auditor(hasher={self._hasher!r}, clock={self._clock!r}, sink={self._sink!r})"
