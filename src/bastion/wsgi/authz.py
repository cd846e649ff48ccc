"""``AuthzMiddleware`` for WSGI: the twin of :mod:`bastion.asgi.authz`, synchronous.

Same route table, same refusals (``400 authz_bad_path``, ``400 authz_method_override``, ``403
no_route_rule``, ``401 unauthenticated``, ``403 <reason>``, ``503 authz_store_unavailable``),
read from the environ: the full path is ``SCRIPT_NAME + PATH_INFO``, the raw path
``REQUEST_URI`` (or gunicorn's ``RAW_URI``). The user is ``environ["bastion.principal"]``
(:class:`~bastion.wsgi.bearer.BearerMiddleware`) first, else the bastion session's user
(``environ["bastion.session"]``, or Flask's ``session`` when it is bastion's). The authorizer
goes in ``environ["bastion.authz"]``, the loaded subject in ``environ["bastion.authz.subject"]``.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Final

from bastion.authz.service import (
    AUTHZ_KEY,
    SESSION_VERSION_KEY,
    STORE_UNAVAILABLE,
    SUBJECT_KEY,
    RequestUser,
)
from bastion.core.authz.routes import FORM_METHOD_FIELD, FORM_SCAN_BYTES, RouteKind
from bastion.core.csrf.forms import FormTokenScanner, ScanStatus
from bastion.core.refusal import refusal_body
from bastion.core.request import OVERRIDE_HEADERS, wsgi_path
from bastion.core.tokens.principal import Principal
from bastion.engine.sessions import Session
from bastion.errors import AuditUnavailable, ConfigurationError, StoreUnavailable
from bastion.wsgi._http import send_refusal
from bastion.wsgi.csrf import _CHUNK, _content_length, _Replay

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from bastion.authz.service import Authorizer
    from bastion.core.authz.subjects import Subject
    from bastion.core.client import TrustedProxies
    from bastion.core.refusal import Refusal
    from bastion.wsgi.types import Environ, StartResponse, WSGIApp

__all__ = [
    "AuthzMiddleware",
    "ShareAuthorizer",
    "authorizer_of",
    "environ_user",
    "form_override",
    "refusal_parts",
    "request_subject",
    "route_refusal",
]

PRINCIPAL_KEY: Final = "bastion.principal"
SESSION_KEY: Final = "bastion.session"
_OVERRIDES: Final = tuple("HTTP_" + n.upper().replace("-", "_") for n in OVERRIDE_HEADERS)


def _version(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def environ_user(environ: Mapping[str, Any], session: object = None) -> RequestUser | None:
    """Who is signed in (see the module docstring); ``session`` is the framework's session
    object when it is not in the environ (Flask's)."""
    found = environ.get(PRINCIPAL_KEY)
    if isinstance(found, Principal):
        return RequestUser(found.subject, _version(found.claims.get("pv")))
    if not isinstance(session, Session):
        session = environ.get(SESSION_KEY)
    if isinstance(session, Session):
        user_id = session.user_id
        if user_id is not None:
            return RequestUser(user_id, _version(session.get(SESSION_VERSION_KEY)))
    return None


def authorizer_of(
    environ: Mapping[str, Any], given: Authorizer | None, *, setting: str
) -> Authorizer:
    """``given``, else the authorizer in the environ; none is a ConfigurationError."""
    if given is not None:
        return given
    found = environ.get(AUTHZ_KEY)
    if found is None:
        raise ConfigurationError(
            f"{setting} found no authorizer: pass authorizer=..., or wrap the app in "
            "bastion.wsgi.authz.AuthzMiddleware (or Bastion(authz=...)'s stack)",
            setting=setting,
        )
    return found  # type: ignore[no-any-return]  # put there by AuthzMiddleware or the stack


def request_subject(environ: Mapping[str, Any]) -> Subject | None:
    """The subject already loaded for this request, if any."""
    return environ.get(SUBJECT_KEY)


def refusal_parts(
    environ: Mapping[str, Any], refusal: Refusal, status: int
) -> tuple[bytes, bytes, list[tuple[str, str]]]:
    """``(content_type, body, extra headers)`` of a refusal for this request."""
    content_type, body = refusal_body(
        refusal, accept=environ.get("HTTP_ACCEPT"), content_type=environ.get("CONTENT_TYPE")
    )
    extra = [("Cache-Control", "no-store")]
    if status == 503:
        extra.append(("Retry-After", "5"))
    return content_type, body, extra


def _client(environ: Mapping[str, Any], proxies: TrustedProxies | None) -> str | None:
    peer = environ.get("REMOTE_ADDR") or None
    if proxies is None or not proxies.trusts_any:
        return peer
    value = environ.get("HTTP_" + proxies.header.upper().replace("-", "_"))
    address = proxies.client(peer, [value] if value else [])
    return None if address is None else str(address)


def form_override(environ: Environ) -> str | None:
    """The ``_method`` field of a urlencoded or multipart body (what an app's override
    middleware would read from a form), or ``None``; at most
    :data:`~bastion.core.authz.routes.FORM_SCAN_BYTES` are read, and ``wsgi.input`` is replaced by a
    stream that gives the app those bytes again, then the rest."""
    scanner = FormTokenScanner.for_content_type(
        environ.get("CONTENT_TYPE"), field=FORM_METHOD_FIELD, max_bytes=FORM_SCAN_BYTES
    )
    if not isinstance(scanner, FormTokenScanner):
        return None
    stream = environ["wsgi.input"]
    remaining = _content_length(environ)
    chunks: list[bytes] = []
    status = ScanStatus.MORE
    while status is ScanStatus.MORE:
        size = _CHUNK if remaining is None else min(_CHUNK, remaining)
        chunk = stream.read(size) if size > 0 else b""
        if remaining is not None:
            remaining -= len(chunk)
        chunks.append(chunk)
        status = scanner.feed(chunk, more=bool(chunk) and (remaining is None or remaining > 0))
    environ["wsgi.input"] = io.BufferedReader(_Replay(b"".join(chunks), stream, remaining))
    found = scanner.token if status is ScanStatus.FOUND else None
    return None if found is None else found.decode("utf-8", "replace")


def route_refusal(
    authorizer: Authorizer,
    environ: Environ,
    *,
    session: object = None,
    proxies: TrustedProxies | None = None,
) -> tuple[int, Refusal] | None:
    """The route table's answer for this request: ``None`` to go on (the subject is then in
    the environ), else ``(status, refusal)``. ``session`` is the framework's session when it
    is not in the environ (Flask's); a refusal of the table itself never loads a session."""
    environ[AUTHZ_KEY] = authorizer
    path = wsgi_path(environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""))
    method = environ.get("REQUEST_METHOD") or "GET"
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    outcome = authorizer.routes.decide(
        method,
        path,
        raw_path=raw if isinstance(raw, str) else None,
        override_headers=[*(environ.get(name) for name in _OVERRIDES), form_override(environ)],
        query=environ.get("QUERY_STRING") or "",
    )
    if outcome.kind is RouteKind.PUBLIC:
        return None
    client = _client(environ, proxies)
    if outcome.refusal is not None:
        found = environ.get(PRINCIPAL_KEY)
        user = RequestUser(found.subject) if isinstance(found, Principal) else None
        authorizer.audit_route(outcome, method=method, path=path, user=user, client_ip=client)
        return outcome.status, outcome.refusal
    try:
        verdict = authorizer.gate_sync(
            environ_user(environ, session),
            outcome.permissions,
            context={"method": method, "path": path},
            client_ip=client,
        )
    except AuditUnavailable:
        raise  # fail-closed auditing: answered 503 further out
    except StoreUnavailable:
        return 503, STORE_UNAVAILABLE
    if verdict.refusal is None:
        environ[SUBJECT_KEY] = verdict.subject
        return None
    return verdict.status, verdict.refusal


class AuthzMiddleware:
    """The route table of ``authorizer`` on one WSGI app (see the module docstring)."""

    __slots__ = ("_app", "_proxies", "authorizer")

    def __init__(
        self, app: WSGIApp, authorizer: Authorizer, *, proxies: TrustedProxies | None = None
    ) -> None:
        self._app = app
        self.authorizer = authorizer
        self._proxies = proxies

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        found = route_refusal(self.authorizer, environ, proxies=self._proxies)
        if found is None:
            return self._app(environ, start_response)
        status, refusal = found
        content_type, body, extra = refusal_parts(environ, refusal, status)
        return send_refusal(start_response, status, content_type, body, extra)

    def __repr__(self) -> str:
        return f"AuthzMiddleware(authorizer={self.authorizer!r})"


class ShareAuthorizer:
    """Hands ``authorizer`` to the decorators (``environ["bastion.authz"]``) and enforces
    nothing itself: what ``protect()`` adds for ``Bastion(authz=...)`` without a route table."""

    __slots__ = ("_app", "authorizer")

    def __init__(self, app: WSGIApp, authorizer: Authorizer) -> None:
        self._app = app
        self.authorizer = authorizer

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        environ[AUTHZ_KEY] = self.authorizer
        return self._app(environ, start_response)

    def __repr__(self) -> str:
        return f"ShareAuthorizer(authorizer={self.authorizer!r})"
