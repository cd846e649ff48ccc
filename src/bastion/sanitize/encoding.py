"""Output encoding: one function per place a value lands in a page.

Sanitizing (``bastion.sanitize.html``) is for markup a user is allowed to write. Everything else
a user typed is *text*, and text is made safe where it is written out, by the encoder of the
context it lands in. The context decides, not the value: a string that is harmless between two
tags can run script inside an event-handler attribute or end a ``<script>`` block early.

================  ====================================  ==========================================
context           encoder                               what it guarantees
================  ====================================  ==========================================
element text      :func:`html_text`                     no tag, entity or comment can start
attribute value   :func:`html_attribute`                cannot leave the value, quoted or not
URL in href/src   :func:`safe_url` then html_attribute  an allow-listed scheme, or a relative URL
URL part          :func:`url_component`                 one path segment or query value, no more
JS string         :func:`js_string`                     a complete literal that cannot end early
JSON in <script>  :func:`json_script`                   data that cannot close the script element
================  ====================================  ==========================================

None of these makes a value safe inside a ``<script>`` block outside a string literal, inside a
``style`` attribute or ``<style>``, or as a tag or attribute *name*: do not put untrusted values
there. Each encoder takes ``str`` only (``TypeError`` otherwise): encoding whatever ``repr``
happens to give is how bytes and ``None`` end up on pages.

This module needs no extra (plain Python).
"""

from __future__ import annotations

import json
import re
from typing import Final
from urllib.parse import quote

from bastion.errors import BadData

__all__ = [
    "DEFAULT_URL_SCHEMES",
    "UnsafeURL",
    "html_attribute",
    "html_text",
    "js_string",
    "json_script",
    "safe_url",
    "url_component",
]

DEFAULT_URL_SCHEMES: Final = frozenset({"http", "https", "mailto"})
"""Schemes a link may use unless the caller says otherwise. ``javascript:``, ``data:`` and
``vbscript:`` are absent on purpose: each runs or renders attacker content."""

_REPLACEMENT = "\ufffd"


def _is_alnum(code: int) -> bool:
    return 0x30 <= code <= 0x39 or 0x41 <= code <= 0x5A or 0x61 <= code <= 0x7A


# A lone surrogate (JSON may carry "\ud800"; Python keeps it) cannot be written as UTF-8: left
# in, the page's encoding raises and the request is a 500. It becomes U+FFFD, as NUL does.
_SURROGATES: Final = dict.fromkeys(range(0xD800, 0xE000), _REPLACEMENT)
_TEXT: Final = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#x27;", "\0": _REPLACEMENT}
    | _SURROGATES
)
# Every ASCII character that is not a letter or digit becomes a hex reference: the value then
# holds no quote, no space, no '=' and no '&' that the parser would read, so it cannot end the
# attribute even when the template forgot the quotes (the OWASP rule for attribute values).
# Not 0x80-0xFF: no parser gives them meaning, and a reference to 0x80-0x9F is read as
# windows-1252 (&#x80; is the euro sign), which would change the value.
# Unicode spaces are encoded too: browsers end an unquoted value at ASCII whitespace only, but
# other parsers (Python's html.parser) also at these.
_UNICODE_SPACES: Final = (
    0xA0,
    0x1680,
    *range(0x2000, 0x200B),
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
)
_ATTRIBUTE: Final = str.maketrans(
    {code: f"&#x{code:02X};" for code in range(1, 128) if not _is_alnum(code)}
    | {code: f"&#x{code:X};" for code in _UNICODE_SPACES}
    | {0: _REPLACEMENT}
    | _SURROGATES
)
# In a JavaScript string literal: \xHH for everything below 256 that is not a letter or digit
# (quotes, backslash, '<' and '/' of </script>, newlines), \uHHHH for the line separators U+2028
# and U+2029 (line terminators before ES2019) and for lone surrogates (kept as they are in JS).
_JS: Final = str.maketrans(
    {code: f"\\x{code:02X}" for code in range(256) if not _is_alnum(code)}
    | {code: f"\\u{code:04X}" for code in (0x2028, 0x2029, *range(0xD800, 0xE000))}
)
_JSON_IN_SCRIPT: Final = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)

_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
# What a browser's URL parser drops before reading a scheme: leading and trailing C0 controls and
# spaces, and every tab and newline anywhere ("java\tscript:" is "javascript:" to a browser).
_EDGES: Final = "".join(map(chr, range(0x21)))
_TAB_NEWLINE: Final = str.maketrans({"\t": None, "\n": None, "\r": None})
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")


def _text_only(value: object, encoder: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{encoder} encodes text (str), not {type(value).__name__}")
    return value


def html_text(value: str) -> str:
    """``value`` as HTML element content: ``& < > " '`` become references, NUL and lone
    surrogates become U+FFFD.

    Safe between tags and inside quoted attribute values; for an attribute whose quotes are not
    certain, use :func:`html_attribute`.
    """
    return _text_only(value, "html_text").translate(_TEXT)


def html_attribute(value: str) -> str:
    """``value`` as an attribute value: every ASCII character but letters and digits becomes
    ``&#xHH;`` (NUL and lone surrogates become U+FFFD), as do Unicode spaces, so the value
    cannot end early, quoted or not (an unquoted *empty* value cannot be written at all: quote
    attributes).

    It does not make a value safe in ``href``/``src`` (a ``javascript:`` URL stays one: check it
    with :func:`safe_url` first), in ``on*`` handlers (encode with :func:`js_string` first) or in
    ``style``.
    """
    return _text_only(value, "html_attribute").translate(_ATTRIBUTE)


def url_component(value: str) -> str:
    """``value`` as one path segment or query value: everything but ``A-Z a-z 0-9 - . _ ~`` is
    percent-encoded (UTF-8), ``/ ? # & =`` included, so it cannot add segments or parameters.

    ``.`` and ``..`` are refused (:class:`UnsafeURL`, reason ``"dot_segment"``): as a path
    segment they name the current or the parent directory, and percent-encoding cannot help,
    since URL parsers read ``%2e`` as a dot there (``/users/{..}/delete`` would be ``/delete``).
    """
    text = _text_only(value, "url_component")
    if text in {".", ".."}:
        raise UnsafeURL("a dot segment cannot be one URL component", reason="dot_segment")
    return quote(text, safe="", errors="replace")


def js_string(value: str) -> str:
    """``value`` as a complete, double-quoted JavaScript string literal (quotes included).

    The literal holds only letters, digits and escapes: it cannot end early, contains no ``<``
    (so no ``</script>``), no ``&`` and no quote (so it also survives an HTML attribute's
    decoding). Evaluating it gives back exactly ``value``.
    """
    return '"' + _text_only(value, "js_string").translate(_JS) + '"'


def json_script(value: object) -> str:
    """``value`` as JSON for a ``<script type="application/json">`` element (or a script block).

    ``<``, ``>`` and ``&`` are escaped as ``\\u003c``-style sequences so that ``</script>`` or
    ``<!--`` in the data cannot close or confuse the element; the result is still valid JSON.
    Raises ``TypeError`` for values ``json`` cannot represent and ``ValueError`` for NaN.
    """
    encoded = json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return encoded.translate(_JSON_IN_SCRIPT)


class UnsafeURL(BadData):
    """A URL is refused for a link or resource attribute.

    ``reason`` is stable: ``"not_text"``, ``"control_character"``, ``"scheme"`` (a scheme outside
    the allow-list), ``"relative"`` (relative URLs refused by the caller) or
    ``"network_path"`` (``//host`` and its backslash spellings, which leave the site without
    naming a scheme), ``"dot_segment"`` (:func:`url_component` of ``.`` or ``..``). The URL is
    not in the message: it is attacker-chosen.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def safe_url(
    value: str, *, schemes: frozenset[str] = DEFAULT_URL_SCHEMES, relative: bool = True
) -> str:
    """``value`` if a browser would read it as a URL with an allow-listed scheme (or, when
    ``relative`` is true, a same-site relative URL); :class:`UnsafeURL` otherwise.

    The check reads the URL the way a browser does: leading and trailing controls and spaces
    are dropped and tabs and newlines removed before the scheme is read, so ``" java\\tscript:"``
    is refused as ``javascript:``. The returned URL is that cleaned form. It still has to be
    encoded for where it goes: :func:`html_attribute` for ``href``/``src``.
    """
    if not isinstance(value, str):
        raise UnsafeURL("a URL must be text", reason="not_text")
    cleaned = value.strip(_EDGES).translate(_TAB_NEWLINE)
    if _CONTROL.search(cleaned):
        raise UnsafeURL("the URL contains a control character", reason="control_character")
    found = _SCHEME.match(cleaned)
    if found is not None:
        scheme = found.group(1).lower()
        if scheme not in schemes:
            raise UnsafeURL(f"the URL's scheme is not one of {sorted(schemes)}", reason="scheme")
        return cleaned
    if cleaned[:2].replace("\\", "/") == "//":
        raise UnsafeURL(
            "a network-path URL (//host) leaves the site without a scheme; write the scheme",
            reason="network_path",
        )
    if not relative:
        raise UnsafeURL("relative URLs are not accepted here", reason="relative")
    return cleaned
