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

__all__ = ["CASES", "SESSION_COOKIE", "app"]

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


# -- cases graded by both the real scanner and `bastion check` (tests/test_observatory.py)

_BASE: tuple[tuple[str, str], ...] = (
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("strict-transport-security", "max-age=63072000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-resource-policy", "same-origin"),
)


def _case(headers: tuple[tuple[str, str], ...], *, redirect_cookie: str | None = None) -> Starlette:
    """A page sending exactly ``headers``; with ``redirect_cookie``, ``/`` answers 302 to
    ``/login`` setting that cookie, and ``/login`` is the page."""

    async def page(_request: Request) -> Response:
        response = PlainTextResponse("case")
        response.raw_headers.extend((k.encode(), v.encode()) for k, v in headers)
        return response

    async def redirect(_request: Request) -> Response:
        response = Response(status_code=302, headers={"location": "/login"})
        response.raw_headers.extend((k.encode(), v.encode()) for k, v in headers)
        if redirect_cookie is not None:
            response.raw_headers.append((b"set-cookie", redirect_cookie.encode()))
        return response

    routes = [Route("/robots.txt", robots)]
    if redirect_cookie is None:
        routes.append(Route("/", page))
    else:
        routes += [Route("/", redirect), Route("/login", page)]
    return Starlette(routes=routes)


def _echo_origin_on_preflight() -> Starlette:
    """A page whose preflight answers (OPTIONS) echo any Origin with credentials."""

    async def page(request: Request) -> Response:
        if request.method == "OPTIONS":
            response = Response(status_code=204)
            response.headers["access-control-allow-origin"] = request.headers.get("origin", "")
            response.headers["access-control-allow-credentials"] = "true"
        else:
            response = PlainTextResponse("case")
        response.raw_headers.extend((k.encode(), v.encode()) for k, v in _BASE)
        return response

    return Starlette(
        routes=[Route("/", page, methods=["GET", "OPTIONS"]), Route("/robots.txt", robots)]
    )


def _without(name: str) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in _BASE if k != name)


CASES: dict[str, Starlette] = {
    "redirect-with-insecure-cookie": _case(_BASE, redirect_cookie="sessionid=abc; Path=/"),
    "repeated-hsts": _case((*_BASE, _BASE[1])),
    "repeated-xfo": _case(
        (
            *_without("content-security-policy"),
            ("content-security-policy", "default-src 'none'"),
            ("x-frame-options", "DENY"),
            ("x-frame-options", "DENY"),
        )
    ),
    "repeated-xcto": _case((*_BASE, _BASE[2])),
    "cors-preflight-echoes-origin": _echo_origin_on_preflight(),
    "repeated-csp": _case((*_BASE, ("content-security-policy", "script-src 'self'"))),
    "repeated-corp-and-referrer": _case(
        (*_BASE, ("cross-origin-resource-policy", "same-site"), ("referrer-policy", "unsafe-url"))
    ),
}
"""Apps on which `bastion check` must give the real scanner's score and grade."""
