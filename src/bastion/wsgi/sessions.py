"""``SessionMiddleware`` for WSGI apps: the session engine driven by the synchronous driver.

The same engine flows as the ASGI middleware run here through the store's synchronous side
(``store.sync``): memory directly, SQLite on a connection per worker thread, Redis through a
blocking client (rebuilt after a fork, so it is safe under gunicorn's pre-fork model). No event
loop is involved. The session is ``environ["bastion.session"]``, loaded on first touch (an
untouched request does no store I/O) and saved when the app calls ``start_response``.

Outage: a store failure while the session is read or saved answers ``503`` with a short message
(JSON when the client's ``Accept`` asks for it) and an audit event, never a fresh session and
never a 500 traceback.

For Flask, use :func:`bastion.flask.protect`, which plugs the same engine into
``flask.session``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from bastion.core.clock import system_clock
from bastion.core.refusal import SESSION_STORE_UNAVAILABLE, refusal_body
from bastion.core.vary import add_vary_text
from bastion.engine.sessions import SaveResult, Session, SessionEngine
from bastion.errors import ConfigurationError, StoreUnavailable
from bastion.runtime import session_engine
from bastion.wsgi._http import client_address, refusal_headers, status_line

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from bastion.config import Bastion
    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.clock import Clock
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.core.sessions import SessionConfig, SessionRecord
    from bastion.runtime import Runtime
    from bastion.stores.base import Store
    from bastion.wsgi.types import Environ, StartResponse, WSGIApp

__all__ = [
    "ENGINE_ENVIRON_KEY",
    "SESSION_ENVIRON_KEY",
    "SessionMiddleware",
    "client_address",
    "get_session",
    "response_headers",
    "sync_engine",
    "unavailable_response",
]

SESSION_ENVIRON_KEY: Final = "bastion.session"
ENGINE_ENVIRON_KEY: Final = "bastion.sessions"
UNAVAILABLE_STATUS: Final = status_line(503)


def sync_engine(engine: SessionEngine | None) -> SessionEngine:
    """``engine``, checked to have a store with a synchronous side (what WSGI needs)."""
    if engine is None:
        raise ConfigurationError(
            "sessions need Bastion(store=...): a store URL or a Store", setting="store"
        )
    if engine.sync_store is None:
        raise ConfigurationError(
            f"a WSGI app needs a store with a synchronous side (store.sync); {engine.store!r} "
            "has none. Use memory://, sqlite:/// or redis:// URLs",
            setting="store",
        )
    return engine


def response_headers(result: SaveResult) -> list[tuple[str, str]]:
    """The headers a save result adds to the response (``Vary`` is merged by the caller)."""
    headers: list[tuple[str, str]] = []
    if result.set_cookie is not None:
        headers.append(("Set-Cookie", result.set_cookie))
        headers.append(("Cache-Control", "no-store"))
        if result.clear_site_data:
            headers.append(("Clear-Site-Data", '"cookies"'))
    return headers


def unavailable_response(
    accept: str | None = None, content_type: str | None = None
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status, headers and body of the 503 sent when the session store is down: text, or JSON
    for a client that sent JSON or accepts it (:mod:`bastion.core.refusal`); ``accept`` and
    ``content_type`` are the request's headers."""
    media_type, body = refusal_body(
        SESSION_STORE_UNAVAILABLE, accept=accept, content_type=content_type
    )
    return (
        UNAVAILABLE_STATUS,
        refusal_headers(media_type, body, (("Cache-Control", "no-store"), ("Retry-After", "5"))),
        body,
    )


def _merge(headers: list[tuple[str, str]], result: SaveResult) -> list[tuple[str, str]]:
    extra = response_headers(result)
    if result.set_cookie is not None:
        headers = [(n, v) for n, v in headers if n.lower() != "cache-control"]
    if result.vary:
        add_vary_text(headers, "Cookie")
    return headers + extra


class SessionMiddleware:
    """Server-side sessions for one WSGI app; arguments as for the ASGI middleware."""

    __slots__ = ("app", "engine", "proxies")

    def __init__(
        self,
        app: WSGIApp,
        *,
        bastion: Bastion | Runtime | None = None,
        store: Store | str | None = None,
        config: SessionConfig | None = None,
        keyring: KeyRing | SecretKey | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
        user_loader: Callable[[str], Any] | None = None,
        session_filter: Callable[[SessionRecord], bool] | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self.app = app
        engine, self.proxies = session_engine(
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
        self.engine = sync_engine(engine)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        engine = self.engine
        session = engine.open(
            environ.get("HTTP_COOKIE"),
            client_ip=client_address(environ, self.proxies),
            user_agent=environ.get("HTTP_USER_AGENT"),
        )
        environ[SESSION_ENVIRON_KEY] = session
        environ[ENGINE_ENVIRON_KEY] = engine
        failed: list[bytes] = []  # the 503's body, once a save failed
        asked = environ.get("HTTP_ACCEPT"), environ.get("CONTENT_TYPE")  # for a 503

        def save_then_start(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            try:
                result = engine.save_sync(session, status=int(status[:3]))
            except StoreUnavailable:
                engine.audit_unavailable(session, "save")
                unavailable_status, unavailable_headers, payload = unavailable_response(*asked)
                failed.append(payload)
                return start_response(unavailable_status, unavailable_headers, exc_info)
            return start_response(status, _merge(list(headers), result), exc_info)

        try:
            body = self.app(environ, save_then_start)
        except StoreUnavailable:
            if session.loaded or not session.accessed:
                _after_failure(engine, session)
                raise
            engine.audit_unavailable(session, "load")
            status, headers, payload = unavailable_response(*asked)
            start_response(status, headers)
            return [payload]
        except BaseException:
            _after_failure(engine, session)
            raise
        if failed:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            return failed[:1]
        return body


def _after_failure(engine: SessionEngine, session: Session) -> None:
    """The app raised before ``start_response``: the error page is made further out, where no
    cookie can be added, but a pending logout or rotation still ends the old ID (the save of
    a 5xx: no data is written). A save that already ran has nothing left pending."""
    if not session.loaded:
        return
    try:
        engine.save_sync(session, status=500)
    except StoreUnavailable:
        engine.audit_unavailable(session, "save")


def get_session(environ: Environ) -> Session:
    """The request's session (``environ["bastion.session"]``)."""
    session = environ.get(SESSION_ENVIRON_KEY)
    if not isinstance(session, Session):
        raise ConfigurationError(
            "no bastion session in this environ; wrap the app in "
            "bastion.wsgi.SessionMiddleware (or use bastion.flask.protect for Flask)",
            setting="middleware",
        )
    return session
