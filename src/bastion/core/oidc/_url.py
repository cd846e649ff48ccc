"""The little URL handling the sans-I/O OIDC core needs, without ``urllib`` (core does no I/O
and imports no I/O package): the origin of an absolute URL, and query-component encoding."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["Origin", "is_loopback", "origin_of", "query_encode"]

_ABSOLUTE: Final = re.compile(
    r"(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(?::(?P<port>[0-9]{1,5}))?"
    r"(?P<rest>[/?#][\x21-\x7e]*)?",
    re.ASCII,
)
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_LOOPBACK: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str  # lowercased; an IPv6 literal keeps its brackets
    port: int
    rest: str  # path, query and fragment as written ("" when absent)

    @property
    def origin(self) -> str:
        default = 443 if self.scheme == "https" else 80
        port = "" if self.port == default else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}"


def origin_of(url: str) -> Origin | None:
    """The parts of an absolute ``http(s)`` URL without user info, whitespace, backslashes or
    non-ASCII; ``None`` for anything else."""
    if not isinstance(url, str):
        return None
    found = _ABSOLUTE.fullmatch(url)
    if found is None or "\\" in url:
        return None
    scheme = found["scheme"]
    port = int(found["port"]) if found["port"] else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        return None
    return Origin(scheme, found["host"].lower(), port, found["rest"] or "")


def is_loopback(origin: Origin) -> bool:
    """Whether ``origin`` names this machine (RFC 8252 section 8.3: http is tolerable there)."""
    return origin.host in _LOOPBACK


def query_encode(value: str) -> str:
    """``value`` percent-encoded for a query component: every byte but RFC 3986's unreserved
    characters escaped (so ``&``, ``=``, ``+``, ``#`` and spaces never leak structure)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))
