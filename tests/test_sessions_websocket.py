"""The session inside WebSocket handlers, on a real uvicorn server with Redis (preloaded).

A Redis store preloads the session (one awaited read before the app runs), so the handler
reads ``websocket.session`` as an HTTP handler does. ``logout()`` there is refused with a typed
error (no response can carry the expired cookie); ``end_session()`` logs out at once.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from bastion.asgi.sessions import SessionMiddleware, end_session, get_session
from bastion.core.sessions import SessionConfig
from bastion.errors import SessionStateError
from bastion.stores.redis import RedisStore
from servers import uvicorn_thread

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.websockets import WebSocket

DEV = SessionConfig(secure=False, development=True)


async def do_login(request: Request) -> JSONResponse:
    get_session(request).login("alice")
    request.session["theme"] = "dark"
    return JSONResponse({"ok": True})


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.session.user_id})  # type: ignore[attr-defined]


async def channel(websocket: WebSocket) -> None:
    await websocket.accept()
    session = websocket.session
    await websocket.send_text(json.dumps({"user": session.user_id, "data": dict(session)}))
    command = await websocket.receive_text()
    if command == "logout":
        try:
            session.logout()
        except SessionStateError as exc:
            await websocket.send_text(f"refused: {type(exc).__name__}")
    elif command == "end":
        await end_session(websocket)
        await websocket.send_text("ended")
    await websocket.close()


def make_app(store: RedisStore, preload: bool | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await store.aclose()  # on the server's loop, where its connections live

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/login", do_login, methods=["POST"]),
            Route("/whoami", whoami),
            WebSocketRoute("/ws", channel),
        ],
        middleware=[
            Middleware(
                SessionMiddleware, store=store, config=DEV, preload=preload, production=False
            )
        ],
    )


@pytest.mark.parametrize("preload", [None, True])
def test_websocket_reads_a_preloaded_session_and_refuses_a_silent_logout(
    redis_url: str, redis_prefix: str, preload: bool | None
) -> None:
    from websockets.sync.client import connect  # noqa: PLC0415 (this test only)

    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    app = make_app(store, preload)
    with uvicorn_thread(app, ws="websockets-sansio", lifespan="on") as port:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base) as http:
            assert http.post("/login").status_code == 200
            cookie = f"session={http.cookies['session']}"
        with connect(
            f"ws://127.0.0.1:{port}/ws", additional_headers={"Cookie": cookie}, open_timeout=5
        ) as websocket:
            assert json.loads(websocket.recv(timeout=5)) == {
                "user": "alice",
                "data": {"theme": "dark"},
            }
            websocket.send("logout")
            assert websocket.recv(timeout=5) == "refused: SessionStateError"
        with httpx.Client(base_url=base) as http:
            assert http.get("/whoami", headers={"cookie": cookie}).json() == {"user": "alice"}
        with connect(
            f"ws://127.0.0.1:{port}/ws", additional_headers={"Cookie": cookie}, open_timeout=5
        ) as websocket:
            websocket.recv(timeout=5)
            websocket.send("end")
            assert websocket.recv(timeout=5) == "ended"
        with httpx.Client(base_url=base) as http:
            assert http.get("/whoami", headers={"cookie": cookie}).json() == {"user": None}
