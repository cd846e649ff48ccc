"""bastion.sanitize's output encoders: each corpus payload, encoded for its context and read back
by the parser of that context (an HTML parser, a URL decoder, Node's JavaScript engine, a JSON
parser), comes back as exactly the same text and never as markup or code."""

from __future__ import annotations

import json
import subprocess
from html.parser import HTMLParser
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pytest
from tests.node_tools import node
from tests.xss_corpus import PAYLOADS

from bastion.sanitize import (
    UnsafeURL,
    html_attribute,
    html_text,
    js_string,
    json_script,
    safe_url,
    url_component,
)

if TYPE_CHECKING:
    from pathlib import Path

EXTRA = ("\ud800 lone surrogate", "\x80\x9f C1 controls", "NUL\x00byte", "tab\tand\r\nCRLF")
VALUES = (*PAYLOADS, *EXTRA)


class Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text += data


def read(html: str) -> Reader:
    reader = Reader()
    reader.feed(html)
    reader.close()
    return reader


# Python's html.parser drops references to C0 controls and DEL (a browser keeps them, as the
# HTML standard says); NUL becomes U+FFFD in both.
_DROPPED_BY_PYTHON = dict.fromkeys([*range(1, 9), 0x0B, *range(0x0E, 0x20), 0x7F])


def as_html_reads_it(value: str) -> str:
    return value.replace("\x00", "\ufffd").translate(_DROPPED_BY_PYTHON)


@pytest.mark.parametrize("value", PAYLOADS, ids=range(len(PAYLOADS)))
def test_html_text_reads_back_as_the_same_text(value: str) -> None:
    reader = read(f"<div>{html_text(value)}</div>")
    assert reader.elements == [("div", {})]
    assert reader.text == value.replace("\x00", "\ufffd")


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
@pytest.mark.parametrize("quote", ['"', "'", ""], ids=["double", "single", "unquoted"])
def test_html_attribute_cannot_leave_the_value(quote: str, value: str) -> None:
    if "\ud800" in value or (value == "" and quote == ""):
        return  # a lone surrogate cannot be written to a page; an empty value needs quotes
    encoded = html_attribute(value)
    assert encoded.isalnum() or not set(encoded) & set("\"'<>=` \t\n\r")
    reader = read(f"<div title={quote}{encoded}{quote} class=x>")
    assert reader.elements == [("div", {"title": as_html_reads_it(value), "class": "x"})]


def test_the_encoders_exact_outputs() -> None:
    assert html_text("<a href='x'>&\"</a>") == "&lt;a href=&#x27;x&#x27;&gt;&amp;&quot;&lt;/a&gt;"
    assert html_attribute('a "b"=c') == "a&#x20;&#x22;b&#x22;&#x3D;c"
    assert html_attribute("café\x80") == "caf\u00e9\x80"  # non-ASCII passes through unchanged
    assert url_component("a b/c?d=e&f#g") == "a%20b%2Fc%3Fd%3De%26f%23g"
    assert js_string("it's </script>") == '"it\\x27s\\x20\\x3C\\x2Fscript\\x3E"'
    assert js_string("\u2028") == '"\\u2028"'
    assert json_script({"x": "</script><!--"}) == '{"x":"\\u003c/script\\u003e\\u003c!--"}'


@pytest.mark.parametrize("encoder", [html_text, html_attribute, url_component, js_string])
def test_the_encoders_take_text_only(encoder: object) -> None:
    with pytest.raises(TypeError, match="encodes text \\(str\\), not bytes"):
        encoder(b"x")  # type: ignore[operator]


@pytest.mark.parametrize("value", PAYLOADS, ids=range(len(PAYLOADS)))
def test_url_component_is_one_segment(value: str) -> None:
    encoded = url_component(value)
    assert not set(encoded) & set("/?#&=:;@ <>\"'\\")
    assert unquote(encoded) == value


def test_js_string_evaluates_to_the_same_string_in_node(tmp_path: Path) -> None:
    program = tmp_path / "literals.js"
    literals = ",\n".join(js_string(value) for value in VALUES)
    program.write_text(
        f"const values = [\n{literals}\n];\nprocess.stdout.write(JSON.stringify(values));\n",
        encoding="utf-8",
    )
    for value in VALUES:
        body = js_string(value)[1:-1]
        assert not set(body) & set("\"'<>&\n\r\u2028\u2029`$")
    result = subprocess.run(
        [str(node()), str(program)], capture_output=True, check=True, timeout=60
    )
    assert json.loads(result.stdout.decode("utf-8", errors="surrogatepass")) == list(VALUES)


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_json_script_cannot_close_the_script(value: str) -> None:
    data = {"bio": value, "list": [value, 1, None, True]}
    encoded = json_script(data)
    assert "<" not in encoded
    assert ">" not in encoded
    assert "&" not in encoded
    assert json.loads(encoded) == data


def test_json_script_refuses_what_json_cannot_say() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        json_script(float("nan"))
    with pytest.raises(TypeError, match="not JSON serializable"):
        json_script(object())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("javascript:alert(1)", "scheme"),
        ("JaVaScRiPt:alert(1)", "scheme"),
        (" \x01javascript:alert(1)", "scheme"),
        ("java\tscript:alert(1)", "scheme"),
        ("java\nscript:alert(1)", "scheme"),
        ("vbscript:msgbox(1)", "scheme"),
        ("data:text/html,<script>alert(1)</script>", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("//evil.example/", "network_path"),
        ("\\\\evil.example/", "network_path"),
        ("/\\evil.example/", "network_path"),
        ("\\/evil.example/", "network_path"),
        ("https://ok.\x00example/", "control_character"),
        ("/path\x7f", "control_character"),
    ],
)
def test_safe_url_refuses_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL) as caught:
        safe_url(url)
    assert caught.value.reason == reason
    assert url not in str(caught.value)  # the attacker's URL is not echoed


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://ok.example/a?b=c#d", "https://ok.example/a?b=c#d"),
        ("  HTTP://ok.example/  ", "HTTP://ok.example/"),
        ("mailto:someone@ok.example", "mailto:someone@ok.example"),
        ("/account/profile", "/account/profile"),
        ("profile?tab=1", "profile?tab=1"),
        ("#top", "#top"),
        ("javascript&colon;alert(1)", "javascript&colon;alert(1)"),  # a relative path, as text
        ("ht\ntps://ok.example/", "https://ok.example/"),
    ],
)
def test_safe_url_accepts_allowed_schemes_and_relative_urls(url: str, expected: str) -> None:
    assert safe_url(url) == expected


def test_safe_url_options() -> None:
    assert safe_url("tel:+1555", schemes=frozenset({"tel"})) == "tel:+1555"
    with pytest.raises(UnsafeURL) as caught:
        safe_url("/x", relative=False)
    assert caught.value.reason == "relative"
    with pytest.raises(UnsafeURL) as caught:
        safe_url(None)  # type: ignore[arg-type]
    assert caught.value.reason == "not_text"
    # once checked, the URL is attribute-encoded for its href: it stays one attribute value
    href = html_attribute(safe_url('https://ok.example/?q="><script>'))
    reader = read(f"<a href={href}>x</a>")
    assert reader.elements == [("a", {"href": 'https://ok.example/?q="><script>'})]


@pytest.mark.parametrize("segment", [".", ".."])
def test_url_component_refuses_a_dot_segment(segment: str) -> None:
    with pytest.raises(UnsafeURL) as refused:
        url_component(segment)
    assert refused.value.reason == "dot_segment"
    # Longer runs of dots are ordinary names, and a dot inside a name is kept as it is.
    assert url_component("...") == "..."
    assert url_component("a..b") == "a..b"
