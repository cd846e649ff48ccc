"""The cookies a client holds after a chain of responses, read as the Observatory's jar does.

:func:`parse_set_cookie` reads the flags of one ``Set-Cookie`` line; :func:`cookie_jar` applies
RFC 6265bis replacement and refusal rules over the responses of a redirect chain, so that the
cookie test of :mod:`bastion.core.headers.grading` sees what a browser would keep. Nothing here
raises on odd input, and no network module is imported (core does no I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["SetCookie", "cookie_jar", "parse_set_cookie"]

_IGNORED_COOKIES: Final = frozenset({"heroku-session-affinity"})


@dataclass(frozen=True, slots=True)
class SetCookie:
    """The attributes of one ``Set-Cookie`` line that the cookie test looks at."""

    name: str
    secure: bool
    http_only: bool
    same_site: str | None
    same_site_invalid: bool
    path: str | None = None
    domain: str | None = None


def _all(headers: tuple[tuple[str, str], ...], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name]


def _scheme_and_host(url: str) -> tuple[str, str]:
    """The lower-cased scheme and host of an absolute URL (no urllib: core does no I/O and
    imports no network module). Never raises; anything odd yields empty parts."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        return "", ""
    authority = rest
    for end in "/?#":
        authority = authority.split(end, 1)[0]
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):
        host = authority[1:].partition("]")[0]
    else:
        host = authority.partition(":")[0]
    return scheme.lower(), host.lower()


def parse_set_cookie(line: str) -> SetCookie | None:
    """The name and flags of a ``Set-Cookie`` line; ``None`` when it has no name. Never raises."""
    pairs = line.strip().split(";")
    name = pairs[0].split("=", 1)[0].strip()
    if not name or "=" not in pairs[0]:
        return None
    secure = http_only = invalid = False
    same_site: str | None = None
    path: str | None = None
    domain: str | None = None
    for attribute in pairs[1:]:
        key, _, value = attribute.partition("=")
        key = key.strip().lower()
        if key == "path":
            path = value.strip() or None
        elif key == "domain":
            domain = value.strip().lstrip(".").lower() or None
        elif key == "secure":
            secure = True
        elif key == "httponly":
            http_only = True
        elif key == "samesite":
            normalized = value.strip().lower()
            if normalized in {"lax", "strict", "none"}:
                same_site = normalized
            else:
                invalid = True
    return SetCookie(name, secure, http_only, same_site, invalid, path, domain)


def _default_path(url: str) -> str:
    """RFC 6265 section 5.1.4: the request path up to its last ``/`` (``/`` at least)."""
    _scheme, separator, rest = url.partition("://")
    path = rest[rest.find("/") :] if separator and "/" in rest else "/"
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/") or path.count("/") == 1:
        return "/"
    return path[: path.rfind("/")]


def _domain_matches(host: str, domain: str) -> bool:
    if host == domain:
        return True
    is_ip = ":" in host or host.replace(".", "").isdigit()
    return not is_ip and host.endswith("." + domain)


def cookie_jar(responses: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]) -> list[SetCookie]:
    """The cookies a jar holds after ``(url, headers)`` responses, in order: the last cookie
    of a name, domain and path wins; a cookie for a domain the URL is not in, or breaking the
    ``__Secure-``/``__Host-`` prefix rules, is dropped (RFC 6265bis, as the Observatory's
    jar). An empty URL refuses no domain."""
    jar: dict[tuple[str, str, str], SetCookie] = {}
    for url, headers in responses:
        host = _scheme_and_host(url)[1]
        for line in _all(headers, "set-cookie"):
            cookie = parse_set_cookie(line)
            if cookie is None or cookie.name in _IGNORED_COOKIES:
                continue
            if cookie.domain is not None and host and not _domain_matches(host, cookie.domain):
                continue
            path = cookie.path if cookie.path and cookie.path.startswith("/") else None
            path = path or _default_path(url)
            if cookie.name.startswith("__Secure-") and not cookie.secure:
                continue
            if cookie.name.startswith("__Host-") and not (
                cookie.secure and cookie.domain is None and path == "/"
            ):
                continue
            jar[(cookie.domain or host, path, cookie.name)] = cookie
    return list(jar.values())
