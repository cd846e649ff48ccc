"""bastion.sanitize's nh3 profiles against the XSS corpus (tests/xss_corpus.py), read back with
an HTML parser: only allowed tags and attributes survive, every URL has an allowed scheme, every
link carries rel="noopener noreferrer", and cleaning is stable (a second pass changes nothing)."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.xss_corpus import PAYLOADS

from bastion.errors import ConfigurationError
from bastion.sanitize import (
    RICH_TEXT,
    TEXT_ONLY,
    HtmlProfile,
    UnsafeURL,
    linkify,
    safe_url,
    sanitize_html,
)

URL_ATTRIBUTES = {"href", "src", "cite", "action", "formaction", "data", "poster", "background"}


class Markup(HTMLParser):
    """What a parser finds in sanitized output: elements with their attributes, comments."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.comments: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)

    def handle_decl(self, decl: str) -> None:
        self.comments.append(decl)

    def unknown_decl(self, data: str) -> None:
        self.comments.append(data)

    def handle_pi(self, data: str) -> None:
        self.comments.append(data)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(html: str) -> Markup:
    reader = Markup()
    reader.feed(html)
    reader.close()
    return reader


def assert_within(profile: HtmlProfile, html: str) -> None:
    markup = parsed(html)
    assert markup.comments == []
    for tag, attributes in markup.elements:
        assert tag in profile.tags, (tag, html)
        allowed = profile.attributes.get(tag, frozenset()) | profile.attributes.get(
            "*", frozenset()
        )
        for name, value in attributes.items():
            assert not name.startswith("on"), (name, html)
            if tag == "a" and name == "rel":
                assert value == "noopener noreferrer"
                continue
            assert name in allowed, (tag, name, html)
            if name in URL_ATTRIBUTES:
                assert value is not None
                # A network-path URL ("//host") takes the page's scheme: an http(s) link, which
                # safe_url refuses (it leaves the site unannounced) but a profile may keep.
                if value.startswith("//"):
                    assert {"http", "https"} <= profile.url_schemes
                else:
                    safe_url(value, schemes=profile.url_schemes)  # raises UnsafeURL if not
        if tag == "a":
            assert attributes.get("rel") == "noopener noreferrer", html


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
@pytest.mark.parametrize("profile", [RICH_TEXT, TEXT_ONLY], ids=lambda p: p.name)
def test_the_corpus_leaves_only_what_the_profile_allows(profile: HtmlProfile, payload: str) -> None:
    cleaned = profile.clean(payload)
    assert_within(profile, cleaned)
    assert profile.clean(cleaned) == cleaned  # stable: nothing left for a second pass to change
    assert "<script" not in cleaned.lower()
    assert (
        "javascript:"
        not in "".join(
            v or "" for _, attrs in parsed(cleaned).elements for v in attrs.values()
        ).lower()
    )


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_text_only_leaves_no_element_at_all(payload: str) -> None:
    assert parsed(TEXT_ONLY.clean(payload)).elements == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ("<p onclick=alert(1)>hi <b>there</b></p>", "<p>hi <b>there</b></p>"),
        ("<script>alert(1)</script>after", "after"),
        ('<a href="javascript:alert(1)">x</a>', '<a rel="noopener noreferrer">x</a>'),
        (
            '<a href="https://ok.example/" target="_blank" rel="opener">ok</a>',
            '<a href="https://ok.example/" rel="noopener noreferrer">ok</a>',
        ),
        (
            '<a href="/local" title="t">l</a>',
            '<a href="/local" title="t" rel="noopener noreferrer">l</a>',
        ),
        ("<img src=x onerror=alert(1)>", ""),
        ("<iframe src=//evil.example></iframe>kept?", "kept?"),
        ("<p>unclosed <em>emphasis", "<p>unclosed <em>emphasis</em></p>"),
        ("<!-- hidden -->shown", "shown"),
        ("<div>div is not allowed</div>", "div is not allowed"),
        ("a < b & c", "a &lt; b &amp; c"),
    ],
)
def test_rich_text_cleans_to_the_exact_markup(payload: str, expected: str) -> None:
    assert sanitize_html(payload) == expected


def test_text_only_keeps_text_and_drops_script_content() -> None:
    assert TEXT_ONLY.clean("<b>bold</b> <script>alert(1)</script><i>x</i> 1 < 2") == (
        "bold x 1 &lt; 2"
    )
    assert sanitize_html("<a href=https://x.example>x</a>", TEXT_ONLY) == "x"


def test_a_profile_without_relative_urls_drops_them() -> None:
    profile = HtmlProfile(
        name="mail", tags=frozenset({"a"}), attributes={"a": frozenset({"href"})},
        relative_urls=False,
    )  # fmt: skip
    assert profile.clean('<a href="/x">x</a>') == '<a rel="noopener noreferrer">x</a>'
    assert profile.clean('<a href="https://e.example/">e</a>') == (
        '<a href="https://e.example/" rel="noopener noreferrer">e</a>'
    )


def test_more_rel_tokens_may_be_added() -> None:
    profile = HtmlProfile(
        name="ugc", tags=frozenset({"a"}), attributes={"a": frozenset({"href"})},
        link_rel="noopener noreferrer nofollow ugc",
    )  # fmt: skip
    assert profile.clean("<a href=https://e.example/>e</a>") == (
        '<a href="https://e.example/" rel="noopener noreferrer nofollow ugc">e</a>'
    )


@pytest.mark.parametrize(
    ("options", "setting", "message"),
    [
        ({"tags": frozenset({"script"})}, "tags", "<script> can run script"),
        ({"tags": frozenset({"svg"})}, "tags", "<svg> can run script"),
        ({"tags": frozenset({"iframe"})}, "tags", "<iframe> can run script"),
        ({"tags": frozenset({"Bad Tag"})}, "tags", "'Bad Tag' is not a lowercase HTML tag"),
        ({"attributes": {"p": frozenset({"onclick"})}}, "attributes", "'onclick' is never"),
        ({"attributes": {"*": frozenset({"style"})}}, "attributes", "'style' is never allowed"),
        ({"attributes": {"a": frozenset({"id"})}}, "attributes", "'id' is never allowed"),
        ({"attributes": {"a": frozenset({"rel"})}}, "attributes", "'rel' is never allowed"),
        ({"attributes": {"img": frozenset({"src"})}}, "attributes", "<img>, which is not in tags"),
        ({"url_schemes": frozenset({"javascript"})}, "url_schemes", "'javascript' URLs run"),
        ({"url_schemes": frozenset({"data"})}, "url_schemes", "'data' URLs run"),
        ({"url_schemes": frozenset({"https:"})}, "url_schemes", "write 'https', without ':'"),
        ({"link_rel": "noopener"}, "link_rel", "must contain 'noopener' and 'noreferrer'"),
        ({"link_rel": "noopener noreferrer opener"}, "link_rel", "otherwise only"),
        ({"name": ""}, "name", "HtmlProfile.name must be a non-empty string"),
        ({"relative_urls": "no"}, "relative_urls", "must be True or False"),
    ],
)
def test_an_unsafe_profile_is_refused_when_built(
    options: dict[str, object], setting: str, message: str
) -> None:
    settings: dict[str, object] = {"name": "custom", "tags": frozenset({"p", "a"})} | options
    with pytest.raises(ConfigurationError, match=message) as caught:
        HtmlProfile(**settings)  # type: ignore[arg-type]
    assert caught.value.setting == setting


def test_clean_takes_text_only() -> None:
    with pytest.raises(TypeError, match="not bytes"):
        RICH_TEXT.clean(b"<b>x</b>")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "see https://example.com/docs.",
            (
                'see <a href="https://example.com/docs" rel="noopener noreferrer">'
                "https://example.com/docs</a>."
            ),
        ),
        (
            "(www.example.org)",
            '(<a href="https://www.example.org" rel="noopener noreferrer">www.example.org</a>)',
        ),
        (
            "https://en.wikipedia.org/wiki/Foo_(bar), yes",
            (
                '<a href="https://en.wikipedia.org/wiki/Foo_(bar)" rel="noopener noreferrer">'
                "https://en.wikipedia.org/wiki/Foo_(bar)</a>, yes"
            ),
        ),
        (
            'https://e.example/?a=1&b="2"',
            (
                '<a href="https://e.example/?a=1&amp;b=" rel="noopener noreferrer">'
                'https://e.example/?a=1&amp;b=</a>"2"'
            ),
        ),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("javascript:alert(1) and data:text/html,x", "javascript:alert(1) and data:text/html,x"),
        ("https://bank.example@evil.example/", "https://bank.example@evil.example/"),
        ("https://", "https://"),
        ("https://" + "a" * 2100 + ".example", "https://" + "a" * 2100 + ".example"),
        ("no links here", "no links here"),
    ],
)
def test_linkify_links_urls_and_escapes_the_rest(text: str, expected: str) -> None:
    assert linkify(text) == expected
    assert_within(
        HtmlProfile(name="links", tags=frozenset({"a"}), attributes={"a": frozenset({"href"})}),
        linkify(text),
    )


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_linkify_on_the_corpus_yields_only_links(payload: str) -> None:
    markup = parsed(linkify(payload))
    for tag, attributes in markup.elements:
        assert tag == "a"
        assert set(attributes) == {"href", "rel"}
        assert safe_url(attributes["href"] or "", schemes=frozenset({"http", "https"}))


def test_linkify_with_extra_rel_tokens_and_a_refused_rel() -> None:
    assert linkify("www.e.example", link_rel="noopener noreferrer nofollow") == (
        '<a href="https://www.e.example" rel="noopener noreferrer nofollow">www.e.example</a>'
    )
    with pytest.raises(ConfigurationError, match="must contain 'noopener'") as caught:
        linkify("x", link_rel="nofollow")
    assert caught.value.setting == "link_rel"
    with pytest.raises(TypeError, match="linkify takes text"):
        linkify(None)  # type: ignore[arg-type]


def test_unsafe_url_is_bad_data() -> None:
    with pytest.raises(UnsafeURL) as caught:
        safe_url("javascript:alert(1)")
    assert caught.value.reason == "scheme"


def test_without_nh3_the_error_names_the_extra() -> None:
    program = (
        "import sys; sys.modules['nh3'] = None\n"
        "import bastion.sanitize as s\n"
        "assert s.html_text('<') == '&lt;'\n"  # the encoders need no extra
        "s.sanitize_html('<b>x</b>')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 1
    assert (
        "ImportError: bastion.sanitize needs the 'sanitize' extra (nh3): "
        "pip install 'bastion[sanitize]'" in result.stderr
    )


FRAGMENTS = st.sampled_from(
    [
        "<", ">", "/", "=", '"', "'", "`", " ", "\n", "&", "#", ";", "!--", "-->", "<!--",
        "a", "b", "p", "script", "svg", "math", "style", "noscript", "img", "iframe", "href",
        "src", "onerror", "onclick", "javascript:", "java\tscript:", "data:", "&#106;", "x",
        "alert(1)", "</", "title", "textarea", "template", "mglyph", "![CDATA[", "]]>",
    ]
)  # fmt: skip


@given(st.lists(FRAGMENTS, max_size=40).map("".join))
@pytest.mark.parametrize("profile", [RICH_TEXT, TEXT_ONLY], ids=lambda p: p.name)
def test_random_markup_leaves_only_what_the_profile_allows(profile: HtmlProfile, html: str) -> None:
    cleaned = profile.clean(html)
    assert_within(profile, cleaned)
    assert profile.clean(cleaned) == cleaned


def test_the_package_names_resolve_and_an_unknown_one_is_an_attribute_error() -> None:
    import bastion.sanitize as package  # noqa: PLC0415

    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = package.nope
