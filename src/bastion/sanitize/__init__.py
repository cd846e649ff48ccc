"""Untrusted text on pages: HTML sanitization profiles and output encoders.

Two tools for two kinds of input (docs/data-protection.md):

- markup a user may write (a bio, a comment): :func:`sanitize_html` with a profile,
  :data:`RICH_TEXT` (the guide's tags and attributes) or :data:`TEXT_ONLY`, or an
  :class:`HtmlProfile` of your own, checked when it is built; :func:`linkify` for plain text with
  URLs in it. These need the ``sanitize`` extra (nh3): ``pip install 'bastion[sanitize]'``;
  without it, the first use names the extra.
- everything else is text, encoded where it is written: :func:`html_text`,
  :func:`html_attribute`, :func:`safe_url`, :func:`url_component`, :func:`js_string`,
  :func:`json_script`. These need nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bastion.sanitize.encoding import (
    DEFAULT_URL_SCHEMES,
    UnsafeURL,
    html_attribute,
    html_text,
    js_string,
    json_script,
    safe_url,
    url_component,
)

if TYPE_CHECKING:
    from bastion.sanitize.html import (
        FORBIDDEN_ATTRIBUTE_PREFIXES,
        FORBIDDEN_ATTRIBUTES,
        FORBIDDEN_SCHEMES,
        FORBIDDEN_TAGS,
        MAX_START_TAGS,
        RICH_TEXT,
        TEXT_ONLY,
        HtmlProfile,
        linkify,
        sanitize_html,
    )

__all__ = [
    "DEFAULT_URL_SCHEMES",
    "FORBIDDEN_ATTRIBUTES",
    "FORBIDDEN_ATTRIBUTE_PREFIXES",
    "FORBIDDEN_SCHEMES",
    "FORBIDDEN_TAGS",
    "MAX_START_TAGS",
    "RICH_TEXT",
    "TEXT_ONLY",
    "HtmlProfile",
    "UnsafeURL",
    "html_attribute",
    "html_text",
    "js_string",
    "json_script",
    "linkify",
    "safe_url",
    "sanitize_html",
    "url_component",
]

_BEHIND_THE_EXTRA = frozenset(
    {
        "FORBIDDEN_ATTRIBUTES",
        "FORBIDDEN_ATTRIBUTE_PREFIXES",
        "FORBIDDEN_SCHEMES",
        "FORBIDDEN_TAGS",
        "MAX_START_TAGS",
        "RICH_TEXT",
        "TEXT_ONLY",
        "HtmlProfile",
        "linkify",
        "sanitize_html",
    }
)


def __getattr__(name: str) -> Any:
    """The nh3-backed names, imported on first use so the encoders work without the extra."""
    if name not in _BEHIND_THE_EXTRA:
        raise AttributeError(f"module 'bastion.sanitize' has no attribute {name!r}")
    module = importlib.import_module("bastion.sanitize.html")  # ImportError names the extra
    value = getattr(module, name)
    globals()[name] = value
    return value
