"""Reading the ``Cookie`` header and writing ``Set-Cookie`` lines.

Two halves with opposite attitudes:

* :func:`parse_cookie` reads untrusted input. It is total (it never raises on any ``str``,
  lone surrogates included) and linear in the length of the header. It trims only SP and HTAB
  (the RFC 6265bis whitespace), so ``"\\u2000__Host-id=x"`` keeps its U+2000 and cannot pose as
  a ``__Host-`` cookie; a piece with no ``=`` or an empty name is dropped, so ``=__Host-id=x``
  cannot either. The first of duplicate names wins: browsers send the cookie with the longest
  path (the most specific) first, and a subdomain that plants a same-named cookie for a broader
  path lands later in the header. One pair of surrounding double quotes is removed, but no
  backslash unescaping is done: that is where CPython's ``http.cookies`` went quadratic
  (CVE-2024-7592), and RFC 6265 gives backslashes no meaning anyway.

* :class:`Cookie` writes. Its :meth:`Cookie.serialize` is the only way a ``Set-Cookie`` value
  leaves bastion. Every field is validated when the object is built, so a misconfigured cookie
  fails at start-up, not on the first response, and the attribute part is rendered once.
  :meth:`Cookie.with_value` re-checks only the new value, which is what a response needs.

Decisions worth knowing:

* Values are never quoted or escaped on the way out. A value outside RFC 6265 ``cookie-octet``
  (printable ASCII except space, ``"``, ``,``, ``;`` and ``\\``) is refused: encode it first
  (base64url, for instance). This is what makes ``x; Domain=evil.example`` impossible to
  smuggle in as an attribute.
* The empty value is allowed: deletion cookies (:meth:`Cookie.expired`) need it.
* The size budget (:data:`MAX_COOKIE_BYTES`) counts the bytes of the name plus the bytes of the
  value, nothing else: no ``=``, no attributes. That is the RFC 6265bis rule user agents apply
  (they ignore a cookie whose name and value together exceed 4096 octets). Names and values are
  ASCII once validated, so characters and bytes are the same count. Attribute values (Domain,
  Path) are capped separately at :data:`MAX_ATTRIBUTE_BYTES` when the cookie is built.
* ``Max-Age`` must be between 0 and :data:`MAX_AGE_LIMIT` (400 days): browsers silently clamp a
  longer one, so a larger number would promise a lifetime the cookie never gets. ``Expires`` is
  not derived from ``Max-Age`` (that would need a clock here; every current browser honours
  ``Max-Age``), and is rendered as an IMF-fixdate without locale-dependent formatting.
* Prefixes are matched case-insensitively, as RFC 6265bis and current browsers do: ``__host-x``
  is held to the ``__Host-`` rules. ``__Secure-`` needs ``secure``; ``__Host-`` also needs
  ``path="/"`` and no domain; ``__Http-`` and ``__Host-Http-`` (newer RFC 6265bis drafts) also
  need ``http_only``. ``SameSite=None`` and ``Partitioned`` need ``secure``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from bastion.errors import CookieError, CookieTooLarge

__all__ = [
    "MAX_AGE_LIMIT",
    "MAX_ATTRIBUTE_BYTES",
    "MAX_COOKIE_BYTES",
    "Cookie",
    "SameSite",
    "find_cookie",
    "parse_cookie",
]

MAX_COOKIE_BYTES = 4096
"""Budget for the name plus the value, in bytes (RFC 6265bis). Checked by ``serialize()``."""

MAX_ATTRIBUTE_BYTES = 1024
"""Longest attribute value (Domain, Path) browsers accept (RFC 6265bis). Checked at build time."""

MAX_AGE_LIMIT = 400 * 24 * 60 * 60
"""Largest ``Max-Age`` in seconds (400 days): RFC 6265bis user agents clamp anything longer."""

_TRIM = " \t"

# RFC 9110 token: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_"
#                        / "`" / "|" / "~" / DIGIT / ALPHA
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6265 cookie-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
_NOT_COOKIE_OCTET = re.compile(r"[^\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]")
# Attribute values: visible ASCII except ';' (no space, no controls, no CR/LF, no non-ASCII).
_NOT_ATTRIBUTE_CHAR = re.compile(r"[^\x21-\x3a\x3c-\x7e]")
# Letters, digits and hyphens in non-empty labels separated by single dots.
_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")

_SECURE_PREFIX = "__secure-"
_HOST_PREFIX = "__host-"
_HTTP_PREFIXES = ("__http-", "__host-http-")

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_VALUE_FIX = (
    "cookie values may hold only RFC 6265 cookie-octets (printable ASCII except space, "
    "'\"', ',', ';' and '\\'): encode it, e.g. base64url"
)


def parse_cookie(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` request header into ``{name: value}``. Never raises, linear time.

    * Pieces are split on ``;``; each is split at its first ``=``. A piece without ``=``, or
      whose name is empty once trimmed, is ignored (it cannot pose as a named cookie).
    * Only SP and HTAB are trimmed around names and values. Other whitespace (U+2000, NBSP,
      form feed) stays part of the name, exactly as a browser would have stored it.
    * The first of duplicate names wins.
    * A value wrapped in one pair of double quotes loses the quotes; nothing else is
      unescaped. Unbalanced quotes are kept as they are.

    Names and values are returned as they arrived: a name here is not necessarily a valid
    token, and a value may hold any character. Treat both as untrusted.
    """
    cookies: dict[str, str] = {}
    if not header:
        return cookies
    for piece in header.split(";"):
        name, equals, value = piece.partition("=")
        if not equals:
            continue
        name = name.strip(_TRIM)
        if not name or name in cookies:
            continue
        value = value.strip(_TRIM)
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            value = value[1:-1]
        cookies[name] = value
    return cookies


def find_cookie(header: str, name: str) -> str | None:
    """The value :func:`parse_cookie` gives ``name`` in ``header`` (``None``: absent), without
    building the whole mapping: for a layer that reads one cookie of every request."""
    if not name or name not in header:
        return None
    for piece in header.split(";"):
        key, equals, value = piece.partition("=")
        if equals and key.strip(_TRIM) == name:
            value = value.strip(_TRIM)
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1]
            return value
    return None


class SameSite(StrEnum):
    """The ``SameSite`` attribute. ``NONE`` needs ``secure=True`` (browsers drop it otherwise)."""

    STRICT = "Strict"
    LAX = "Lax"
    NONE = "None"


@dataclass(frozen=True, slots=True, kw_only=True, repr=False)
class Cookie:
    """A validated cookie: the one way a ``Set-Cookie`` header value is built.

    Defaults are the safe ones: ``Path=/``, ``Secure``, ``HttpOnly``, ``SameSite=Lax``, no
    ``Domain``, a session cookie (no ``Max-Age``/``Expires``). Every field is checked here and
    a :class:`~bastion.errors.CookieError` names the field and the fix. Build the cookie once
    (at start-up) with an empty value, then call :meth:`with_value` per response::

        SESSION = Cookie(name="__Host-sid", max_age=3600)
        header_value = SESSION.with_value(session_id).serialize()

    ``value`` is left out of ``repr`` because it is usually a secret (a session ID, a token).
    """

    name: str
    value: str = ""
    max_age: int | None = None
    expires: datetime | None = None
    domain: str | None = None
    path: str = "/"
    secure: bool = True
    http_only: bool = True
    same_site: SameSite = SameSite.LAX
    partitioned: bool = False
    _attributes: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        name = self.name
        _check_name(name)
        _check_value(name, self.value)
        for flag in ("secure", "http_only", "partitioned"):
            if not isinstance(getattr(self, flag), bool):
                raise CookieError(
                    f"cookie {name!r}: {flag} must be True or False, "
                    f"got {type(getattr(self, flag)).__name__}"
                )
        try:
            same_site = SameSite(self.same_site)
        except (ValueError, TypeError):
            raise CookieError(
                f"cookie {name!r}: same_site must be SameSite.STRICT, SameSite.LAX or "
                f"SameSite.NONE, got {self.same_site!r}"
            ) from None
        object.__setattr__(self, "same_site", same_site)

        parts: list[str] = []
        if self.max_age is not None:
            parts.append(f"Max-Age={_check_max_age(name, self.max_age)}")
        if self.expires is not None:
            parts.append(f"Expires={_imf_fixdate(name, self.expires)}")
        if self.domain is not None:
            _check_domain(name, self.domain)
            parts.append(f"Domain={self.domain}")
        _check_path(name, self.path)
        parts.append(f"Path={self.path}")
        if self.secure:
            parts.append("Secure")
        if self.http_only:
            parts.append("HttpOnly")
        parts.append(f"SameSite={same_site.value}")
        if self.partitioned:
            parts.append("Partitioned")
        self._check_rules(same_site)
        object.__setattr__(self, "_attributes", "".join(f"; {part}" for part in parts))

    def _check_rules(self, same_site: SameSite) -> None:
        """Cross-field rules: prefixes, SameSite=None and Partitioned need Secure."""
        name = self.name
        folded = name.lower()
        if folded.startswith(_SECURE_PREFIX) and not self.secure:
            raise CookieError(
                f"cookie {name!r}: a __Secure- name requires secure=True "
                "(browsers reject it otherwise); set secure=True or drop the prefix"
            )
        if folded.startswith(_HOST_PREFIX):
            if not self.secure:
                raise CookieError(
                    f"cookie {name!r}: a __Host- name requires secure=True; "
                    "set secure=True or drop the prefix"
                )
            if self.path != "/":
                raise CookieError(
                    f"cookie {name!r}: a __Host- name requires path='/', got path={self.path!r}; "
                    "use path='/' or drop the prefix"
                )
            if self.domain is not None:
                raise CookieError(
                    f"cookie {name!r}: a __Host- name must not set a domain, got "
                    f"domain={self.domain!r}; use domain=None (host-only) or a __Secure- name"
                )
        if folded.startswith(_HTTP_PREFIXES) and not (self.secure and self.http_only):
            raise CookieError(
                f"cookie {name!r}: a __Http- or __Host-Http- name requires secure=True and "
                "http_only=True; set both or drop the prefix"
            )
        if same_site is SameSite.NONE and not self.secure:
            raise CookieError(
                f"cookie {name!r}: same_site=SameSite.NONE requires secure=True "
                "(browsers reject it otherwise); set secure=True or use SameSite.LAX"
            )
        if self.partitioned and not self.secure:
            raise CookieError(
                f"cookie {name!r}: partitioned=True requires secure=True; set secure=True"
            )

    def serialize(self) -> str:
        """Render the ``Set-Cookie`` header value (without the ``Set-Cookie:`` field name).

        Raises :class:`~bastion.errors.CookieTooLarge` when the name plus the value exceed
        :data:`MAX_COOKIE_BYTES`: a browser would drop such a cookie silently.
        """
        size = len(self.name) + len(self.value)
        if size > MAX_COOKIE_BYTES:
            raise CookieTooLarge(
                f"cookie {self.name!r}: name and value are {size} bytes; browsers ignore cookies "
                f"over {MAX_COOKIE_BYTES} bytes: store the data server-side and keep an ID "
                "in the cookie",
                size=size,
                limit=MAX_COOKIE_BYTES,
            )
        return f"{self.name}={self.value}{self._attributes}"

    def with_value(self, value: str) -> Cookie:
        """The same cookie carrying ``value``. Only the value is checked; attributes are reused."""
        _check_value(self.name, value)
        # Unrolled on purpose: this is the per-response path, and a loop over field names with
        # getattr costs twice as much. A field added to the class must be added here too
        # (tests compare with_value() against a fully built Cookie).
        clone = object.__new__(Cookie)
        put = object.__setattr__
        put(clone, "name", self.name)
        put(clone, "value", value)
        put(clone, "max_age", self.max_age)
        put(clone, "expires", self.expires)
        put(clone, "domain", self.domain)
        put(clone, "path", self.path)
        put(clone, "secure", self.secure)
        put(clone, "http_only", self.http_only)
        put(clone, "same_site", self.same_site)
        put(clone, "partitioned", self.partitioned)
        put(clone, "_attributes", self._attributes)
        return clone

    def expired(self) -> Cookie:
        """A deletion cookie for this one: empty value, ``Max-Age=0``, ``Expires`` at the epoch.

        Name, Domain, Path, Secure and Partitioned are kept: a browser deletes a cookie only
        when they match the stored one.
        """
        return Cookie(
            name=self.name,
            value="",
            max_age=0,
            expires=_EPOCH,
            domain=self.domain,
            path=self.path,
            secure=self.secure,
            http_only=self.http_only,
            same_site=self.same_site,
            partitioned=self.partitioned,
        )

    def __repr__(self) -> str:
        return (
            f"Cookie(name={self.name!r}, value=<{len(self.value)} chars, redacted>, "
            f"attributes={self._attributes[2:]!r})"
        )


def _describe(char: str) -> str:
    """Name a forbidden character without echoing it (it may be part of a secret)."""
    named = {" ": "a space", '"': "a double quote", ",": "a comma", ";": "a semicolon"}
    if char in named:
        return named[char]
    if char == "\\":
        return "a backslash"
    if char == "\r":
        return "a carriage return (CR)"
    if char == "\n":
        return "a line feed (LF)"
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        return f"a control character (U+{code:04X})"
    return "a non-ASCII character"


def _short(text: str) -> str:
    """A bounded repr for messages: names and attributes are not secret, but may be huge."""
    return repr(text) if len(text) <= 60 else f"{text[:60]!r}..."


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise CookieError(f"cookie name must be a str, got {type(name).__name__}")
    if _TOKEN.fullmatch(name) is None:
        raise CookieError(
            f"cookie name {_short(name)} is not an RFC 9110 token; use a non-empty name made of "
            "ASCII letters, digits and !#$%&'*+-.^_`|~ (no spaces, '=', ';' or quotes)"
        )


def _check_value(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise CookieError(
            f"cookie {name!r}: value must be a str, got {type(value).__name__}; "
            "encode bytes as text first, e.g. base64url"
        )
    bad = _NOT_COOKIE_OCTET.search(value)
    if bad is not None:
        raise CookieError(
            f"cookie {name!r}: value contains {_describe(bad.group())} at index {bad.start()}; "
            f"{_VALUE_FIX}"
        )


def _check_attribute(name: str, setting: str, value: str, hint: str) -> None:
    """Shared checks for attribute values: type, forbidden characters, then the byte cap."""
    if not isinstance(value, str):
        raise CookieError(f"cookie {name!r}: {setting} must be a str, got {type(value).__name__}")
    bad = _NOT_ATTRIBUTE_CHAR.search(value)
    if bad is not None:
        raise CookieError(
            f"cookie {name!r}: {setting} contains {_describe(bad.group())} at index "
            f"{bad.start()}; attribute values must not contain CR, LF, ';', spaces, control "
            f"or non-ASCII characters: {hint}"
        )
    if len(value) > MAX_ATTRIBUTE_BYTES:
        raise CookieError(
            f"cookie {name!r}: {setting} is {len(value)} bytes; browsers ignore attribute values "
            f"over {MAX_ATTRIBUTE_BYTES} bytes: shorten it"
        )


def _check_domain(name: str, domain: str) -> None:
    hint = "write an ASCII host name such as 'example.com' (IDNs in punycode)"
    if domain == "":
        raise CookieError(
            f"cookie {name!r}: domain is empty; use domain=None for a host-only cookie"
        )
    _check_attribute(name, "domain", domain, hint)
    if _DOMAIN.fullmatch(domain) is None:
        raise CookieError(
            f"cookie {name!r}: domain {_short(domain)} must be letters, digits and hyphens in "
            f"dot-separated labels, without a leading, trailing or doubled dot; {hint}"
        )


def _check_path(name: str, path: str) -> None:
    _check_attribute(name, "path", path, "percent-encode other characters (e.g. %20 for a space)")
    if not path.startswith("/"):
        raise CookieError(
            f"cookie {name!r}: path {_short(path)} must start with '/'; e.g. path='/'"
        )


def _check_max_age(name: str, max_age: int) -> int:
    if isinstance(max_age, bool) or not isinstance(max_age, int):
        raise CookieError(
            f"cookie {name!r}: max_age must be an int number of seconds or None, "
            f"got {type(max_age).__name__}"
        )
    if not 0 <= max_age <= MAX_AGE_LIMIT:
        # str() of a huge int raises in Python 3.11+ (int_max_str_digits): never render one.
        shown = f"max_age={max_age}" if abs(max_age) < 10**18 else "max_age"
        raise CookieError(
            f"cookie {name!r}: {shown} is out of range; use 0 (delete now) to "
            f"{MAX_AGE_LIMIT} seconds (400 days, the most browsers keep a cookie)"
        )
    return int(max_age)


def _imf_fixdate(name: str, moment: datetime) -> str:
    """Render ``moment`` as an IMF-fixdate (RFC 9110), e.g. ``Thu, 01 Jan 1970 00:00:00 GMT``.

    Built from fixed English names, not ``strftime``, whose ``%a``/``%b`` follow the locale.
    Sub-second precision is dropped (truncated).
    """
    if not isinstance(moment, datetime):
        raise CookieError(
            f"cookie {name!r}: expires must be a datetime or None, got {type(moment).__name__}"
        )
    if moment.utcoffset() is None:
        raise CookieError(
            f"cookie {name!r}: expires is a naive datetime; give it a time zone, "
            "e.g. datetime.now(UTC) or dt.replace(tzinfo=UTC)"
        )
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise CookieError(
            f"cookie {name!r}: expires is out of the representable range once converted to UTC"
        ) from None
    return (
        f"{_DAYS[utc.weekday()]}, {utc.day:02d} {_MONTHS[utc.month - 1]} {utc.year:04d} "
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d} GMT"
    )
