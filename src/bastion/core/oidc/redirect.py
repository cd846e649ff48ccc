"""The post-login destination (the ``next`` parameter of the login route), checked.

A destination is accepted when it is

* a same-origin relative path: one ``/`` then a character that is neither ``/`` nor ``\\``
  (``//evil.example`` and ``/\\evil.example`` are network-path references to another host in
  browsers), or exactly ``/``; or
* an absolute URL on the allow-list: equal to an entry, or under an entry that is a bare
  origin (``https://app.example`` allows ``https://app.example/anything``).

Everywhere, refused outright: anything but printable ASCII (browsers drop tabs and newlines
inside URLs, so ``/\\t/evil`` would become ``//evil``), any backslash, and percent-escapes
that decode to ``/``, ``\\``, ``%`` or a control character (``/%2F%2Fevil``, ``/%5Cevil``,
double encoding), or are not two hex digits. A scheme such as ``https:evil.example`` or
``javascript:`` is not a path and is not on the list, so it is refused too.

:func:`check_next` raises :class:`~bastion.core.oidc.reasons.OIDCRejected` (``next_refused``);
:func:`check_allowed` validates the allow-list at configuration time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from bastion.core.oidc._url import origin_of
from bastion.core.oidc.reasons import OIDCReason, OIDCRejected
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["MAX_NEXT", "check_allowed", "check_next"]

MAX_NEXT: Final = 2048
_PRINTABLE: Final = re.compile(r"[\x21-\x7e]*", re.ASCII)
_ESCAPE: Final = re.compile(r"%(..)?", re.ASCII | re.DOTALL)
_HEX: Final = frozenset("0123456789abcdefABCDEF")


def _refused(why: str) -> OIDCRejected:
    return OIDCRejected(OIDCReason.NEXT_REFUSED, f"next refused: {why}")


def _check_text(value: str) -> None:
    if len(value) > MAX_NEXT:
        raise _refused("too long")
    if _PRINTABLE.fullmatch(value) is None:
        raise _refused("not printable ASCII")
    if "\\" in value:
        raise _refused("backslash")
    for match in _ESCAPE.finditer(value):
        pair = match.group(1)
        if pair is None or not set(pair) <= _HEX:
            raise _refused("malformed percent-escape")
        byte = int(pair, 16)
        if byte in (0x2F, 0x5C, 0x25) or byte < 0x20 or byte >= 0x7F:
            raise _refused("encoded separator or control character")


def _is_relative_path(value: str) -> bool:
    return value == "/" or (value.startswith("/") and value[1] not in "/\\")


def _under(value: str, entry: str) -> bool:
    if value == entry:
        return True
    origin = origin_of(entry)
    if origin is None or origin.rest not in ("", "/"):
        return False
    base = origin.origin
    return value.startswith(base + "/") and origin_of(value) is not None


def check_next(value: str | None, *, allowed: Iterable[str] = (), default: str = "/") -> str:
    """The destination to send the browser to after login: ``value`` when it passes (see the
    module docstring), ``default`` when it is ``None`` or empty."""
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise _refused("not text")
    _check_text(value)
    if _is_relative_path(value):
        return value
    for entry in allowed:
        if _under(value, entry):
            return value
    raise _refused("not a same-origin path nor on the allow-list")


def check_allowed(entries: Iterable[str], *, setting: str = "allowed_next") -> tuple[str, ...]:
    """``entries`` as a tuple of absolute ``http(s)`` URLs without user info, backslashes or
    escapes, else :class:`~bastion.errors.ConfigurationError` naming ``setting``."""
    if isinstance(entries, str):
        raise ConfigurationError(
            f"{setting} must be a list of URLs, not one string", setting=setting
        )
    checked: list[str] = []
    for entry in entries:
        if not isinstance(entry, str) or origin_of(entry) is None or "%" in entry:
            raise ConfigurationError(
                f"{setting}: {entry!r} is not an absolute http(s) URL", setting=setting
            )
        checked.append(entry.rstrip("/") if origin_of(entry.rstrip("/")) else entry)
    return tuple(checked)
