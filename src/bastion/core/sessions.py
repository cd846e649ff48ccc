"""Server-side sessions, sans I/O: IDs, their storage keys, the record format and deadlines.

What the cookie carries is a session ID: 256 random bits as 43 base64url characters, or that ID
signed with a :class:`~bastion.core.signing.Signer` (purpose ``"session"``) when the app gives a
key ring. The store never sees the ID: a record lives under ``session:`` + the session's
*handle*, the base64url SHA-256 of the ID. A leaked store therefore names no live session. A
256-bit random ID needs no slow hash: nobody can search that space.

Records are JSON, never pickle. Values are checked when they are assigned
(:func:`check_session_value`): only ``dict`` with ``str`` keys, ``list``, ``str``, ``int``,
finite ``float``, ``bool`` and ``None`` are accepted, so what a handler reads back is exactly
what it wrote (a tuple would come back as a list, so it is refused). The encoded record is
capped at :attr:`SessionConfig.max_bytes`.

Deadlines, all enforced by the server from the record, never by the cookie:

* **idle timeout**: the session dies when ``last_seen + idle_timeout`` has passed. ``last_seen``
  is pushed forward at most once per ``touch_interval``, so a read-only request usually writes
  nothing.
* **absolute lifetime**: the session dies ``absolute_lifetime`` after it was created, however
  busy it is.
* **renewal**: every ``renew_every`` seconds the ID is replaced. The previous ID stays usable
  for ``renew_grace`` seconds (a *moved* tombstone that points at the new handle), so parallel
  requests sent with the old cookie are not logged out. A rotation for a privilege change
  (login, regenerate) leaves a *dead* tombstone instead: a fixated pre-login ID never reaches
  the authenticated session, not even during a grace window.

The store TTL of a record is its remaining life, so expired records disappear by themselves.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import json
import logging
import math
import re
import secrets
from dataclasses import dataclass, field

# The json package's accelerated pieces, used directly: the ``json.dumps`` / ``JSONDecoder.decode``
# wrappers rebuild an encoder or run two whitespace regexes per call, which is most of the cost
# of a small session record. The output is byte for byte what ``json.dumps`` gives. Where the C
# accelerator is missing (not CPython), the json package's pure-Python versions stand in.
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from json.scanner import make_scanner
from typing import Any, Final, TypeAlias

from bastion.core.cookies import MAX_AGE_LIMIT, Cookie, SameSite
from bastion.errors import BadData, ConfigurationError, CookieError, SessionDataError

__all__ = [
    "DEFAULT_COOKIE_NAME",
    "DEVELOPMENT_COOKIE_NAME",
    "MAX_SESSIONS_PER_USER",
    "PRESESSION_PREFIX",
    "SESSION_ID_CHARS",
    "Epoch",
    "Liveness",
    "RecordDecoder",
    "SessionConfig",
    "SessionIndex",
    "SessionRecord",
    "Tombstone",
    "check_session_value",
    "cookie_max_age",
    "data_slice",
    "decode_epoch",
    "decode_index",
    "decode_record",
    "encode_data",
    "encode_epoch",
    "encode_index",
    "encode_record",
    "encode_tombstone",
    "is_session_id",
    "liveness",
    "needs_renewal",
    "needs_touch",
    "new_csrf_secret",
    "new_session_id",
    "presession_csrf_secret",
    "record_key",
    "session_handle",
]

DEFAULT_COOKIE_NAME: Final = "__Host-session"
"""The cookie name over HTTPS: the ``__Host-`` prefix pins it to this host, path ``/``."""

DEVELOPMENT_COOKIE_NAME: Final = "session"
"""The cookie name in plain-HTTP development (a ``__Host-`` cookie needs ``Secure``)."""

SESSION_ID_CHARS: Final = 43
"""Length of a session ID: 32 random bytes in unpadded base64url."""

RECORD_VERSION: Final = 1
_ID = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)
_HANDLE = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)
_MAX_DEPTH: Final = 32
MAX_SESSIONS_PER_USER: Final = 256
"""Most sessions the registry keeps per user; a login past it destroys the user's oldest."""
_MAX_CLIENT_TEXT: Final = 256
_NUMBERS: Final = frozenset({int, float})

logger = logging.getLogger("bastion.security.sessions")


_URLSAFE: Final = bytes.maketrans(b"+/", b"-_")


def _b64_32(data: bytes) -> str:
    """Unpadded base64url of 32 bytes (43 characters)."""
    return binascii.b2a_base64(data, newline=False)[:SESSION_ID_CHARS].translate(_URLSAFE).decode()


def new_session_id() -> str:
    """A fresh session ID: 256 bits from :mod:`secrets`, 43 base64url characters."""
    return _b64_32(secrets.token_bytes(32))


def new_csrf_secret() -> str:
    """A fresh per-session CSRF secret (256 bits). Rotated with the ID on login."""
    return _b64_32(secrets.token_bytes(32))


PRESESSION_PREFIX: Final = "p."
"""Marks a session cookie that names no stored session yet: ``p.`` + 43 random characters.

An anonymous visitor who is shown a CSRF token gets this cookie instead of a stored session,
so page views write nothing to the store. The CSRF secret of such a visitor is derived from
the random value (:func:`presession_csrf_secret`); the session record is created at the first
real write and inherits that secret, so the tokens already in the page keep working."""


def presession_csrf_secret(value: str) -> str:
    """The CSRF secret of a visitor whose cookie carries the pre-session ``value``.

    A hash of a 256-bit random value that only the visitor's cookie holds (HttpOnly, and
    ``__Host-``-pinned over HTTPS): whoever can read it could read a session ID as well, and
    whoever plants one learns no more than by planting a session of their own.
    """
    return _b64_32(hashlib.sha256(b"bastion presession csrf\x00" + value.encode("ascii")).digest())


def is_session_id(text: object) -> bool:
    """Whether ``text`` has the shape of a session ID (says nothing about whether it exists)."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def session_handle(session_id: str) -> str:
    """The public, non-secret name of a session: base64url SHA-256 of its ID.

    Handles appear in the store and in the per-user registry; knowing one does not let anyone
    use the session (the cookie needs the ID itself).
    """
    return _b64_32(hashlib.sha256(session_id.encode("ascii")).digest())


def record_key(handle: str) -> str:
    """The store key of the session with ``handle``."""
    return "session:" + handle


def _check_seconds(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"{name} must be a finite number of seconds greater than 0"
            + (" or None" if allow_none else "")
            + f", got {value!r}",
            setting=name,
        )
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """How sessions behave. Frozen and validated here, so a bad setting fails at start-up.

    Cookie policy: the defaults are ``__Host-session``, ``Secure``, ``HttpOnly``,
    ``SameSite=Lax``, ``Path=/``, no ``Domain``. ``secure=False`` is refused unless
    ``development=True`` (plain-HTTP development on localhost); the middleware refuses
    ``development=True``, ``http_only=False`` and ``same_site=SameSite.NONE`` outright when the
    environment is production and logs a warning for each otherwise
    (:meth:`check_environment`). ``cookie_name=None`` picks :data:`DEFAULT_COOKIE_NAME`, or
    :data:`DEVELOPMENT_COOKIE_NAME` in development.

    Lifetimes (seconds): ``idle_timeout`` and ``absolute_lifetime`` for browser-session cookies,
    ``persistent_idle_timeout`` and ``persistent_absolute_lifetime`` for "remember me" sessions
    (``persistent=True`` makes that the default for every session). ``renew_every`` (or
    ``None``) is the ID renewal period and ``renew_grace`` how long the previous ID keeps
    working. ``touch_interval`` throttles idle-deadline refreshes.

    ``max_bytes`` caps the encoded record. ``clear_site_data`` adds
    ``Clear-Site-Data: "cookies"`` to logout responses. ``signed`` signs the cookie value with the
    key ring given to the middleware (an extra check, not a substitute for the 256-bit ID).
    """

    cookie_name: str | None = None
    secure: bool = True
    http_only: bool = True
    same_site: SameSite = SameSite.LAX
    domain: str | None = None
    path: str = "/"
    development: bool = False
    persistent: bool = False
    idle_timeout: float = 30 * 60.0
    absolute_lifetime: float = 12 * 3600.0
    persistent_idle_timeout: float = 14 * 86400.0
    persistent_absolute_lifetime: float = 30 * 86400.0
    renew_every: float | None = 15 * 60.0
    renew_grace: float = 30.0
    touch_interval: float = 60.0
    max_bytes: int = 64 * 1024
    clear_site_data: bool = True
    signed: bool = False
    cookie: Cookie = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for flag in ("secure", "http_only", "development", "persistent", "clear_site_data"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(f"{flag} must be True or False", setting=flag)
        if not isinstance(self.signed, bool):
            raise ConfigurationError("signed must be True or False", setting="signed")
        if not self.secure and not self.development:
            raise ConfigurationError(
                "secure=False sends the session cookie over plain HTTP, where anyone on the "
                "path can read it; keep secure=True, or set development=True for local "
                "plain-HTTP development (refused when ENV=production)",
                setting="secure",
            )
        for name in (
            "idle_timeout",
            "absolute_lifetime",
            "persistent_idle_timeout",
            "persistent_absolute_lifetime",
            "renew_grace",
            "touch_interval",
        ):
            object.__setattr__(self, name, _check_seconds(name, getattr(self, name)))
        renew = _check_seconds("renew_every", self.renew_every, allow_none=True)
        object.__setattr__(self, "renew_every", renew)
        if self.touch_interval >= self.idle_timeout:
            raise ConfigurationError(
                f"touch_interval ({self.touch_interval:g} s) must be shorter than idle_timeout "
                f"({self.idle_timeout:g} s), or an active user would be logged out",
                setting="touch_interval",
            )
        if self.idle_timeout > self.absolute_lifetime:
            raise ConfigurationError(
                "idle_timeout must not exceed absolute_lifetime; lower idle_timeout",
                setting="idle_timeout",
            )
        if self.persistent_idle_timeout > self.persistent_absolute_lifetime:
            raise ConfigurationError(
                "persistent_idle_timeout must not exceed persistent_absolute_lifetime",
                setting="persistent_idle_timeout",
            )
        if self.persistent_absolute_lifetime > MAX_AGE_LIMIT:
            raise ConfigurationError(
                f"persistent_absolute_lifetime is over {MAX_AGE_LIMIT} s (400 days), which "
                "browsers clamp cookies to; lower it",
                setting="persistent_absolute_lifetime",
            )
        if (
            isinstance(self.max_bytes, bool)
            or not isinstance(self.max_bytes, int)
            or not 1024 <= self.max_bytes <= 1024 * 1024
        ):
            raise ConfigurationError(
                f"max_bytes must be a whole number between 1024 and 1048576, got "
                f"{self.max_bytes!r}",
                setting="max_bytes",
            )
        cookie_name: str = self.cookie_name or (
            DEVELOPMENT_COOKIE_NAME if not self.secure else DEFAULT_COOKIE_NAME
        )
        object.__setattr__(self, "cookie_name", cookie_name)
        try:
            cookie = Cookie(
                name=cookie_name,
                secure=self.secure,
                http_only=self.http_only,
                same_site=self.same_site,
                domain=self.domain,
                path=self.path,
            )
        except CookieError as exc:
            raise ConfigurationError(f"session cookie policy: {exc}", setting="cookie") from exc
        object.__setattr__(self, "cookie", cookie)
        object.__setattr__(self, "same_site", cookie.same_site)  # "None" -> SameSite.NONE

    @property
    def name(self) -> str:
        """The cookie name in effect."""
        return self.cookie.name

    def check_environment(self, *, production: bool) -> None:
        """Refuse every insecure cookie setting in production; warn about each one elsewhere.

        The insecure settings: ``development=True`` (which allows ``secure=False``),
        ``http_only=False`` (page scripts, and so any XSS, can read the session ID) and
        ``same_site=SameSite.NONE`` (the cookie rides on cross-site requests, leaving CSRF
        protection alone in the way). A ``Secure`` cookie named without the ``__Host-`` /
        ``__Secure-`` prefix is logged, not refused. Called once by each middleware at
        start-up, so each warning is logged once per app.
        """
        weak = [
            (flag, why)
            for flag, on, why in (
                (
                    "development",
                    self.development,
                    (
                        f"development=True (secure={self.secure}): the session cookie may "
                        "travel over plain HTTP"
                    ),
                ),
                (
                    "http_only",
                    not self.http_only,
                    "http_only=False: page scripts (and any XSS) can read the session cookie",
                ),
                (
                    "same_site",
                    self.same_site is SameSite.NONE,
                    "same_site=SameSite.NONE: the session cookie is sent on cross-site requests",
                ),
            )
            if on
        ]
        if production and weak:
            flag, why = weak[0]
            raise ConfigurationError(
                f"{why}; this is refused when ENV=production. Remove the setting (the default "
                "is Secure, HttpOnly, SameSite=Lax)",
                setting=flag,
            )
        for flag, why in weak:
            logger.warning(
                "bastion sessions: %s (setting %s). Never use it in production", why, flag
            )
        if not self.clear_site_data:
            logger.warning(
                "bastion sessions: clear_site_data=False; logout leaves the browser's other "
                "cookies and storage of this origin in place (setting clear_site_data)"
            )
        if self.secure and not self.cookie.name.startswith(("__Host-", "__Secure-")):
            logger.warning(
                "bastion sessions: cookie_name=%r has no __Host- or __Secure- prefix; a "
                "subdomain can then set or shadow the session cookie (setting cookie_name)",
                self.cookie.name,
            )

    def lifetimes(self, persistent: bool) -> tuple[float, float]:
        """``(idle_timeout, absolute_lifetime)`` for a session of that kind."""
        if persistent:
            return self.persistent_idle_timeout, self.persistent_absolute_lifetime
        return self.idle_timeout, self.absolute_lifetime


def check_session_value(key: object, value: object) -> None:
    """Refuse a key or value that JSON would not give back unchanged, naming the key.

    Raises :class:`~bastion.errors.SessionDataError` at ``session[key] = value`` time rather than
    at save, where the handler that wrote it is gone.
    """
    if not isinstance(key, str):
        raise SessionDataError(
            f"session keys must be str, got {type(key).__name__} {key!r}; convert the key to str"
        )
    _check_json(key, value, 0)


def _check_json(key: str, value: object, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise SessionDataError(
            f"session[{key!r}] nests deeper than {_MAX_DEPTH} levels; flatten the value"
        )
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SessionDataError(
                f"session[{key!r}] holds {value!r}, which JSON cannot represent; "
                "store a finite number or None"
            )
        return
    if isinstance(value, list):
        for item in value:
            _check_json(key, item, depth + 1)
        return
    if isinstance(value, dict):
        for inner_key, item in value.items():
            if not isinstance(inner_key, str):
                raise SessionDataError(
                    f"session[{key!r}] has a dict key of type {type(inner_key).__name__}; JSON "
                    "keys are text, so it would come back as str. Use str keys"
                )
            _check_json(key, item, depth + 1)
        return
    raise SessionDataError(
        f"session[{key!r}] holds a {type(value).__name__}, which sessions cannot store (JSON "
        "only: dict, list, str, int, float, bool, None); convert it, e.g. a datetime to an "
        "ISO string or a set/tuple to a list"
    )


@dataclass(slots=True, kw_only=True)
class SessionRecord:
    """What the store holds for one live session. Times are Unix seconds."""

    data: dict[str, Any]
    created_at: float
    issued_at: float
    """When the current ID was issued: the renewal clock."""
    last_seen: float
    """The idle clock, pushed forward at most once per ``touch_interval``."""
    csrf_secret: str
    user_id: str | None = None
    authenticated_at: float | None = None
    persistent: bool = False
    ip: str | None = None
    user_agent: str | None = None
    epoch: int = 0
    """The user's revocation epoch this login was made under (:class:`Epoch`). A record of a
    user whose current epoch is higher has been revoked, listed in the registry or not."""

    def deadline(self, config: SessionConfig) -> float:
        """When this session dies: the earlier of its idle and absolute deadlines."""
        idle, absolute = config.lifetimes(self.persistent)
        return min(self.last_seen + idle, self.created_at + absolute)


def _record(  # noqa: PLR0917 (private: every field of a record, in order)
    data: dict[str, Any],
    created_at: float,
    issued_at: float,
    last_seen: float,
    csrf_secret: str,
    user_id: str | None,
    authenticated_at: float | None,
    persistent: bool,
    ip: str | None,
    user_agent: str | None,
    epoch: int,
) -> SessionRecord:
    """A :class:`SessionRecord` from already-checked fields, for the decoders' hot path.

    Same object as the keyword constructor builds (it has no checks of its own), without the
    cost of ten keyword arguments on every request.
    """
    record = object.__new__(SessionRecord)
    record.data = data
    record.created_at = created_at
    record.issued_at = issued_at
    record.last_seen = last_seen
    record.csrf_secret = csrf_secret
    record.user_id = user_id
    record.authenticated_at = authenticated_at
    record.persistent = persistent
    record.ip = ip
    record.user_agent = user_agent
    record.epoch = epoch
    return record


@dataclass(frozen=True, slots=True, kw_only=True)
class Tombstone:
    """What is left under a rotated ID. ``successor`` is the new handle for a renewal within
    its grace window (``until``), ``None`` for a privilege-change rotation (dead)."""

    successor: str | None
    until: float


class Liveness(enum.StrEnum):
    LIVE = "live"
    IDLE_EXPIRED = "idle_expired"
    ABSOLUTE_EXPIRED = "absolute_expired"


def liveness(record: SessionRecord, now: float, config: SessionConfig) -> Liveness:
    idle, absolute = config.lifetimes(record.persistent)
    if now >= record.created_at + absolute:
        return Liveness.ABSOLUTE_EXPIRED
    if now >= record.last_seen + idle:
        return Liveness.IDLE_EXPIRED
    return Liveness.LIVE


def needs_touch(record: SessionRecord, now: float, config: SessionConfig) -> bool:
    return now - record.last_seen >= config.touch_interval


def needs_renewal(record: SessionRecord, now: float, config: SessionConfig) -> bool:
    return config.renew_every is not None and now - record.issued_at >= config.renew_every


def cookie_max_age(record: SessionRecord, now: float, config: SessionConfig) -> int | None:
    """``Max-Age`` for the session cookie: ``None`` (browser session) unless persistent, then
    the seconds left until the server's deadline, so the cookie never outlives the session."""
    if not record.persistent:
        return None
    return max(0, min(MAX_AGE_LIMIT, math.floor(record.deadline(config) - now)))


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    return text[:_MAX_CLIENT_TEXT]


def _not_json(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not a JSON type")


# Compact separators, ASCII output (so a ``"`` inside a string is always escaped), no NaN or
# Infinity. No circular-reference markers: a cycle raises RecursionError, caught below.
# The C constructor takes no keywords: markers, default, encoder, indent, separators, then
# sort_keys, skipkeys and allow_nan, all off.
_OFF: Final = False
_FALLBACK_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=True,
    check_circular=False,
    allow_nan=False,
    separators=(",", ":"),
    default=_not_json,
)
_ENCODE: Final = (
    c_make_encoder(None, _not_json, encode_basestring_ascii, None, ":", ",", _OFF, _OFF, _OFF)
    if c_make_encoder is not None
    else lambda value, _level: (_FALLBACK_ENCODER.encode(value),)
)


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed in a session record")


# NaN or Infinity in a stored time would make every deadline comparison false: refused.
_SCAN: Final = make_scanner(json.JSONDecoder(parse_constant=_refuse_constant))  # type: ignore[arg-type]
_DATA_MARK: Final = b',"d":'


def _dumps(value: object) -> bytes:
    return "".join(_ENCODE(value, 0)).encode("ascii")


def _loads(raw: bytes) -> Any:
    """Decode one JSON document; ValueError for anything else (trailing data included)."""
    try:
        text = raw.decode("utf-8")
        value, end = _SCAN(text, 0)
    except (StopIteration, RecursionError, UnicodeDecodeError):
        raise ValueError("not a JSON document") from None
    if end != len(text):
        raise ValueError("data after the JSON document")
    return value


def encode_data(data: dict[str, Any]) -> bytes:
    """The session data as compact JSON. Raises :class:`SessionDataError` naming the key at
    fault (a value changed in place after assignment, e.g. a set appended to a list)."""
    try:
        return _dumps(data)
    except (TypeError, ValueError, RecursionError) as exc:
        culprit = _find_bad_key(data)
        raise SessionDataError(
            f"session[{culprit!r}] cannot be saved as JSON ({exc}); store JSON values only"
        ) from None


def data_slice(raw: bytes) -> bytes | None:
    """The encoded data inside a record, as :func:`encode_record` laid it out (data last).

    Comparing it with :func:`encode_data` of the current data tells whether a request changed
    the session without decoding anything. ``"`` inside JSON strings is always escaped, so the
    first ``,"d":`` is the top-level one (every field before it is a scalar).
    """
    index = raw.find(_DATA_MARK)
    return None if index < 0 else raw[index + len(_DATA_MARK) : -1]


def encode_record(
    record: SessionRecord, *, max_bytes: int, data_json: bytes | None = None
) -> bytes:
    """The record as compact JSON, data last. Raises :class:`SessionDataError` over
    ``max_bytes``. ``data_json`` is :func:`encode_data` of ``record.data`` when the caller has
    it already."""
    head = {
        "v": RECORD_VERSION,
        "c": record.created_at,
        "i": record.issued_at,
        "s": record.last_seen,
        "x": record.csrf_secret,
        "u": record.user_id,
        "a": record.authenticated_at,
        "p": record.persistent,
        "ip": _clip(record.ip),
        "ua": _clip(record.user_agent),
        "e": record.epoch,
    }
    if data_json is None:
        data_json = encode_data(record.data)
    try:
        encoded_head = _dumps(head)
    except ValueError:
        raise SessionDataError("session metadata holds a non-finite time") from None
    raw = encoded_head[:-1] + _DATA_MARK + data_json + b"}"
    if len(raw) > max_bytes:
        biggest = max(
            record.data,
            key=lambda k: len(json.dumps(record.data[k], default=str)),
            default=None,
        )
        raise SessionDataError(
            f"session is {len(raw)} bytes encoded, over max_bytes={max_bytes} (largest key: "
            f"{biggest!r}); keep large data elsewhere and store its ID in the session"
        )
    return raw


def _find_bad_key(data: dict[str, Any]) -> str | None:
    for key, value in data.items():
        try:
            check_session_value(key, value)
        except SessionDataError:
            return key
    return None


def encode_tombstone(tombstone: Tombstone) -> bytes:
    payload = {"v": RECORD_VERSION, "t": tombstone.successor, "until": tombstone.until}
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def _number(payload: dict[str, Any], name: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadData(f"session record field {name!r} is not a number")
    return float(value)


def decode_record(raw: bytes) -> SessionRecord | Tombstone:
    """Parse a stored record or tombstone. Raises :class:`~bastion.errors.BadData` on anything
    else (a corrupted value, another program's key), so the caller starts a fresh session."""
    try:
        payload = _loads(raw)
    except ValueError:
        raise BadData("session record is not JSON") from None
    if type(payload) is not dict or payload.get("v") != RECORD_VERSION:
        raise BadData("session record has an unknown format version")
    if "until" in payload:
        successor = payload.get("t")
        if successor is not None and (
            not isinstance(successor, str) or _HANDLE.fullmatch(successor) is None
        ):
            raise BadData("session tombstone has a malformed successor")
        return Tombstone(successor=successor, until=_number(payload, "until"))
    try:
        data, csrf, persistent = payload["d"], payload["x"], payload["p"]
        created, issued, seen = payload["c"], payload["i"], payload["s"]
        user, auth, ip, ua = payload["u"], payload["a"], payload["ip"], payload["ua"]
        epoch = payload.get("e", 0)  # records written before epochs existed: epoch 0
    except KeyError:
        raise BadData("session record is missing a field") from None
    # One combined check for the well-formed case; the precise checks only on failure.
    if not (
        type(data) is dict
        and type(csrf) is str
        and type(persistent) is bool
        and type(created) in _NUMBERS
        and type(issued) in _NUMBERS
        and type(seen) in _NUMBERS
        and (user is None or type(user) is str)
        and (auth is None or type(auth) in _NUMBERS)
        and (ip is None or type(ip) is str)
        and (ua is None or type(ua) is str)
        and type(epoch) is int
        and epoch >= 0
    ):
        raise BadData("session record has a field of the wrong type")
    return _record(data, created, issued, seen, csrf, user, auth, persistent, ip, ua, epoch)


_Head: TypeAlias = (
    "tuple[float, float, float, str, str | None, float | None, bool, str | None, str | None, int]"
)


class RecordDecoder:
    """:func:`decode_record` with a bounded memory of record heads it has already checked.

    A session's metadata (everything before the data) changes rarely: at most once per
    ``touch_interval`` and on lifecycle events, while the data changes on every write. This
    decoder remembers the checked fields of up to ``capacity`` heads, keyed by their exact
    bytes, so a record whose head it has seen costs one parse of the data alone. A head is only
    remembered after a full, validated decode; a hit still requires the data to be one JSON
    object that ends the record, so bytes that a full decode would read differently never take
    the short path. The memory is dropped as a whole when full (no per-entry bookkeeping), and
    is safe to share between threads (single dictionary operations).

    It holds CSRF secrets (part of each head) in memory, as the memory store does; it never
    holds session IDs (the store keys are not part of it).
    """

    __slots__ = ("_capacity", "_heads")

    def __init__(self, capacity: int = 2048) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ConfigurationError(
                f"capacity must be a whole number >= 0, got {capacity!r}", setting="capacity"
            )
        self._capacity = capacity
        self._heads: dict[bytes, _Head] = {}

    def decode(self, raw: bytes) -> SessionRecord | Tombstone:
        """As :func:`decode_record`: a record or tombstone, :class:`BadData` otherwise."""
        index = raw.find(_DATA_MARK)
        if index < 0:
            return decode_record(raw)
        head = raw[:index]
        known = self._heads.get(head)
        if known is not None:
            data = _data_at(raw, index + len(_DATA_MARK))
            if data is not None:
                return _record(data, *known)
        record = decode_record(raw)
        if isinstance(record, SessionRecord) and self._capacity:
            if len(self._heads) >= self._capacity:
                self._heads.clear()
            self._heads[head] = (
                record.created_at,
                record.issued_at,
                record.last_seen,
                record.csrf_secret,
                record.user_id,
                record.authenticated_at,
                record.persistent,
                record.ip,
                record.user_agent,
                record.epoch,
            )
        return record


def _data_at(raw: bytes, start: int) -> dict[str, Any] | None:
    """The JSON object at ``start`` when it runs to the record's closing brace, else ``None``."""
    if raw[-1:] != b"}":
        return None
    try:
        text = raw[start:-1].decode("utf-8")
        data, end = _SCAN(text, 0)
    except (ValueError, StopIteration, RecursionError, UnicodeDecodeError):
        return None
    if end != len(text) or type(data) is not dict:
        return None
    return data


@dataclass(slots=True)
class SessionIndex:
    """One user's sessions: handle -> ``{"created": t, "ip": ..., "ua": ...}``.

    Bounded to the newest :data:`MAX_SESSIONS_PER_USER` entries. An entry is never dropped
    while its session may live: :meth:`add` returns the handles that fell out, and the caller
    destroys those sessions before it stores the index, so the list shows every live session
    (the oldest session of a user past the cap is logged out). An entry whose record is gone
    is pruned when listed.
    """

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, handle: str, *, created: float, ip: str | None, ua: str | None) -> list[str]:
        """Add ``handle``; the handles pushed out by the bound (oldest first), to destroy."""
        self.entries[handle] = {"created": created, "ip": _clip(ip), "ua": _clip(ua)}
        evicted: list[str] = []
        while len(self.entries) > MAX_SESSIONS_PER_USER:
            oldest = min(
                (h for h in self.entries if h != handle),
                key=lambda h: float(self.entries[h].get("created", 0.0)),
            )
            del self.entries[oldest]
            evicted.append(oldest)
        return evicted


@dataclass(frozen=True, slots=True)
class Epoch:
    """A user's revocation epoch: ``number`` goes up by one on every "revoke all" (or "revoke
    all others"), at Unix time ``since``. A session record carries the epoch its login was
    made under; a load refuses a record whose epoch is lower than the user's current one, so a
    revocation reaches every session of the user, whether the registry lists it or not."""

    number: int = 0
    since: float = 0.0


def encode_epoch(epoch: Epoch) -> bytes:
    return json.dumps(
        {"v": RECORD_VERSION, "n": epoch.number, "t": epoch.since}, separators=(",", ":")
    ).encode("ascii")


def decode_epoch(raw: bytes | None) -> Epoch:
    """Parse a user's epoch record; ``None`` (absent) is epoch 0. Malformed is :class:`BadData`
    (the caller refuses the user's sessions rather than guess)."""
    if raw is None:
        return Epoch()
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadData("session epoch is not JSON") from None
    if type(payload) is not dict or payload.get("v") != RECORD_VERSION:
        raise BadData("session epoch has an unknown format version")
    number, since = payload.get("n"), payload.get("t")
    if type(number) is not int or number < 0:
        raise BadData("session epoch number is malformed")
    if not isinstance(since, int | float) or isinstance(since, bool) or not math.isfinite(since):
        raise BadData("session epoch time is malformed")
    return Epoch(number, float(since))


def encode_index(index: SessionIndex) -> bytes:
    payload = {"v": RECORD_VERSION, "s": index.entries}
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def decode_index(raw: bytes | None) -> SessionIndex:
    """Parse a user's index; ``None`` (absent) is an empty index. Malformed is :class:`BadData`."""
    if raw is None:
        return SessionIndex()
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadData("session index is not JSON") from None
    if not isinstance(payload, dict) or payload.get("v") != RECORD_VERSION:
        raise BadData("session index has an unknown format version")
    entries = payload.get("s")
    if not isinstance(entries, dict) or not all(
        isinstance(h, str) and isinstance(e, dict) for h, e in entries.items()
    ):
        raise BadData("session index entries are malformed")
    return SessionIndex(entries)
