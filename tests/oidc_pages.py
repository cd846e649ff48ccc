"""The test OpenID Provider's pages driven over HTTP: ``complete_login``, ``complete_logout``.

tests/oidc_support.py re-exports both. The pages are ``oidc-provider``'s development ones, read
with the standard library's HTML parser: the login form (hidden ``prompt=login``, ``login``,
``password``), the consent form (hidden ``prompt=consent``), the "Cancel" link of both
(``/interaction/<uid>/abort``), and the RP-initiated logout confirmation (``op.logoutForm``
with a hidden ``xsrf`` and the ``logout=yes`` button).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = [
    "Form",
    "ProviderPageError",
    "complete_login",
    "complete_logout",
    "logout_form",
    "next_step",
    "read_page",
]


class ProviderPageError(AssertionError):
    """The provider answered a page that :func:`complete_login` cannot go on from."""

    def __init__(self, status: int, url: str, text: str) -> None:
        super().__init__(f"{status} at {url}: {text[:600]}")
        self.status = status
        self.url = url
        self.text = text


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


# -- the provider's pages, driven over HTTP ---------------------------------------------------


def complete_login(
    client: httpx.Client,
    authorize_url: str,
    username: str,
    password: str,
    *,
    deny: bool = False,
    max_steps: int = 12,
) -> str:
    """Sign in at the provider's own pages and return the redirect back to the client.

    Follows ``authorize_url`` through the provider's login and consent forms (posting them as a
    browser would, cookies in ``client``) and returns the first URL outside the provider: the
    client's redirect URI with ``code``, ``state`` and ``iss`` (or ``error``). A page the flow
    cannot go on from (a wrong password, the provider's error page) raises
    :class:`ProviderPageError`. ``deny=True`` cancels at the first page (``access_denied``).
    """
    provider = _origin(authorize_url)
    method, url, form = "GET", authorize_url, None
    for _ in range(max_steps):
        response = client.request(method, url, data=form, follow_redirects=False)
        if response.is_redirect:
            target = str(response.url.join(response.headers["location"]))
            if _origin(target) != provider:
                return target
            method, url, form = "GET", target, None
            continue
        method, url, form = next_step(response, username, password, deny=deny)
    raise ProviderPageError(0, url, f"no redirect back to the client within {max_steps} steps")


def complete_logout(client: httpx.Client, end_session_url: str, *, max_steps: int = 6) -> str:
    """Confirm RP-initiated logout at the provider's page; return the URL it sends back to
    (``post_logout_redirect_uri`` with ``state``, or the provider's own success page)."""
    provider = _origin(end_session_url)
    method, url, form = "GET", end_session_url, None
    for _ in range(max_steps):
        response = client.request(method, url, data=form, follow_redirects=False)
        if response.is_redirect:
            target = str(response.url.join(response.headers["location"]))
            if _origin(target) != provider:
                return target
            method, url, form = "GET", target, None
            continue
        if response.status_code == 200 and "op.logoutForm" not in response.text:
            return str(response.url)  # the provider's success page
        method, url, form = logout_form(response)
    raise ProviderPageError(0, url, f"logout did not finish within {max_steps} steps")


def _origin(url: str) -> str:
    import httpx  # noqa: PLC0415

    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
