"""WSGI adapters: translate environ/start_response and call the engine; no security logic."""

from __future__ import annotations

from bastion.wsgi.csrf import CSRFMiddleware
from bastion.wsgi.headers import SecurityHeadersMiddleware, add_jinja2_globals, csp_nonce
from bastion.wsgi.limits import RequestLimitsMiddleware
from bastion.wsgi.protect import protect
from bastion.wsgi.ratelimit import RateLimitMiddleware
from bastion.wsgi.sessions import SessionMiddleware, get_session

__all__ = [
    "CSRFMiddleware",
    "RateLimitMiddleware",
    "RequestLimitsMiddleware",
    "SecurityHeadersMiddleware",
    "SessionMiddleware",
    "add_jinja2_globals",
    "csp_nonce",
    "get_session",
    "protect",
]
