"""HTML sanitization through nh3 (the ammonia sanitizer, an html5ever parser): profiles.

A profile is an allow-list: the tags kept, the attributes kept on each, the URL schemes a link
or image may use. Everything else is dropped, and the output is re-serialized by the parser, so
what leaves is well-formed markup with nothing a browser would read differently (the mutation
XSS family: ``<noscript>``, ``<svg>``/``<math>`` namespace confusion, unclosed comments).

Two profiles come ready: :data:`RICH_TEXT` (the guide's list: paragraphs, emphasis, lists, quotes,
code, headings and links) and :data:`TEXT_ONLY` (no markup at all: tags removed, text kept and
escaped). A custom :class:`HtmlProfile` is checked when it is built: a tag or attribute that can
run script (``<script>``, ``<iframe>``, ``on*``, ``style``, ``srcdoc``) or a scheme that can
(``javascript:``, ``data:``) is a :class:`~bastion.errors.ConfigurationError` naming it, so an
unsafe profile never reaches a request.

Every link gets ``rel="noopener noreferrer"`` (more tokens may be added, these two may not be
removed). :func:`linkify` turns the URLs in plain text into such links.

Needs the ``sanitize`` extra (``pip install 'bastion[sanitize]'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from bastion.errors import ConfigurationError
from bastion.sanitize.encoding import UnsafeURL, html_text, safe_url

try:
    import nh3
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "bastion.sanitize needs the 'sanitize' extra (nh3): pip install 'bastion[sanitize]'"
    ) from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
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
]

FORBIDDEN_TAGS: Final = frozenset(
    {
        # run script or load active content
        "script", "iframe", "frame", "frameset", "object", "embed", "applet", "portal",
        # change how the rest of the page is read or where it goes
        "style", "base", "link", "meta", "template", "noscript", "title", "html", "head", "body",
        "xmp", "plaintext", "noembed", "noframes",
        # forms post the victim's data to the attacker and clobber the DOM
        "form", "input", "button", "select", "option", "textarea",
        # foreign content: a different parser, the home of namespace-confusion XSS
        "svg", "math",
    }
)  # fmt: skip
"""Tags no profile may allow."""

_CONTENT_DROPPED: Final = frozenset(FORBIDDEN_TAGS - {"html", "head", "body", "option"})
"""Tags removed together with their content (a script's text is not prose to keep)."""

FORBIDDEN_ATTRIBUTES: Final = frozenset(
    {
        "style",  # CSS: expression(), url(javascript:), overlays that fake the page
        "srcdoc",  # a whole document
        "formaction", "action", "form",  # where a form posts
        "xmlns", "xlink:href",  # foreign-content namespaces
        "id", "name",  # DOM clobbering: <a id=config> shadows window.config
        "rel",  # written by the profile (link_rel), never taken from input
        "http-equiv", "content", "srcset", "ping", "background", "dynsrc", "lowsrc",
    }
)  # fmt: skip
"""Attributes no profile may allow (besides every ``on*`` event handler and the script
attributes of client-side frameworks, :data:`FORBIDDEN_ATTRIBUTE_PREFIXES`)."""

FORBIDDEN_ATTRIBUTE_PREFIXES: Final = ("on", "x-", "hx-", "data-hx-", "v-", "ng-", "data-ng-")
"""Attribute name prefixes no profile may allow: event handlers, and the attributes whose value
a library on the page runs as script or as a request (Alpine ``x-init``, htmx ``hx-post``, Vue
``v-html``, AngularJS ``ng-*``), the "script gadgets" that turn allowed markup into script."""

_FRAMEWORK_ATTRIBUTES: Final = frozenset({"data-bind"})  # Knockout evaluates its value

FORBIDDEN_SCHEMES: Final = frozenset({"javascript", "vbscript", "data", "file", "blob"})
"""URL schemes no profile may allow: each runs script, renders attacker HTML or reads local
files."""

_URL_ATTRIBUTES: Final = frozenset(
    {
        "href", "src", "cite", "longdesc", "poster", "data", "codebase", "archive", "classid",
        "icon", "manifest", "profile", "itemtype", "itemid", "usemap",
    }
)  # fmt: skip
"""Attributes whose value is a URL: each is checked by :func:`safe_url` with the profile's
schemes. nh3 checks ``href`` and ``src`` itself but keeps ``cite`` and ``longdesc`` whatever
their scheme, and lets a network path (``//host``, ``/\\host``) through as a relative URL,
which reaches another site through a scheme the profile may not allow."""

_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")

MAX_START_TAGS: Final = 10_000
"""The most ``<`` a profile parses as markup; past it the input is escaped as text instead.
html5ever's tree builder scans its stack of open elements for each tag, so deeply nested
markup costs time quadratic in its depth: 20,000 nested ``<div>`` take about a second, a
1 MiB body of them minutes of CPU. No comment or bio needs this many tags."""

_REQUIRED_REL: Final = frozenset({"noopener", "noreferrer"})
_KNOWN_REL: Final = _REQUIRED_REL | {"nofollow", "ugc", "sponsored", "external"}
_NAME: Final = re.compile(r"[a-z][a-z0-9]*")
_ATTRIBUTE_NAME: Final = re.compile(r"[a-z][a-z0-9-]*")
_SCHEME_NAME: Final = re.compile(r"[a-z][a-z0-9+.\-]*")


def _check_tags(tags: frozenset[str]) -> None:
    for tag in sorted(tags):
        if not isinstance(tag, str) or not _NAME.fullmatch(tag):
            raise ConfigurationError(
                f"HtmlProfile.tags: {tag!r} is not a lowercase HTML tag name", setting="tags"
            )
        if tag in FORBIDDEN_TAGS:
            raise ConfigurationError(
                f"HtmlProfile.tags: <{tag}> can run script or change how the page is read; "
                "no profile may allow it",
                setting="tags",
            )


def _check_attributes(tags: frozenset[str], attributes: Mapping[str, frozenset[str]]) -> None:
    for tag, names in attributes.items():
        if tag != "*" and tag not in tags:
            raise ConfigurationError(
                f"HtmlProfile.attributes: attributes for <{tag}>, which is not in tags "
                "(add it to tags, or use '*' for every allowed tag)",
                setting="attributes",
            )
        for name in sorted(names):
            if not isinstance(name, str) or not _ATTRIBUTE_NAME.fullmatch(name):
                raise ConfigurationError(
                    f"HtmlProfile.attributes[{tag!r}]: {name!r} is not a lowercase attribute name",
                    setting="attributes",
                )
            if (
                name.startswith(FORBIDDEN_ATTRIBUTE_PREFIXES)
                or name in FORBIDDEN_ATTRIBUTES
                or name in _FRAMEWORK_ATTRIBUTES
            ):
                raise ConfigurationError(
                    f"HtmlProfile.attributes[{tag!r}]: {name!r} is never allowed "
                    "(event handlers and framework attributes run script; see "
                    "FORBIDDEN_ATTRIBUTES and FORBIDDEN_ATTRIBUTE_PREFIXES for the others)",
                    setting="attributes",
                )


def _check_schemes(schemes: frozenset[str]) -> None:
    for scheme in sorted(schemes):
        if not isinstance(scheme, str) or not _SCHEME_NAME.fullmatch(scheme):
            raise ConfigurationError(
                f"HtmlProfile.url_schemes: {scheme!r} is not a lowercase URL scheme "
                "(write 'https', without ':')",
                setting="url_schemes",
            )
        if scheme in FORBIDDEN_SCHEMES:
            raise ConfigurationError(
                f"HtmlProfile.url_schemes: {scheme!r} URLs run script or render attacker "
                "content; no profile may allow them",
                setting="url_schemes",
            )


def _check_rel(link_rel: str) -> None:
    tokens = link_rel.split() if isinstance(link_rel, str) else []
    if not set(tokens) >= _REQUIRED_REL or not set(tokens) <= _KNOWN_REL:
        raise ConfigurationError(
            f"HtmlProfile.link_rel: {link_rel!r} must contain 'noopener' and 'noreferrer' and "
            f"otherwise only {sorted(_KNOWN_REL - _REQUIRED_REL)}",
            setting="link_rel",
        )


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class HtmlProfile:
    """An allow-list for user-written HTML, checked once and compiled once into an nh3 cleaner.

    ``attributes`` maps a tag (or ``"*"``, every allowed tag) to the attributes kept on it.
    ``url_schemes`` applies to ``href``, ``src`` and ``cite``; ``relative_urls=False`` also drops
    relative URLs (for HTML shown on another origin, in e-mail or a feed). ``link_rel`` is set on
    every ``<a>``, replacing whatever the input said. Comments are always removed.
    """

    name: str
    tags: frozenset[str]
    attributes: Mapping[str, frozenset[str]] = field(default_factory=dict)
    url_schemes: frozenset[str] = frozenset({"http", "https", "mailto"})
    relative_urls: bool = True
    link_rel: str = "noopener noreferrer"
    _cleaner: nh3.Cleaner = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigurationError("HtmlProfile.name must be a non-empty string", setting="name")
        tags = frozenset(self.tags)
        attributes = MappingProxyType({tag: frozenset(v) for tag, v in self.attributes.items()})
        schemes = frozenset(self.url_schemes)
        _check_tags(tags)
        _check_attributes(tags, attributes)
        _check_schemes(schemes)
        _check_rel(self.link_rel)
        if not isinstance(self.relative_urls, bool):
            raise ConfigurationError(
                "HtmlProfile.relative_urls must be True or False", setting="relative_urls"
            )
        object.__setattr__(self, "tags", tags)
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "url_schemes", schemes)
        cleaner = nh3.Cleaner(
            tags=set(tags),
            # "*" is always given: without it ammonia keeps its own generic attributes
            # (title, lang) on every tag, outside the profile.
            attributes={"*": set()} | {tag: set(names) for tag, names in attributes.items()},
            generic_attribute_prefixes=set(),
            clean_content_tags=set(_CONTENT_DROPPED - tags),
            url_schemes=set(schemes),
            link_rel=self.link_rel,
            strip_comments=True,
            url_relative="pass_through" if self.relative_urls else "deny",
            attribute_filter=_url_filter(schemes, relative=self.relative_urls),
        )
        object.__setattr__(self, "_cleaner", cleaner)

    def clean(self, html: str) -> str:
        """``html`` with everything outside the profile removed; safe as element content.

        Input with more than :data:`MAX_START_TAGS` ``<`` is returned escaped as text,
        unparsed (the parser is quadratic in nesting depth). Otherwise text is kept (escaped),
        disallowed tags are unwrapped (their text stays, except for
        script-like elements, which go with their content), disallowed attributes and URLs are
        dropped. Not for attribute values or script: encode text for those (``encoding``).
        """
        if not isinstance(html, str):
            raise TypeError(f"HtmlProfile.clean takes text (str), not {type(html).__name__}")
        if html.count("<") > MAX_START_TAGS:  # an upper bound on the tags, read in C
            return html_text(html)
        try:
            return self._cleaner.clean(html)
        except UnicodeEncodeError:  # a lone surrogate (JSON may carry "\ud800"): U+FFFD
            return self._cleaner.clean(_LONE_SURROGATE.sub("\ufffd", html))


def _url_filter(
    schemes: frozenset[str], *, relative: bool
) -> Callable[[str, str, str], str | None]:
    """The nh3 attribute filter of a profile: a URL attribute is kept (in the form a browser
    reads) only if :func:`safe_url` accepts it under the profile's rules; others pass."""

    def check(_element: str, attribute: str, value: str) -> str | None:
        if attribute not in _URL_ATTRIBUTES:
            return value
        try:
            return safe_url(value, schemes=schemes, relative=relative)
        except UnsafeURL:
            return None

    return check


RICH_TEXT: Final = HtmlProfile(
    name="rich_text",
    tags=frozenset(
        [
            "p",
            "br",
            "strong",
            "em",
            "b",
            "i",
            "u",
            "a",
            "ul",
            "ol",
            "li",
            "blockquote",
            "code",
            "pre",
            "h1",
            "h2",
            "h3",
        ]
    ),
    attributes={"a": frozenset({"href", "title"})},
)
"""The guide's allow-list: paragraphs, emphasis, lists, quotes, code, headings and links
(``href`` and ``title`` on ``<a>``; http, https and mailto)."""

TEXT_ONLY: Final = HtmlProfile(name="text_only", tags=frozenset(), relative_urls=False)
"""No markup at all: every tag removed (script-like ones with their content), text escaped."""


def sanitize_html(html: str, profile: HtmlProfile = RICH_TEXT) -> str:
    """``profile.clean(html)``: user-written HTML reduced to what the profile allows."""
    return profile.clean(html)


_URL_IN_TEXT: Final = re.compile(
    r"(?:https?://|www\.)[^\s<>\"'`\x00-\x20\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]+",
    re.IGNORECASE,
)
# A bidi control ends a URL: "https://evil.example/\u202egro.knab" would show as ".../bank.org"
# inside the link's own text.
_TRAILING: Final = ".,;:!?'\")]}*"
_MAX_URL: Final = 2048
_LINKS: Final = HtmlProfile(
    name="linkify", tags=frozenset({"a"}), attributes={"a": frozenset({"href"})},
    url_schemes=frozenset({"http", "https"}), relative_urls=False,
)  # fmt: skip


def _trim(candidate: str) -> str:
    # Sentence punctuation after a URL is not part of it; a ')' is, when it closes a '(' inside
    # the URL (Wikipedia's "Foo_(bar)"). The parentheses are counted once: counting them again
    # for each character trimmed made a long run of ')' quadratic (minutes for 1 MiB).
    opened, closed = candidate.count("("), candidate.count(")")
    end = len(candidate)
    while end and candidate[end - 1] in _TRAILING:
        if candidate[end - 1] == ")":
            if opened >= closed:
                break
            closed -= 1
        end -= 1
    return candidate[:end]


def _link_target(candidate: str) -> str | None:
    href = candidate if "://" in candidate[:8] else "https://" + candidate
    if len(href) > _MAX_URL:
        return None
    try:
        parts = urlsplit(href)
        host = parts.hostname
        _ = parts.port  # a port that is not a number (or out of range) raises
    except ValueError:
        return None
    # A user part ("https://bank.example@evil.example") is a phishing shape: leave it as text.
    # A percent-escape in the host is decoded by the browser's (and nh3's) URL parser into a
    # host the text does not show, or one that does not parse (then nh3 drops the href and
    # leaves a dead <a>): either way, text.
    if parts.scheme.lower() not in {"http", "https"} or not host or "@" in parts.netloc:
        return None
    if "%" in parts.netloc:
        return None
    return href


def linkify(text: str, *, link_rel: str = "noopener noreferrer") -> str:
    """Plain ``text`` as HTML, with each http(s) URL and ``www.`` address made a link.

    Everything else is escaped (:func:`~bastion.sanitize.encoding.html_text`); links get
    ``link_rel``, and the result goes through a links-only profile once more, so it never holds
    anything but text and ``<a href rel>``. A URL with a user part, over 2048 characters, or
    that does not parse stays text. For user-written *HTML*, sanitize it instead: this function
    escapes markup, it does not keep it.
    """
    if not isinstance(text, str):
        raise TypeError(f"linkify takes text (str), not {type(text).__name__}")
    _check_rel(link_rel)
    pieces: list[str] = []
    position = 0
    for found in _URL_IN_TEXT.finditer(text):
        candidate = _trim(found.group())
        href = _link_target(candidate)
        if href is None:
            continue
        end = found.start() + len(candidate)
        pieces.append(html_text(text[position : found.start()]))
        pieces.append(f'<a href="{html_text(href)}">{html_text(candidate)}</a>')
        position = end
    pieces.append(html_text(text[position:]))
    cleaner = _LINKS if link_rel == _LINKS.link_rel else _links_with(link_rel)
    return cleaner.clean("".join(pieces))


@lru_cache(maxsize=8)
def _links_with(link_rel: str) -> HtmlProfile:
    return HtmlProfile(
        name="linkify",
        tags=frozenset({"a"}),
        attributes={"a": frozenset({"href"})},
        url_schemes=frozenset({"http", "https"}),
        relative_urls=False,
        link_rel=link_rel,
    )
