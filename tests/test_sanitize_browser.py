"""The XSS corpus in a real browser (Chromium through Playwright, no network): every payload
through both profiles, linkify and each encoder on one page, read back by Chromium's own parser.
No script runs (alert, confirm, prompt and print are trapped), the DOM holds only what each
profile allows, and the encoded values come back exactly: element text, attribute values, script
literals, event-handler literals (js_string inside html_attribute) and JSON data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from tests.xss_corpus import PAYLOADS

from bastion.sanitize import (
    RICH_TEXT,
    TEXT_ONLY,
    html_attribute,
    html_text,
    js_string,
    json_script,
    linkify,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Page

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the dev extra has it
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
ORIGIN = "https://app.example"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check"]

TRAP = """<script>
window.__fired = [];
window.__values = [];
window.__clicked = [];
for (const name of ["alert", "confirm", "prompt", "print"]) {
  window[name] = (...args) => { window.__fired.push(name + ":" + args.join(",")); };
}
</script>"""

READ_BACK = """() => {
  const out = {rich: [], text: [], links: [], encoded: [], titles: []};
  const describe = (root) => Array.from(root.querySelectorAll("*")).map((el) => ({
    tag: el.localName, ns: el.namespaceURI, attrs: el.getAttributeNames(),
    href: el.localName === "a" && el.hasAttribute("href") ? el.href : null,
    rel: el.getAttribute("rel"),
  }));
  for (const el of document.querySelectorAll(".rich")) out.rich.push(describe(el));
  for (const el of document.querySelectorAll(".text")) out.text.push(describe(el));
  for (const el of document.querySelectorAll(".links")) out.links.push(describe(el));
  for (const el of document.querySelectorAll(".encoded")) out.encoded.push(el.textContent);
  for (const el of document.querySelectorAll(".attr")) out.titles.push(el.getAttribute("title"));
  for (const el of document.querySelectorAll("button.handler")) el.click();
  out.data = JSON.parse(document.getElementById("data").textContent);
  out.values = window.__values;
  out.clicked = window.__clicked;
  out.fired = window.__fired;
  return out;
}"""


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}: .ci/run must install it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    if sync_playwright is None:
        _missing("the playwright package is not installed")
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        opened = browser.new_page()
        # The page is served from a made-up origin, so relative links resolve as on a site;
        # every other request is refused: nothing leaves the machine.
        opened.route("**/*", lambda route: route.abort())
        opened.route(
            ORIGIN + "/",
            lambda route: route.fulfill(
                status=200, content_type="text/html; charset=utf-8", body=build_page()
            ),
        )
        yield opened
        browser.close()


def build_page() -> str:
    parts = [f"<!doctype html><html><head><meta charset=utf-8>{TRAP}</head><body>"]
    for value in PAYLOADS:
        handler = f"window.__clicked.push({js_string(value)})"
        parts.append(
            f'<div class="rich">{RICH_TEXT.clean(value)}</div>'
            f'<div class="text">{TEXT_ONLY.clean(value)}</div>'
            f'<div class="links">{linkify(value)}</div>'
            f'<div class="encoded">{html_text(value)}</div>'
            f"<div class=attr title={html_attribute(value)}></div>"
            f"<script>window.__values.push({js_string(value)});</script>"
            f"<button class=handler onclick={html_attribute(handler)}>x</button>"
        )
    parts.append(f'<script type="application/json" id="data">{json_script(list(PAYLOADS))}')
    parts.append("</script></body></html>")
    return "".join(parts)


def as_parsed(value: str) -> str:
    """What the HTML parser makes of raw text: newlines normalized, NUL replaced."""
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")


@pytest.fixture(scope="module")
def seen(page: Page) -> dict[str, Any]:
    page.goto(ORIGIN + "/", wait_until="load")
    result: dict[str, Any] = page.evaluate(READ_BACK)
    return result


def test_no_payload_runs_script(seen: dict[str, Any]) -> None:
    assert seen["fired"] == []


def _check(elements: list[dict[str, Any]], tags: frozenset[str], allowed: set[str]) -> None:
    for element in elements:
        assert element["ns"] == "http://www.w3.org/1999/xhtml"
        assert element["tag"] in tags, element
        assert not [name for name in element["attrs"] if name.startswith("on")]
        assert set(element["attrs"]) <= allowed | {"rel"}, element
        if element["tag"] == "a":
            assert element["rel"] == "noopener noreferrer"
            if element["href"] is not None:
                assert element["href"].split(":", 1)[0] in {"http", "https", "mailto"}


@pytest.mark.parametrize("index", range(len(PAYLOADS)))
def test_chromium_finds_only_what_each_profile_allows(seen: dict[str, Any], index: int) -> None:
    _check(seen["rich"][index], RICH_TEXT.tags, {"href", "title"})
    assert seen["text"][index] == []
    _check(seen["links"][index], frozenset({"a"}), {"href"})


def test_the_encoded_values_come_back_exactly(seen: dict[str, Any]) -> None:
    assert seen["encoded"] == [as_parsed(value) for value in PAYLOADS]
    assert seen["titles"] == [value.replace("\x00", "\ufffd") for value in PAYLOADS]
    assert seen["values"] == list(PAYLOADS)
    assert seen["clicked"] == list(PAYLOADS)
    assert seen["data"] == json.loads(json.dumps(list(PAYLOADS)))
