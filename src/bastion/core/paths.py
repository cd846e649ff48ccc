"""One grammar for the paths bastion's rules name: CSRF exemptions, rate-limit rules, header routes.

A pattern is written one way wherever bastion takes one:

* ``"/webhook"``: exactly that path (how a request's case and trailing slash are read is
  below);
* ``"/api/*"``: the prefix ``/api`` on whole segments: ``/api``, ``/api/`` and ``/api/x``,
  never ``/apix``;
* ``"/*"``: every path.

Anything else is refused at start-up with a :class:`~bastion.errors.ConfigurationError` naming the
setting: a ``*`` anywhere but a final ``/*`` segment, a pattern not starting with ``/``, an
empty, ``.`` or ``..`` segment (it could never match a path in normal form), a trailing
slash (``"/hooks/"`` was a prefix in one layer and an exact path in another; write ``"/hooks/*"``
or ``"/hooks"``), and what a server-decoded path never holds: percent-escapes (write
``"/café"``, not ``"/caf%C3%A9"``), a query or a fragment.

How a request path is matched depends on what the rule does, in the direction that never
weakens a protection (:mod:`bastion.core.request` has the reasons):

* :meth:`PathPattern.covers` is for protective rules (a rate limit): any reading of the path
  (:func:`~bastion.core.request.match_forms`: as sent or normalised, lower case, no trailing
  slash) that matches is enough;
* :meth:`PathPattern.exempts` is for exemptions (CSRF): the path must already be in normal form
  and match as written, case and trailing slash included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from bastion.core.request import is_normal, match_forms
from bastion.errors import ConfigurationError

__all__ = ["EVERYWHERE", "PathPattern", "parse_patterns"]


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A parsed path pattern (see the module docstring). Build it with :meth:`parse`."""

    text: str
    """The pattern as written: ``"/api/*"``."""
    base: str
    """The path without the ``/*``: ``"/api"`` (``"/"`` for ``"/*"``)."""
    prefix: bool
    """Whether the pattern ends in ``/*``."""
    folded: str = field(repr=False, compare=False)
    """``base`` lower-cased: what :func:`~bastion.core.request.match_forms` readings meet."""
    under: str = field(repr=False, compare=False)
    """``folded`` with a trailing slash: what the readings of paths below it start with."""

    @classmethod
    def parse(cls, text: object, *, setting: str) -> PathPattern:
        """Parse ``text``; a malformed one raises :class:`ConfigurationError` for ``setting``."""
        if not isinstance(text, str) or not text.startswith("/"):
            raise ConfigurationError(
                f"{setting}: {text!r} must be a path starting with '/' ('/login' for one path, "
                "'/api/*' for a prefix)",
                setting=setting,
            )
        _check_decoded(text, setting)
        prefix = text == "/*" or text.endswith("/*")
        base = (text[:-2] or "/") if prefix else text
        if "*" in base:
            raise ConfigurationError(
                f"{setting}: {text!r} has a '*' that is not a final '/*' segment; patterns are "
                "an exact path ('/login') or a prefix ('/api/*'), nothing else",
                setting=setting,
            )
        if base != "/" and base.endswith("/"):
            raise ConfigurationError(
                f"{setting}: {text!r} ends in '/'; write {base.rstrip('/') + '/*'!r} for the "
                f"prefix or {base.rstrip('/')!r} for the exact path",
                setting=setting,
            )
        if not is_normal(base):
            raise ConfigurationError(
                f"{setting}: {text!r} has an empty, '.' or '..' segment and would never match "
                "a path in normal form",
                setting=setting,
            )
        folded = base.lower()
        return cls(text, base, prefix, folded, "/" if folded == "/" else folded + "/")

    @property
    def everywhere(self) -> bool:
        """Whether the pattern is ``"/*"``."""
        return self.prefix and self.base == "/"

    def covers(self, forms: tuple[str, ...]) -> bool:
        """Protective matching: whether one of the request path's ``match_forms`` readings
        is the pattern's path or, for a prefix, below it."""
        if self.prefix:
            if self.base == "/":
                return True
            folded, under = self.folded, self.under
            return any(form == folded or form.startswith(under) for form in forms)
        return self.folded in forms

    def covers_path(self, path: str) -> bool:
        """:meth:`covers` for a full request path (reads its forms first)."""
        return self.covers(match_forms(path))

    def exempts(self, path: str) -> bool:
        """Exemption matching: ``path`` (the full path) is in normal form and is exactly the
        pattern's path or, for a prefix, below it, case and trailing slash included."""
        if not is_normal(path):
            return False
        base = self.base
        if self.prefix:
            return base in {"/", path} or path.startswith(base + "/")
        return path == base

    def __str__(self) -> str:
        return self.text


_ESCAPE: Final = re.compile(r"%[0-9A-Fa-f]{2}")


def _check_decoded(text: str, setting: str) -> None:
    """Refuse what a server-decoded path never holds: percent-escapes (servers decode them
    before any layer reads the path, so ``/caf%C3%A9`` would never match ``/café``), and a
    query or fragment (cut off before the path is read). Such a pattern was accepted and
    then never applied: a rate limit that limited nothing."""
    cut = min((i for i in (text.find("?"), text.find("#")) if i >= 0), default=-1)
    if cut >= 0:
        raise ConfigurationError(
            f"{setting}: {text!r} has a query or fragment, which is never part of the path "
            f"a request is matched by; write {text[:cut] or '/'!r}",
            setting=setting,
        )
    if _ESCAPE.search(text) is not None:
        decoded = _unescape(text)
        raise ConfigurationError(
            f"{setting}: {text!r} has percent-escapes, but servers decode the path before "
            f"bastion reads it; write the decoded path {decoded!r}",
            setting=setting,
        )


def _unescape(text: str) -> str:
    """``text`` with its ``%XX`` escapes decoded as UTF-8 (for the message only)."""
    out, start = bytearray(), 0
    for match in _ESCAPE.finditer(text):
        out += text[start : match.start()].encode("utf-8", "surrogatepass")
        out.append(int(match.group()[1:], 16))
        start = match.end()
    out += text[start:].encode("utf-8", "surrogatepass")
    return out.decode("utf-8", "replace")


EVERYWHERE: Final = PathPattern.parse("/*", setting="path")


def parse_patterns(values: object, *, setting: str) -> tuple[PathPattern, ...]:
    """Parse a pattern or an iterable of patterns (a lone string is one pattern)."""
    if isinstance(values, (str, PathPattern)):
        values = (values,)
    if not isinstance(values, (list, tuple, set, frozenset)):
        raise ConfigurationError(
            f"{setting} must be a path pattern or a list of them, got {type(values).__name__}",
            setting=setting,
        )
    return tuple(
        v if isinstance(v, PathPattern) else PathPattern.parse(v, setting=setting) for v in values
    )
