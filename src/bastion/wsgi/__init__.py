"""WSGI adapters: translate environ/start_response and call the engine; no security logic."""

from __future__ import annotations

from bastion.wsgi.sessions import SessionMiddleware, get_session

__all__ = [
    "SessionMiddleware",
    "get_session",
]
