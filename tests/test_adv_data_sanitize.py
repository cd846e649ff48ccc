"""Adversarial checks of the sanitizer's URL rules: a profile's scheme allow-list must hold for
every URL attribute it allows (``cite`` included, which nh3 does not check itself), and a
network-path reference (``//host``, ``\\\\host``, ``/\\host``) leaves the site without naming a
scheme, so it never slips past the list: the same rule as :func:`safe_url`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from bastion.errors import ConfigurationError
from bastion.sanitize import RICH_TEXT, TEXT_ONLY, HtmlProfile, linkify, sanitize_html
from bastion.sanitize.encoding import (
    UnsafeURL,
    html_attribute,
    html_text,
    js_string,
    json_script,
    safe_url,
)
from bastion.sanitize.html import MAX_START_TAGS

if TYPE_CHECKING:
    from starlette.requests import Request

MAIL_ONLY = HtmlProfile(
    name="mail_only",
    tags=frozenset({"a", "p", "img"}),
    attributes={"a": frozenset({"href"}), "img": frozenset({"src"})},
    url_schemes=frozenset({"mailto"}),
)
QUOTES = HtmlProfile(
    name="quotes",
    tags=frozenset({"blockquote", "q", "del", "ins", "p"}),
    attributes={"*": frozenset({"cite"})},
)


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<blockquote cite="javascript:alert(1)">t</blockquote>', "<blockquote>t</blockquote>"),
        ('<q cite="JaVa\tScript:alert(1)">t</q>', "<q>t</q>"),
        ('<del cite="data:text/html,x">t</del>', "<del>t</del>"),
        ('<ins cite="vbscript:x">t</ins>', "<ins>t</ins>"),
        ('<q cite="//evil.example/">t</q>', "<q>t</q>"),
        (
            '<blockquote cite="https://source.example/a">t</blockquote>',
            '<blockquote cite="https://source.example/a">t</blockquote>',
        ),
        ('<q cite="/notes/1">t</q>', '<q cite="/notes/1">t</q>'),
    ],
)
def test_cite_obeys_the_profiles_schemes(html: str, expected: str) -> None:
    assert QUOTES.clean(html) == expected


@pytest.mark.parametrize(
    "url",
    [
        "//evil.example/x",
        "\\\\evil.example/x",
        "/\\evil.example/x",
        "\\/evil.example/x",
        "\t//evil.example/x",
        " /\t/evil.example/x",
        "/\n/evil.example/x",
    ],
)
def test_a_network_path_never_passes_a_scheme_allow_list(url: str) -> None:
    link = f'<a href="{url}">x</a>'
    image = f'<img src="{url}">'
    assert MAIL_ONLY.clean(link) == '<a rel="noopener noreferrer">x</a>'
    assert MAIL_ONLY.clean(image) == "<img>"
    assert RICH_TEXT.clean(link) == '<a rel="noopener noreferrer">x</a>'


def test_allowed_urls_still_pass() -> None:
    assert MAIL_ONLY.clean('<a href="mailto:a@example.com">m</a><img src="/logo.png">') == (
        '<a href="mailto:a@example.com" rel="noopener noreferrer">m</a><img src="/logo.png">'
    )
    assert MAIL_ONLY.clean('<a href="https://example.com/">x</a>') == (
        '<a rel="noopener noreferrer">x</a>'
    )
    assert sanitize_html('<a href="https://example.com/a?b=1&amp;c=2#d">x</a>') == (
        '<a href="https://example.com/a?b=1&amp;c=2#d" rel="noopener noreferrer">x</a>'
    )
    assert sanitize_html('<a href="  https://example.com/ ">x</a>') == (
        '<a href="https://example.com/" rel="noopener noreferrer">x</a>'
    )
    assert sanitize_html('<a href="?page=2">x</a><a href="#top">t</a>') == (
        '<a href="?page=2" rel="noopener noreferrer">x</a>'
        '<a href="#top" rel="noopener noreferrer">t</a>'
    )


DEAD = '<a rel="noopener noreferrer">x</a>'
REL = 'rel="noopener noreferrer"'


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<a href="javascript&colon;alert(1)">x</a>', DEAD),
        ('<a href="&#106;avascript:alert(1)">x</a>', DEAD),
        ('<a href="jav&#x09;ascript:alert(1)">x</a>', DEAD),
        ('<a href="\x01javascript:alert(1)">x</a>', DEAD),
        ('<a href="http:javascript:alert(1)">x</a>', DEAD),
        ('<a href="x" rel="opener" target="_blank">x</a>', f'<a href="x" {REL}>x</a>'),
        ('<p style="background:url(javascript:alert(1))">x</p>', "<p>x</p>"),
        ("<p>a<!-- -- ><img src=x onerror=alert(1)> --></p>", "<p>a</p>"),
        ("<svg><script>alert(1)</script></svg>", ""),
        ("<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>", ""),
        ('<h1 id="config" class="c" name="n">t</h1>', "<h1>t</h1>"),
        (
            '<a href="https://ok.example"><a href="javascript:alert(1)">n</a></a>',
            f'<a href="https://ok.example" {REL}></a><a {REL}>n</a>',
        ),
    ],
)
def test_rich_text_on_entity_and_control_spellings(html: str, expected: str) -> None:
    assert RICH_TEXT.clean(html) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "javascript:alert(1)//https://x.example",
            f'javascript:alert(1)//<a href="https://x.example" {REL}>https://x.example</a>',
        ),
        (
            'https://x.example/"onmouseover=alert(1)',
            f'<a href="https://x.example/" {REL}>https://x.example/</a>"onmouseover=alert(1)',
        ),
        ("https://bank.example@evil.example", "https://bank.example@evil.example"),
        ("https://x.example\\@evil.example", "https://x.example\\@evil.example"),
        (
            "<https://x.example>",
            f'&lt;<a href="https://x.example" {REL}>https://x.example</a>&gt;',
        ),
    ],
)
def test_linkify_never_links_anything_but_http_urls(text: str, expected: str) -> None:
    assert linkify(text) == expected


def test_encoders_on_context_breakers() -> None:
    assert js_string("</script><!--`${x}`\u2028'\"") == (
        '"\\x3C\\x2Fscript\\x3E\\x3C\\x21\\x2D\\x2D\\x60\\x24\\x7Bx\\x7D\\x60\\u2028\\x27\\x22"'
    )
    assert html_attribute("a\"b'c`d e=f") == "a&#x22;b&#x27;c&#x60;d&#x20;e&#x3D;f"
    assert json_script({"a": "</script><!--\u2028"}) == (
        '{"a":"\\u003c/script\\u003e\\u003c!--\\u2028"}'
    )


@pytest.mark.parametrize(
    "text",
    [
        "see www.javascript:alert(1)",  # a port that is not a number
        "https://x.example:99999/",  # a port out of range
        "https://bank.example%40evil.example/",  # a percent-escape in the host
        "javascript://www.x.example%0aalert(1)",  # the www. part alone, escape in the host
    ],
)
def test_linkify_leaves_a_url_that_does_not_parse_as_text_not_a_dead_link(text: str) -> None:
    out = linkify(text)
    assert "<a" not in out
    assert out == text.replace("&", "&amp;")


@pytest.mark.parametrize(
    "name",
    ["x-init", "x-html", "x-data", "hx-get", "hx-post", "data-hx-post", "v-html", "ng-click",
     "data-ng-init", "data-bind"],
)  # fmt: skip
def test_a_profile_allowing_a_framework_script_attribute_is_refused(name: str) -> None:
    # Alpine (x-init="..."), htmx (hx-post), Vue (v-html), AngularJS (ng-*) and Knockout
    # (data-bind) run what these attributes say once their library is on the page.
    with pytest.raises(ConfigurationError) as caught:
        HtmlProfile(name="gadgets", tags=frozenset({"p"}), attributes={"p": frozenset({name})})
    assert caught.value.setting == "attributes"
    assert repr(name) in str(caught.value)


def test_harmless_data_and_aria_attributes_stay_allowed() -> None:
    profile = HtmlProfile(
        name="data", tags=frozenset({"p"}), attributes={"p": frozenset({"data-id", "aria-label"})}
    )
    assert profile.clean('<p data-id="7" aria-label="x" x-init="alert(1)">t</p>') == (
        '<p data-id="7" aria-label="x">t</p>'
    )


@pytest.mark.parametrize("control", ["\u202e", "\u202d", "\u2066", "\u2067", "\u2069", "\u200f"])
def test_linkify_ends_a_url_at_a_bidi_control(control: str) -> None:
    # "https://evil.example/\u202egro.knab" shows as ".../bank.org": the link must not carry
    # the reversed part as its text (nor in its href).
    out = linkify(f"https://evil.example/{control}gro.knab")
    assert out == (
        f'<a href="https://evil.example/" {REL}>https://evil.example/</a>{control}gro.knab'
    )


@pytest.mark.parametrize(
    ("url", "outcome"),
    [
        ("java\tscript:alert(1)", "scheme"),
        ("java\nscript:alert(1)", "scheme"),
        ("java\r\nscript:alert(1)", "scheme"),
        ("\x00\x1f javascript:alert(1)", "scheme"),
        ("JAVASCRIPT:alert(1)", "scheme"),
        ("javascript\x0b:alert(1)", "control_character"),
        ("java\x7fscript:alert(1)", "control_character"),
        ("vbscript:msgbox(1)", "scheme"),
        ("data:text/html;base64,PHNjcmlwdD4=", "scheme"),
        ("/\t/evil.example", "network_path"),
        ("\\\\evil.example", "network_path"),
        # Not schemes to a browser: relative URLs, harmless once html_attribute encodes "&".
        ("javascript&#58;alert(1)", "javascript&#58;alert(1)"),
        ("javascript&colon;alert(1)", "javascript&colon;alert(1)"),
        ("javascript%3Aalert(1)", "javascript%3Aalert(1)"),
        ("\u00a0javascript:alert(1)", "\u00a0javascript:alert(1)"),
        ("https://ok.example/a\tb", "https://ok.example/ab"),
    ],
)
def test_safe_url_reads_schemes_as_a_browser_does(url: str, outcome: str) -> None:
    if outcome in {"scheme", "control_character", "network_path"}:
        with pytest.raises(UnsafeURL) as caught:
            safe_url(url)
        assert caught.value.reason == outcome
        return
    assert safe_url(url) == outcome
    if outcome.startswith("javascript&"):  # in an href, the "&" cannot start a reference
        assert html_attribute(safe_url(url)).startswith("javascript&#x26;")


def surrogate_app() -> Starlette:
    async def hello(request: Request) -> HTMLResponse:
        name = (await request.json())["name"]  # JSON may carry a lone surrogate: "\ud800"
        return HTMLResponse(f'<p title="{html_attribute(name)}">{html_text(name)}</p>')

    return Starlette(routes=[Route("/hello", hello, methods=["POST"])])


@pytest.mark.asyncio
async def test_encoded_text_with_a_lone_surrogate_can_still_be_sent() -> None:
    transport = httpx.ASGITransport(surrogate_app())
    async with httpx.AsyncClient(transport=transport, base_url="https://localhost") as client:
        response = await client.post(
            "/hello",
            content=b'{"name": "a\\ud800b\\udfffc"}',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 200
    assert response.text == '<p title="a\ufffdb\ufffdc">a\ufffdb\ufffdc</p>'
    assert html_text("\ud83d\ude00") == "\ufffd\ufffd"  # a pair written apart is two halves


def test_the_sanitizer_turns_lone_surrogates_into_replacement_characters() -> None:
    assert sanitize_html("a\ud800b <b>x</b>\udfff") == "a\ufffdb <b>x</b>\ufffd"
    assert MAIL_ONLY.clean('<a href="mailto:a\ud800@example.com">m</a>') == (
        '<a href="mailto:a\ufffd@example.com" rel="noopener noreferrer">m</a>'
    )
    assert linkify("https://x.example/\ud800") == (
        '<a href="https://x.example/\ufffd" rel="noopener noreferrer">https://x.example/\ufffd</a>'
    )


def test_linkify_trims_trailing_punctuation_in_linear_time() -> None:
    # One 1 MiB comment of ")" after a URL (the default body cap): counting the parentheses
    # again for every character trimmed took minutes of CPU (about 0.8 s at 40 KB already).
    text = "https://x.example/" + ")" * (1024 * 1024)
    started = time.perf_counter()
    out = linkify(text)
    elapsed = time.perf_counter() - started
    assert out == (
        f'<a href="https://x.example/" {REL}>https://x.example/</a>' + ")" * (1024 * 1024)
    )
    assert elapsed < 5.0  # linear: well under a second here; quadratic: hundreds of seconds
    assert linkify("(see https://en.example/wiki/Foo_(bar)).") == (
        f'(see <a href="https://en.example/wiki/Foo_(bar)" {REL}>'
        "https://en.example/wiki/Foo_(bar)</a>)."
    )


@pytest.mark.parametrize("tag", ["<div>", "<ul>", "<blockquote>", "<div></span>"])
def test_deeply_nested_markup_is_not_quadratic(tag: str) -> None:
    # html5ever's tree builder scans its stack of open elements per tag: 20,000 nested <div>
    # took a second, a 1 MiB body of them minutes. Past MAX_START_TAGS the input is escaped
    # text instead (safe, linear), never parsed.
    html = tag * (1024 * 1024 // len(tag))
    started = time.perf_counter()
    out = sanitize_html(html)
    elapsed = time.perf_counter() - started
    assert out == html_text(html)
    assert elapsed < 5.0


def test_markup_up_to_the_tag_limit_is_sanitized_as_usual() -> None:
    html = "<br>" * MAX_START_TAGS  # the limit counts "<", close tags included
    assert sanitize_html(html) == html
    assert sanitize_html(html + "<p>") == html_text(html + "<p>")
    assert TEXT_ONLY.clean("<b>" * (MAX_START_TAGS + 1)) == "&lt;b&gt;" * (MAX_START_TAGS + 1)
