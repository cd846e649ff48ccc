"""Engine-level session helpers shared by the session tests: one request's load and save
driven by hand, as an adapter does, with the default ``__Host-session`` cookie."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.engine.sessions import SaveResult, Session, SessionEngine

COOKIE = "__Host-session"


def cookie_value(result: SaveResult) -> str:
    """The session cookie's value in the save's ``Set-Cookie`` line."""
    assert result.set_cookie is not None
    match = re.match(rf"{COOKIE}=([^;]*)", result.set_cookie)
    assert match is not None
    return match.group(1)


async def request(engine: SessionEngine, cookie: str | None, **client: str) -> Session:
    """A request's session, loaded now (``client``: ``ip=``, ``user_agent=``)."""
    header = None if cookie is None else f"{COOKIE}={cookie}"
    session = engine.open(header, lazy=False, **client)
    await engine.load(session)
    return session


async def login(engine: SessionEngine, user: str) -> str:
    """A fresh session logged in as ``user``; its cookie value."""
    session = await request(engine, None)
    session.login(user)
    return cookie_value(await engine.save(session))
