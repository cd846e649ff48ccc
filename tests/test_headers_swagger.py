"""FastAPI's Swagger UI (/docs) works under the CSP bastion ships for it.

README used to say ``overrides={"/docs": "relaxed"}``; that CSP blocks Swagger UI (a CDN script
and a nonce-less inline script). ``fastapi_swagger_ui_policy(app)`` is the policy for it: each
script of the real /docs page (and of /docs/oauth2-redirect) is checked against the CSP the
middleware sent with it, by its URL or the SHA-256 of its text, as a browser checks it.
"""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bastion.asgi.headers import SecurityHeadersMiddleware, fastapi_swagger_ui_policy
from bastion.core.headers import HeaderPolicy, swagger_ui_policy
from bastion.errors import ConfigurationError


class Assets(HTMLParser):
    """Scripts and stylesheets of a page: external URLs and inline texts."""

    def __init__(self) -> None:
        super().__init__()
        self.script_urls: list[str] = []
        self.inline_scripts: list[str] = []
        self.stylesheets: list[str] = []
        self._inline: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script":
            if found.get("src"):
                self.script_urls.append(str(found["src"]))
            else:
                self._inline = []
        elif tag == "link" and "stylesheet" in (found.get("rel") or "").split():
            self.stylesheets.append(str(found["href"]))

    def handle_data(self, data: str) -> None:
        if self._inline is not None:
            self._inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._inline is not None:
            self.inline_scripts.append("".join(self._inline))
            self._inline = None


def directives(csp: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for piece in csp.split(";"):
        words = piece.split()
        if words:
            out[words[0]] = words[1:]
    return out


def allows_url(sources: list[str], url: str) -> bool:
    """CSP source matching of an absolute URL (exact URL, or an origin as host-source)."""
    if url.startswith("/"):
        return "'self'" in sources
    return any(
        url == source or (not source.startswith("'") and url.startswith(source.rstrip("/") + "/"))
        for source in sources
    )


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def check_page(html: str, csp: str) -> None:
    assets = Assets()
    assets.feed(html)
    policy = directives(csp)
    script = policy.get("script-src", policy.get("default-src", []))
    style = policy.get("style-src", policy.get("default-src", []))
    assert assets.script_urls or assets.inline_scripts
    for url in assets.script_urls:
        assert allows_url(script, url), f"script {url} blocked by script-src {script}"
    for text in assets.inline_scripts:
        assert sha256(text) in script, f"inline script blocked: {text[:60]!r}"
    for url in assets.stylesheets:
        assert allows_url(style, url), f"stylesheet {url} blocked by style-src {style}"
    # Host sources count only without 'strict-dynamic'; nothing inline runs unhashed.
    assert "'strict-dynamic'" not in script
    assert "'unsafe-inline'" not in script
    assert "'unsafe-eval'" not in script
    assert "'self'" in policy["connect-src"]  # Swagger UI fetches /openapi.json
    assert policy["object-src" if "object-src" in policy else "default-src"] == ["'none'"]
    # The CDN hosts every npm package: only the exact files are allowed, not the host.
    assert "https://cdn.jsdelivr.net" not in script


async def fetch(app: Any, path: str, root_path: str = "") -> httpx.Response:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
        return await http.get(path)


def fastapi_app(**kwargs: Any) -> FastAPI:
    app = FastAPI(**kwargs)

    @app.get("/items")
    async def items() -> list[int]:
        return [1, 2]

    return app


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {
            "title": "Inventory </script>",
            "swagger_ui_parameters": {"deepLinking": False, "syntaxHighlight": False},
            "swagger_ui_init_oauth": {"clientId": "docs"},
        },
    ],
)
@pytest.mark.asyncio
async def test_swagger_ui_scripts_are_allowed_by_the_shipped_policy(kwargs: dict[str, Any]) -> None:
    inner = fastapi_app(**kwargs)
    app = SecurityHeadersMiddleware(inner, overrides={"/docs/*": fastapi_swagger_ui_policy(inner)})
    for path in ("/docs", "/docs/oauth2-redirect"):
        page = await fetch(app, path)
        assert page.status_code == 200
        check_page(page.text, page.headers["content-security-policy"])
    # The rest of the app keeps the strict preset.
    api = await fetch(app, "/items")
    assert "'strict-dynamic'" in api.headers["content-security-policy"]


@pytest.mark.asyncio
async def test_the_relaxed_preset_readme_used_to_advise_blocks_swagger_ui() -> None:
    inner = fastapi_app()
    app = SecurityHeadersMiddleware(inner, overrides={"/docs": "relaxed"})
    page = await fetch(app, "/docs")
    with pytest.raises(AssertionError, match="blocked"):
        check_page(page.text, page.headers["content-security-policy"])


@pytest.mark.asyncio
async def test_the_policy_follows_the_root_path() -> None:
    # Behind a proxy that strips /api (uvicorn --root-path /api): the page names
    # /api/openapi.json, so its inline script, and the hash, differ. Overrides name the full
    # path the client asked for (mount prefix included), as every layer matches it.
    inner = fastapi_app()
    app = SecurityHeadersMiddleware(
        inner, overrides={"/api/docs/*": fastapi_swagger_ui_policy(inner, root_path="/api")}
    )
    page = await fetch(app, "/docs", root_path="/api")
    assert "/api/openapi.json" in page.text
    check_page(page.text, page.headers["content-security-policy"])


def test_the_policy_is_a_validated_policy_without_weaknesses() -> None:
    policy = fastapi_swagger_ui_policy(fastapi_app())
    assert isinstance(policy, HeaderPolicy)
    assert policy.weaknesses() == ()
    policy.check_environment(production=True)  # refused nowhere, production included
    with pytest.raises(ConfigurationError) as caught:
        fastapi_swagger_ui_policy(fastapi_app(docs_url=None))
    assert caught.value.setting == "docs_url"
    with pytest.raises(ConfigurationError) as caught:
        swagger_ui_policy("<p>no script here</p>")
    assert caught.value.setting == "pages"
