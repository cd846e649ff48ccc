"""The app tests/test_sessions_workers.py serves with ``uvicorn --workers 2``.

Each worker process builds its own session middleware on the store named by
``BASTION_TEST_STORE`` with the key ring from ``BASTION_TEST_SECRET``, so both workers read and
write the same sessions. ``GET /start`` makes a session, ``GET /set/{key}`` sets one key in it,
``GET /keys`` lists its keys. (Environment variables are read here because this is a test app
started as a separate process; the library itself reads them only in ``core.environment``.)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.asgi.sessions import SessionMiddleware
from bastion.core.keys import KeyRing
from bastion.core.sessions import SessionConfig

if TYPE_CHECKING:
    from starlette.requests import Request


async def start(request: Request) -> JSONResponse:
    request.session["start"] = os.getpid()
    return JSONResponse({"pid": os.getpid()})


async def set_key(request: Request) -> JSONResponse:
    key = request.path_params["key"]
    request.session[key] = key
    return JSONResponse({"pid": os.getpid(), "set": key})


async def keys(request: Request) -> JSONResponse:
    return JSONResponse({"keys": sorted(request.session)})


inner = Starlette(
    routes=[Route("/start", start), Route("/set/{key}", set_key), Route("/keys", keys)]
)
app = SessionMiddleware(
    inner,
    store=os.environ["BASTION_TEST_STORE"],
    keyring=KeyRing.from_secrets([os.environ["BASTION_TEST_SECRET"]]),
    config=SessionConfig(development=True, secure=False),
)
