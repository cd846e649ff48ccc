"""Helpers for an app's own tests: send requests that pass bastion's CSRF checks.

Two ways, matching the two ways browsers pass:

* Like a current browser: :func:`browser_headers` gives the ``Sec-Fetch-Site`` and ``Origin``
  headers of a same-origin request. No token is needed; the body is never read.
* Like an old browser (or to test the token path): :func:`fetch_token` loads a page of the app
  with the test client and takes the token from its ``csrf_input()`` field (or a
  ``<meta name="csrf-token">`` tag, or a JSON ``{"csrf_token": ...}`` body). Send it back as the
  ``csrf_token`` form field or in :func:`token_headers`.

They work with any client whose ``get(url)`` returns a response with ``.text`` (Starlette's and
FastAPI's ``TestClient``, httpx, Flask's and Werkzeug's test clients); :func:`afetch_token` is
the awaitable twin for ``httpx.AsyncClient``. The client must keep cookies between requests
(they all do by default): the token belongs to the session cookie the page set.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from bastion.core.csrf import DEFAULT_FIELD_NAME, DEFAULT_HEADER_NAME
from bastion.errors import BadToken

__all__ = [
    "BROWSER_ACCEPT",
    "afetch_token",
    "browser_headers",
    "fetch_token",
    "find_token",
    "token_headers",
]

BROWSER_ACCEPT: Final = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
"""The ``Accept`` of a browser navigation or form submission (Firefox and Chromium)."""

_META: Final = re.compile(
    r"""<meta\s+name=["']csrf-token["']\s+content=["']([A-Za-z0-9_.-]+)["']""", re.IGNORECASE
)


def browser_headers(
    origin: str = "https://testserver", *, site: str = "same-origin"
) -> dict[str, str]:
    """The headers a current browser sends on a form submission from ``origin`` to the app.

    ``site`` is the ``Sec-Fetch-Site`` value: ``"same-origin"`` passes; ``"cross-site"`` or
    ``"same-site"`` let a test check that forged requests are refused. ``Accept`` is a
    navigation's, so bastion's refusals come back as the pages a browser gets, not JSON
    (:mod:`bastion.core.refusal`).
    """
    return {"Sec-Fetch-Site": site, "Origin": origin, "Accept": BROWSER_ACCEPT}


def find_token(text: str, *, field_name: str = DEFAULT_FIELD_NAME) -> str:
    """The CSRF token in a page or JSON body. Raises :class:`~bastion.errors.BadToken` when
    there is none (the page does not call ``csrf_input()`` / ``csrf_token()``)."""
    field = re.compile(
        rf"""name=["']{re.escape(field_name)}["']\s+value=["']([A-Za-z0-9_.-]+)["']"""
    )
    match = field.search(text) or _META.search(text)
    if match is not None:
        return match.group(1)
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        for key in (field_name, "token"):
            value = payload.get(key)
            if isinstance(value, str):
                return value
    raise BadToken(
        f"no CSRF token in the response: render {{{{ csrf_input() }}}} (a field named "
        f'{field_name!r}) or <meta name="csrf-token" content="{{{{ csrf_token() }}}}">'
    )


def _text(response: Any) -> str:
    text = getattr(response, "text", None)
    if isinstance(text, str):
        return text
    return str(response.get_data(as_text=True))


def fetch_token(client: Any, url: str = "/", *, field_name: str = DEFAULT_FIELD_NAME) -> str:
    """GET ``url`` with ``client`` and return the CSRF token the page carries."""
    return find_token(_text(client.get(url)), field_name=field_name)


async def afetch_token(client: Any, url: str = "/", *, field_name: str = DEFAULT_FIELD_NAME) -> str:
    """:func:`fetch_token` for an async client (``httpx.AsyncClient``)."""
    response = await client.get(url)
    return find_token(_text(response), field_name=field_name)


def token_headers(
    client: Any,
    url: str = "/",
    *,
    header_name: str = DEFAULT_HEADER_NAME,
    field_name: str = DEFAULT_FIELD_NAME,
) -> dict[str, str]:
    """``{"X-CSRF-Token": <token>}`` from the page at ``url``, for JSON and fetch-style calls."""
    return {header_name: fetch_token(client, url, field_name=field_name)}
