"""A header policy for Swagger UI pages, derived from their HTML (:func:`swagger_ui_policy`)."""

from __future__ import annotations

import base64
import hashlib
from html.parser import HTMLParser
from typing import TYPE_CHECKING

from bastion.core.headers.csp import ContentSecurityPolicy
from bastion.core.headers.policy import _resolve_policy
from bastion.core.headers.vocabulary import Preset
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from bastion.core.headers.policy import HeaderPolicy

__all__ = ["swagger_ui_policy"]


class _PageAssets(HTMLParser):
    """The scripts, stylesheets and icons an HTML page loads, and its inline scripts' texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self.inline_scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.icons: list[str] = []
        self._inline: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "script":
            if found.get("src"):
                self.scripts.append(found["src"])
            else:
                self._inline = []
        elif tag == "link" and found.get("href"):
            rel = found.get("rel", "").lower().split()
            if "stylesheet" in rel:
                self.stylesheets.append(found["href"])
            elif "icon" in rel:
                self.icons.append(found["href"])

    def handle_data(self, data: str) -> None:
        if self._inline is not None:
            self._inline.append(data)  # a script's text is raw: no character references

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._inline is not None:
            self.inline_scripts.append("".join(self._inline))
            self._inline = None


def _sha256_source(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def _url_sources(urls: Iterable[str]) -> list[str]:
    """Each absolute URL as itself (a path-exact host-source); a relative one as ``'self'``."""
    out: list[str] = []
    for url in urls:
        source = url if url.startswith(("https://", "http://")) else "'self'"
        if source not in out:
            out.append(source)
    return out


def swagger_ui_policy(
    *pages: str, base: HeaderPolicy | Preset | str = Preset.STRICT
) -> HeaderPolicy:
    """The policy for Swagger UI pages (FastAPI's ``/docs`` and ``/docs/oauth2-redirect``, or
    any app's), from their HTML: ``base`` with a CSP that allows what the pages load and
    nothing more.

    Swagger UI loads a bundle and a stylesheet from a CDN and starts with an inline script that
    carries no nonce, so no nonce-based preset runs it. Here each external script and
    stylesheet is allowed by its full URL (``cdn.jsdelivr.net`` serves every npm package: the
    host alone would let an injected tag load any of them), each inline script by the SHA-256
    of its text, with no ``'strict-dynamic'`` (it would make browsers ignore the URLs). Styles
    add ``'unsafe-inline'``: Swagger UI writes ``style`` attributes, and CSS cannot run script.
    Images allow ``data:`` (the stylesheet's icons) and the page's favicon; ``connect-src
    'self'`` lets it fetch the OpenAPI document and try requests; COEP is left out (the CDN
    files do not opt in to being embedded). :func:`bastion.asgi.headers.fastapi_swagger_ui_policy`
    renders FastAPI's pages for this function.

    Danger: the hashes are those of these exact pages. Pass pages rendered from the app's
    configuration, never ones holding request data, and build the policy again when the pages
    change (another title, other Swagger UI parameters).
    """
    assets = _PageAssets()
    for page in pages:
        assets.feed(page)
        assets.close()
    if not assets.scripts and not assets.inline_scripts:
        raise ConfigurationError(
            "swagger_ui_policy(): the pages load no script; pass the HTML of the Swagger UI "
            "pages (FastAPI: fastapi_swagger_ui_policy(app))",
            setting="pages",
        )
    script = _url_sources(assets.scripts)
    script += list(dict.fromkeys(map(_sha256_source, assets.inline_scripts)))
    csp = ContentSecurityPolicy(
        default_src="'none'",
        script_src=script,
        style_src=[*_url_sources(["/", *assets.stylesheets]), "'unsafe-inline'"],
        img_src=[*_url_sources(["/", *assets.icons]), "data:"],
        font_src=["'self'", "data:"],
        connect_src="'self'",
        form_action="'self'",
        base_uri="'none'",
        frame_ancestors="'none'",
    )
    return _resolve_policy(base).replace(csp_policy=csp, coep_policy=None)
