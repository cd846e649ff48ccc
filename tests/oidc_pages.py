"""The forms of the test OpenID Provider's pages, read with the standard library's HTML parser.

``oidc-provider``'s development pages (tests/oidc_support.py drives them over HTTP): the login
form (hidden ``prompt=login``, ``login``, ``password``), the consent form (hidden
``prompt=consent``), the "Cancel" link of both (``/interaction/<uid>/abort``), and the
RP-initiated logout confirmation (``op.logoutForm`` with a hidden ``xsrf`` and the
``logout=yes`` button).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = ["Form", "logout_form", "next_step", "read_page"]


@dataclass(slots=True, kw_only=True)
class Form:
    action: str
    method: str
    form_id: str
    fields: dict[str, str] = field(default_factory=dict)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.links: list[str] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._open = Form(
                action=values.get("action", ""),
                method=values.get("method", "get").upper(),
                form_id=values.get("id", ""),
            )
            self.forms.append(self._open)
        elif tag == "input" and self._open is not None and "name" in values:
            self._open.fields[values["name"]] = values.get("value", "")
        elif tag == "a" and values.get("href"):
            self.links.append(values["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def read_page(html: str) -> _PageParser:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    return parser


def _page_error(response: httpx.Response) -> AssertionError:
    from oidc_support import ProviderPageError  # noqa: PLC0415 (a cycle otherwise)

    return ProviderPageError(response.status_code, str(response.url), response.text)


def next_step(
    response: httpx.Response, username: str, password: str, *, deny: bool
) -> tuple[str, str, dict[str, str]]:
    """The request (method, URL, form) that answers a login or consent page."""
    if response.status_code != 200:
        raise _page_error(response)
    page = read_page(response.text)
    form = next((f for f in page.forms if f.fields.get("prompt") in {"login", "consent"}), None)
    if form is None:
        raise _page_error(response)
    if deny:
        abort = next((link for link in page.links if link.rstrip("/").endswith("/abort")), None)
        if abort is None:
            raise _page_error(response)
        return "GET", str(response.url.join(abort)), {}
    fields = dict(form.fields)
    if fields["prompt"] == "login":
        fields["login"] = username
        fields["password"] = password
    return form.method, str(response.url.join(form.action)), fields


def logout_form(response: httpx.Response) -> tuple[str, str, dict[str, str]]:
    """The request that confirms the provider's logout page ("Yes, sign me out")."""
    if response.status_code != 200:
        raise _page_error(response)
    page = read_page(response.text)
    form = next((f for f in page.forms if f.form_id == "op.logoutForm"), None)
    if form is None:
        raise _page_error(response)
    return form.method, str(response.url.join(form.action)), {**form.fields, "logout": "yes"}
