"""The app tests/test_observatory.py serves over HTTPS: ``uvicorn tests.observatory_app:app``.

A small HTML page behind the default (strict) :class:`SecurityHeadersMiddleware`, with a nonced
inline script and style, and two cookies written through
:class:`~bastion.core.cookies.Cookie` standing in for bastion's session and CSRF cookies
(``__Host-`` prefix, ``Secure``, ``HttpOnly``, ``SameSite=Lax``).
"""

from __future__ import annotations

import html
import secrets
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from bastion.asgi.headers import SecurityHeadersMiddleware, csp_nonce
from bastion.core.cookies import Cookie

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["SESSION_COOKIE", "app"]

SESSION_COOKIE = Cookie(name="__Host-bastion-session", max_age=3600)
CSRF_COOKIE = Cookie(name="__Host-bastion-csrf")

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bastion observatory check</title>
<style nonce="{nonce}">body {{ font-family: sans-serif }}</style></head>
<body><h1>bastion</h1><p id="out">static</p>
<script nonce="{nonce}">document.getElementById("out").textContent = "scripted";</script>
</body></html>
"""


async def home(request: Request) -> Response:
    nonce = html.escape(csp_nonce(request))
    response = HTMLResponse(PAGE.format(nonce=nonce))
    for cookie in (SESSION_COOKIE, CSRF_COOKIE):
        value = secrets.token_urlsafe(32)
        response.raw_headers.append((b"set-cookie", cookie.with_value(value).serialize().encode()))
    return response


async def robots(_request: Request) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow:\n")


app = SecurityHeadersMiddleware(Starlette(routes=[Route("/", home), Route("/robots.txt", robots)]))
