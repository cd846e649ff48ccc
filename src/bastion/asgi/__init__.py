"""ASGI adapters: translate scope/receive/send and call the engine; no security logic."""

from __future__ import annotations

from bastion.asgi.sessions import SessionMiddleware, get_session, load_session

__all__ = [
    "SessionMiddleware",
    "get_session",
    "load_session",
]
