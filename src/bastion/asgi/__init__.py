"""ASGI adapters: translate scope/receive/send and call the engine; no security logic."""

from __future__ import annotations

from bastion.asgi._http import AuditUnavailableResponse, audit_unavailable_handler
from bastion.asgi.csrf import CSRFMiddleware, csrf_input, csrf_token
from bastion.asgi.headers import SecurityHeadersMiddleware, add_jinja2_globals, csp_nonce
from bastion.asgi.limits import RequestLimitsMiddleware
from bastion.asgi.protect import BastionMiddleware, protect
from bastion.asgi.ratelimit import RateLimitMiddleware
from bastion.asgi.sessions import SessionMiddleware, get_session, load_session

__all__ = [
    "AuditUnavailableResponse",
    "BastionMiddleware",
    "CSRFMiddleware",
    "RateLimitMiddleware",
    "RequestLimitsMiddleware",
    "SecurityHeadersMiddleware",
    "SessionMiddleware",
    "add_jinja2_globals",
    "audit_unavailable_handler",
    "csp_nonce",
    "csrf_input",
    "csrf_token",
    "get_session",
    "load_session",
    "protect",
]
