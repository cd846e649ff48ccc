"""The request URL a DPoP proof's ``htu`` claim is compared with (RFC 9449 section 4.3).

Both sides go through :func:`normalize_htu`, RFC 3986 syntax- and scheme-based normalisation,
so equivalent spellings of one URL compare equal and nothing else does. Pure text functions:
``urllib`` is I/O territory for the layer rule (``core`` imports none of it), and its parser
accepts more than a request URL may hold. :mod:`bastion.core.tokens.dpop` builds on these.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["join_htu", "normalize_htu"]

MAX_HTU_LENGTH: Final = 4096
_PERCENT: Final = re.compile(r"%([0-9A-Fa-f]{2})")
_STRAY_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_CHARS: Final = _UNRESERVED | frozenset("!$&'()*+,;=:@/%")
_REG_NAME: Final = re.compile(r"[a-z0-9\-._~!$&'()*+,;=%]+")
_IP_LITERAL: Final = re.compile(r"\[[0-9a-f:.]+\]")
_PORT: Final = re.compile(r"[0-9]{0,5}")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_HANDSHAKE_SCHEMES: Final = {"ws": "http", "wss": "https"}  # a WebSocket handshake is a GET


def _authority(scheme: str, authority: str) -> str | None:
    """``host[:port]`` lower-cased, the scheme's default port dropped; ``None`` if it is not
    an authority a request can have (userinfo, a bad host or port)."""
    authority = authority.lower()
    if authority.startswith("["):
        end = authority.find("]") + 1
        host, port = authority[:end], authority[end:]
        valid = end > 0 and _IP_LITERAL.fullmatch(host) is not None
        valid = valid and (not port or port.startswith(":"))
        port = port[1:]
    else:
        host, _, port = authority.partition(":")
        valid = _REG_NAME.fullmatch(host) is not None  # no '@' (userinfo), no second ':'
    if not valid or _PORT.fullmatch(port) is None or (port and int(port) > 65535):
        return None
    if port and int(port) != _DEFAULT_PORTS[scheme]:
        return f"{host}:{int(port)}"
    return host


def _normalize_percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def normalize_htu(url: str) -> str | None:
    """``url`` in the form ``htu`` claims are compared in, or ``None`` if it is not an
        ``http``/``https`` URL.

        Scheme and host lower-cased, the default port dropped (``:443`` for https, ``:80`` for
        http, and an empty port), an empty path made ``/``, percent-encodings of unreserved
        characters decoded and the others upper-cased (a ``%`` that starts no percent-encoding makes
    the URL unusable); query and fragment dropped. Nothing else
        changes: dot segments and ``//`` stay (a server that routes ``/a/../b`` as ``/b`` is not
        the norm, and a proof names the path its client meant). Userinfo, whitespace, controls,
        non-ASCII text and more than 4096 characters make the URL unusable (``None``).
    """
    if not isinstance(url, str) or len(url) > MAX_HTU_LENGTH or not url.isascii():
        return None
    if any(char <= " " or char == "\x7f" for char in url):
        return None
    url = url.partition("#")[0].partition("?")[0]
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        return None
    slash = rest.find("/")
    authority, path = (rest, "") if slash == -1 else (rest[:slash], rest[slash:])
    host = _authority(scheme, authority)
    if host is None or any(char not in _PATH_CHARS for char in path):
        return None
    if _STRAY_PERCENT.search(path):
        return None  # "%" must start a percent-encoding (RFC 3986 section 2.1)
    return f"{scheme}://{host}{_PERCENT.sub(_normalize_percent, path) or '/'}"


def _quote_path(path: str) -> str:
    path = _STRAY_PERCENT.sub("%25", path)
    return "".join(
        char if char in _PATH_CHARS else "".join(f"%{b:02X}" for b in char.encode("utf-8"))
        for char in path
    )


def join_htu(scheme: str, host: str, path: str) -> str | None:
    """The normalised URL of a request to ``path`` on ``host`` (with its port, as in a
    ``Host`` header) over ``scheme``; ``None`` if the parts cannot form one.

    ``host`` must be an authority alone: a ``/``, ``?``, ``#``, ``@`` or ``\\`` in it (a forged
    ``Host`` header) would move text into the path or userinfo, so it makes the whole URL
    unusable. ``path`` is the raw path as received; characters a raw path cannot hold (space,
    non-ASCII, a ``%`` that starts no percent-encoding) are percent-encoded as UTF-8, and a
    query or fragment is dropped. ``ws``/``wss`` (an ASGI WebSocket scope) count as
    ``http``/``https``: the handshake is an HTTP ``GET`` to that URL.
    """
    if not isinstance(scheme, str) or not isinstance(host, str) or not isinstance(path, str):
        return None
    if not host or any(char in host for char in "/?#@\\"):
        return None
    path = path.partition("#")[0].partition("?")[0]
    if path and not path.startswith("/"):
        return None
    scheme = _HANDSHAKE_SCHEMES.get(scheme.lower(), scheme)
    return normalize_htu(f"{scheme}://{host}{_quote_path(path)}")
