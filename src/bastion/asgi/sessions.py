"""``SessionMiddleware`` for ASGI apps: server-side sessions behind ``request.session``.

Starlette and FastAPI code keeps using ``request.session`` unchanged: the middleware puts a
:class:`~bastion.engine.sessions.Session` (a mutable mapping) in ``scope["session"]``.

Loading. ``request.session`` is read synchronously, so a lazy load on first touch cannot await.
The middleware therefore picks, per store (``preload=None``):

* stores whose sync side is local (memory, SQLite): **lazy**. The first touch reads the record
  through the sync side, a direct read of microseconds; an untouched request does no store I/O
  at all, with or without a cookie.
* network stores (Redis): **preload** when the request carries a session cookie, with one
  awaited round trip before the app runs, so the event loop is never blocked on the network.
  The price: a request with a cookie that never touches the session still does that one read.
  A request without a cookie does none.

``preload=True`` / ``False`` forces either behaviour. Handlers that want the async load on a
lazy store (or on a store without a sync side) await :func:`load_session` (also usable as a
FastAPI dependency) before touching the session.

Saving happens when the response starts (``http.response.start``): nothing for an untouched or
unchanged session, one compare-and-set for a change, no data for a 5xx (a logout and a
rotation's end of the old ID still happen, also when the app raises). The response
then carries ``Set-Cookie`` when the cookie changes, with ``Cache-Control: no-store``, and
``Vary: Cookie`` whenever the session was read.

WebSocket handshakes get the session too, readable as in HTTP (preloaded before the handler
where the store calls for it, with a close code 1013 when the store cannot be read). Data
changes made during a WebSocket connection are not saved, since there is no response to carry
a cookie; ``login()``, ``logout()``, ``regenerate()`` and ``clear()`` of a stored session raise
:class:`~bastion.errors.SessionStateError` there, and :func:`end_session` logs out from a
WebSocket handler (the record is deleted at once). An app that
puts something else in ``scope["session"]`` (Litestar's ``set_session()`` / ``clear_session()``)
is followed when the response starts: a mapping replaces the data, anything else ends the
session as :meth:`~bastion.engine.sessions.Session.logout` does.

Outage. When the store cannot be reached while the session is read (or saved), the client gets a
``503`` with a short message (JSON for a client whose ``Accept`` asks for it), ``Retry-After``
and an audit event; never a silent fresh session (a logout) and never a 500 traceback. A failed
save is a 503 too, so no change is acknowledged that was not stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from bastion.asgi._http import send_refusal
from bastion.core.clock import system_clock
from bastion.core.refusal import SESSION_STORE_UNAVAILABLE, refusal_body
from bastion.core.vary import add_vary
from bastion.engine.sessions import Session, SessionEngine, SessionInfo
from bastion.errors import AuditUnavailable, ConfigurationError, StoreUnavailable
from bastion.runtime import session_engine as build_session_engine

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.asgi.types import ASGIApp, Message, Receive, Scope, Send
    from bastion.config import Bastion
    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.core.sessions import SessionConfig, SessionRecord
    from bastion.engine.sessions import SaveResult
    from bastion.runtime import Runtime
    from bastion.stores.base import Store

__all__ = [
    "ENGINE_SCOPE_KEY",
    "SessionMiddleware",
    "create_session",
    "destroy_session",
    "end_session",
    "get_session",
    "list_sessions",
    "load_session",
    "revoke_all_sessions",
    "revoke_other_sessions",
    "revoke_session",
    "session_engine",
]

ENGINE_SCOPE_KEY: Final = "bastion.sessions"
"""Where the middleware puts its :class:`SessionEngine` in the scope."""


class HasScope(Protocol):
    """Anything with an ASGI ``scope`` (a Starlette ``Request``, a ``WebSocket``)."""

    @property
    def scope(self) -> Scope: ...


class SessionMiddleware:
    """Server-side sessions for one ASGI app. See the module docstring.

    ``store`` is a :class:`~bastion.stores.base.Store` or a store URL (``sqlite:///app.db``,
    ``redis://...``). ``config`` is a :class:`~bastion.core.sessions.SessionConfig`; its
    development flag is refused when ``production`` (default: read from ``ENV`` /
    ``BASTION_ENV``) and logs a warning otherwise. ``user_loader`` and ``session_filter`` are
    the engine's app hooks (:class:`~bastion.engine.sessions.SessionEngine`):
    ``request.session.user`` and refusing sessions at load.
    """

    __slots__ = ("_forwarded", "_inline", "_preload", "_proxies", "app", "engine")

    def __init__(
        self,
        app: ASGIApp,
        *,
        bastion: Bastion | Runtime | None = None,
        store: Store | str | None = None,
        config: SessionConfig | None = None,
        keyring: KeyRing | SecretKey | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        preload: bool | None = None,
        production: bool | None = None,
        user_loader: Callable[[str], Any] | None = None,
        session_filter: Callable[[SessionRecord], bool] | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.app = app
        self.engine, self._proxies = build_session_engine(
            bastion,
            store=store,
            config=config,
            keyring=keyring,
            auditor=auditor,
            clock=clock,
            production=production,
            user_loader=user_loader,
            session_filter=session_filter,
            proxies=proxies,
        )
        self._forwarded = b"" if self._proxies is None else self._proxies.header.encode("ascii")
        sync = self.engine.sync_store
        local = sync is not None and sync.local
        if preload is False and sync is None:
            raise ConfigurationError(
                f"preload=False needs a store with a synchronous side; {self.engine.store!r} "
                "has none",
                setting="preload",
            )
        self._preload = (not local) if preload is None else preload
        self._inline = self.engine.inline

    @property
    def preload(self) -> bool:
        return self._preload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        engine = self.engine
        session = _open(
            engine, scope, lazy=not self._preload, proxies=self._proxies, wanted=self._forwarded
        )
        scope["session"] = session
        scope[ENGINE_SCOPE_KEY] = engine
        if self._preload and session.has_cookie:
            try:
                await engine.load(session)
            except AuditUnavailable:
                raise  # fail-closed auditing: answered 503 further out
            except StoreUnavailable:
                engine.audit_unavailable(session, "load")
                if kind == "websocket":
                    await _refuse_websocket(receive, send)
                else:
                    await _send_unavailable(scope, send)
                return
        if kind == "websocket":
            # Readable (preloaded above, or lazily); no response carries a cookie, so a
            # lifecycle call raises instead of being lost: end_session() logs out from here.
            session.without_response("a WebSocket handler")
            await self.app(scope, receive, send)
            return
        await self._http(scope, receive, send, session)

    async def _http(self, scope: Scope, receive: Receive, send: Send, session: Session) -> None:
        engine = self.engine
        inline = self._inline
        started = replaced = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started, replaced
            if replaced:
                return  # the app's own response was replaced by the 503
            if message["type"] == "http.response.start":
                started = True
                if scope.get("session") is not session:
                    _adopt_replacement(session, scope.get("session"))
                try:
                    # A store that never blocks (memory) saves inline: no coroutine per call.
                    if inline:
                        result = engine.save_sync(session, status=message["status"])
                    else:
                        result = await engine.save(session, status=message["status"])
                except AuditUnavailable:
                    raise  # fail-closed auditing: answered 503 further out
                except StoreUnavailable:
                    engine.audit_unavailable(session, "save")
                    replaced = True
                    await _send_unavailable(scope, send)
                    return
                if result.vary or result.set_cookie:
                    message["headers"] = _apply(message, result)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except AuditUnavailable:
            raise  # fail-closed auditing: answered 503 further out
        except StoreUnavailable:
            # Only a failed session load becomes a 503 here; the app's own store errors and
            # anything after the response started propagate unchanged.
            if started or session.loaded or not session.accessed:
                await _after_failure(engine, session, started=started)
                raise
            engine.audit_unavailable(session, "load")
            await _send_unavailable(scope, send)
        except BaseException:
            await _after_failure(engine, session, started=started)
            raise


async def _after_failure(engine: SessionEngine, session: Session, *, started: bool) -> None:
    """The app raised before its response started: the error page is made further out, where
    no cookie can be added, but a pending logout or rotation still ends the old ID (the save
    of a 5xx: no data is written)."""
    if started or not session.loaded:
        return
    try:
        await engine.save(session, status=500)
    except AuditUnavailable:
        raise  # fail-closed auditing: answered 503 further out
    except StoreUnavailable:
        engine.audit_unavailable(session, "save")


def _open(
    engine: SessionEngine,
    scope: Scope,
    *,
    lazy: bool,
    proxies: TrustedProxies | None,
    wanted: bytes,
) -> Session:
    """The request's session; ``wanted`` is the forwarding header ``proxies`` read (``b""``
    without trusted proxies), encoded once by the middleware."""
    cookie_header = None
    user_agent = None
    forwarded: list[str] = []
    for name, value in scope["headers"]:
        if name == b"cookie":
            text = value.decode("latin-1")
            cookie_header = text if cookie_header is None else cookie_header + "; " + text
        elif name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == wanted:
            forwarded.append(value.decode("latin-1"))
    client = scope.get("client")
    peer = client[0] if client else None
    if proxies is not None and forwarded:
        address = proxies.client(peer, forwarded)
        peer = None if address is None else str(address)
    return engine.open(
        cookie_header,
        client_ip=peer,
        user_agent=user_agent,
        lazy=lazy,
    )


async def _refuse_websocket(receive: Receive, send: Send) -> None:
    """Refuse a handshake whose session could not be read: close before accepting (the server
    answers the handshake with 403), code 1013 "try again later"."""
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": 1013, "reason": ""})


def _adopt_replacement(session: Session, current: object) -> None:
    """The app put something else in ``scope["session"]`` (Litestar's ``set_session()`` and
    ``clear_session()`` do): a mapping replaces the data; anything else (``None``, Litestar's
    ``Empty``) ends the session, as a logout would. Ignoring it would keep a session alive that
    the app meant to end."""
    if isinstance(current, Session):
        return  # another bastion session object: nothing this middleware can reconcile
    if isinstance(current, Mapping):
        session.replace(dict(current))
    else:
        session.logout()


def _apply(message: Message, result: SaveResult) -> list[tuple[bytes, bytes]]:
    """The response's headers with what the save asks for: ``Vary: Cookie``, and with a new or
    expired cookie ``Cache-Control: no-store``, ``Set-Cookie`` and maybe ``Clear-Site-Data``."""
    headers: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
    if result.vary:
        add_vary(headers, b"Cookie")
    set_cookie = result.set_cookie
    if set_cookie is not None:
        headers = [(n, v) for n, v in headers if n.lower() != b"cache-control"]
        headers.append((b"cache-control", b"no-store"))
        headers.append((b"set-cookie", set_cookie.encode("latin-1")))
        if result.clear_site_data:
            headers.append((b"clear-site-data", b'"cookies"'))
    return headers


_UNAVAILABLE_HEADERS: Final = ((b"cache-control", b"no-store"), (b"retry-after", b"5"))


async def _send_unavailable(scope: Scope, send: Send) -> None:
    """The 503 for a store outage: text, or JSON for a client that asks for it."""
    accept = sent_type = None
    for name, value in scope["headers"]:
        if name == b"accept" and accept is None:
            accept = value.decode("latin-1")
        elif name == b"content-type" and sent_type is None:
            sent_type = value.decode("latin-1")
    content_type, body = refusal_body(
        SESSION_STORE_UNAVAILABLE, accept=accept, content_type=sent_type
    )
    await send_refusal(send, 503, content_type, body, _UNAVAILABLE_HEADERS)


# -- helpers for handlers -------------------------------------------------------------------


def session_engine(request: HasScope) -> SessionEngine:
    """The engine of the :class:`SessionMiddleware` in front of this request."""
    engine = request.scope.get(ENGINE_SCOPE_KEY)
    if not isinstance(engine, SessionEngine):
        raise ConfigurationError(
            "no bastion SessionMiddleware in front of this route; add "
            "Middleware(bastion.asgi.SessionMiddleware, store=...) to the app",
            setting="middleware",
        )
    return engine


def get_session(request: HasScope) -> Session:
    """The request's session (the object behind ``request.session``)."""
    session = request.scope.get("session")
    if not isinstance(session, Session):
        session_engine(request)  # raises the helpful error when the middleware is missing
        raise ConfigurationError(
            "scope['session'] is not a bastion Session: another session middleware replaced "
            "it; use one session middleware",
            setting="middleware",
        )
    return session


async def load_session(request: HasScope) -> Session:
    """Load the session with an awaited read and return it. Use it as a FastAPI dependency
    (``Depends(load_session)``) to keep a lazy first touch from blocking the event loop."""
    session = get_session(request)
    await session_engine(request).load(session)
    return session


async def end_session(connection: HasScope) -> None:
    """Log the connection's session out now, in the store (its record deleted, its registry
    entry removed). Works in a WebSocket handler, where ``session.logout()`` cannot (no response
    carries the expired cookie) and raises :class:`~bastion.errors.SessionStateError`."""
    await session_engine(connection).end(get_session(connection))


async def destroy_session(request: HasScope, session_id: str) -> bool:
    """Delete another session by its ID (admin tools). Says whether it existed."""
    return await session_engine(request).destroy(session_id)


async def create_session(
    request: HasScope,
    data: dict[str, Any] | None = None,
    *,
    user_id: str | int | None = None,
    persistent: bool | None = None,
) -> str:
    """Store a new session programmatically and return its ID (not bound to this request)."""
    return await session_engine(request).create(data, user_id=user_id, persistent=persistent)


async def list_sessions(request: HasScope, user_id: str | int | None = None) -> list[SessionInfo]:
    """The live sessions of ``user_id`` (default: the logged-in user); the current one flagged."""
    session = get_session(request)
    await session_engine(request).load(session)
    user = session.user_id if user_id is None else str(user_id)
    if user is None:
        return []
    return await session_engine(request).list_sessions(user, current=session.handle)


async def revoke_session(request: HasScope, handle: str) -> bool:
    """Revoke one of the logged-in user's sessions by its handle."""
    session = get_session(request)
    await session_engine(request).load(session)
    if session.user_id is None:
        return False
    return await session_engine(request).revoke(session.user_id, handle)


async def revoke_other_sessions(request: HasScope) -> int:
    """Log the logged-in user out everywhere else ("log out other devices")."""
    session = get_session(request)
    await session_engine(request).load(session)
    if session.user_id is None:
        return 0
    return await session_engine(request).revoke_others(session.user_id, session.handle)


async def revoke_all_sessions(request: HasScope, user_id: str | int) -> int:
    """Revoke every session of ``user_id`` (on a password change, for instance)."""
    return await session_engine(request).revoke_all(user_id)
