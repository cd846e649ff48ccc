"""``CSRFMiddleware`` for WSGI apps: the twin of :mod:`bastion.asgi.csrf`, same checks, same order.

The headers decide first and the body is untouched then. Otherwise the token comes from the
header, or from a urlencoded or multipart body read from ``wsgi.input`` in chunks up to
``max_body_bytes`` (413 beyond); ``wsgi.input`` is then replaced by a stream that gives the app
the same bytes (what was read, then the rest of the original stream).

Token source ``SESSION`` reads the CSRF secret of ``environ["bastion.session"]`` (put there by
:class:`~bastion.wsgi.sessions.SessionMiddleware` outside this one) or, when ``session_engine``
is given (the Flask integration does this), of a session opened from the request's cookie.
For Flask, use :class:`bastion.flask.csrf.CSRF`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from bastion.core.clock import Clock, system_clock
from bastion.core.cookies import find_cookie
from bastion.core.csrf import (
    COMMON_UNSAFE_METHODS,
    SAFE_METHODS,
    CSRFConfig,
    CSRFGuard,
    CSRFReason,
    Facts,
    FormTokenScanner,
    ScanStatus,
    TokenState,
    rejection_body,
    wants_json,
)
from bastion.core.csrf.identity import IdentityFailed, identity_of
from bastion.core.request import normalize_method, wsgi_path
from bastion.engine.sessions import Session, SessionEngine
from bastion.errors import ConfigurationError
from bastion.slices import layer_settings, required_slice
from bastion.wsgi._http import send_refusal
from bastion.wsgi.bearer import PRINCIPAL_KEY
from bastion.wsgi.types import Environ, StartResponse, WSGIApp

if TYPE_CHECKING:
    from bastion.config import Bastion
    from bastion.core.audit import Auditor
    from bastion.core.client import TrustedProxies
    from bastion.core.keys import KeyRing, SecretKey
    from bastion.runtime import Runtime

__all__ = ["ENVIRON_KEY", "CSRFContext", "CSRFMiddleware", "csrf_input", "csrf_token"]

IdentityFunc = Callable[[Environ], "str | None"]

ENVIRON_KEY: Final = "bastion.csrf"
SESSION_ENVIRON_KEY: Final = "bastion.session"
_CHUNK: Final = 64 * 1024
_OVERRIDES: Final = ("HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_HTTP_METHOD", "HTTP_X_METHOD_OVERRIDE")
_NO_STORE: Final = (("Cache-Control", "no-store"),)
_SCAN_REASONS: Final = {
    ScanStatus.TOO_LARGE: CSRFReason.BODY_TOO_LARGE,
    ScanStatus.MALFORMED: CSRFReason.BODY_MALFORMED,
}


def _environ_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class CSRFContext:
    """The CSRF side of one request: makes masked tokens for pages and forms.

    Nothing is read for it until a token is asked for: then, with double-submit tokens, the
    request's cookie is verified (once) and a new cookie issued if it brought none.
    """

    __slots__ = ("_environ", "_middleware", "_state")

    def __init__(self, middleware: CSRFMiddleware, environ: Environ) -> None:
        self._middleware = middleware
        self._environ = environ
        self._state: TokenState | None = None

    @property
    def field_name(self) -> str:
        return self._middleware.config.field_name

    @property
    def state(self) -> TokenState:
        """The request's token state, verified from its double-submit cookie on first use."""
        state = self._state
        if state is None:
            middleware, environ = self._middleware, self._environ
            if middleware.double_submit is None:
                return middleware._session_state
            cookie = environ.get("HTTP_COOKIE") or ""
            name = middleware.config.cookie_name or ""
            value = find_cookie(cookie, name)
            identity = identity_of(middleware._identity, environ)  # IdentityFailed: a 503
            state = self._state = middleware._guard.begin(value, identity)
        return state

    @property
    def new_cookie(self) -> bool:
        return self._state is not None and self._state.new_cookie

    def token(self) -> str:
        """A masked token for this request's secret (creating the secret when needed)."""
        return self.state.token(self._secret)

    def _secret(self) -> str:
        return _template_session(self._environ).csrf_secret

    def cookie_header(self) -> str | None:
        state = self._state
        return None if state is None else state.set_cookie()


def _template_session(environ: Environ) -> Session:
    session = environ.get(SESSION_ENVIRON_KEY)
    if not isinstance(session, Session):
        raise ConfigurationError(
            "csrf_token() with token_source=SESSION needs bastion's session: wrap the "
            "app in bastion.wsgi.SessionMiddleware (Flask: use bastion.flask.csrf_token)",
            setting="token_source",
        )
    return session


class CSRFMiddleware:
    """CSRF protection for one WSGI app; arguments as for the ASGI middleware (``proxies``
    included), plus ``session_engine`` to read session secrets without a
    ``SessionMiddleware`` (Flask)."""

    __slots__ = (
        "_api_keys",
        "_checker",
        "_forwarded",
        "_guard",
        "_header",
        "_identity",
        "_session_engine",
        "_session_state",
        "app",
        "config",
        "cookie",
        "double_submit",
    )

    def __init__(
        self,
        app: WSGIApp,
        *,
        bastion: Bastion | Runtime | None = None,
        config: CSRFConfig | None = None,
        keyring: KeyRing | SecretKey | None = None,
        identity: IdentityFunc | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
        session_engine: SessionEngine | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        if bastion is not None:
            shared = layer_settings(
                bastion,
                "CSRFMiddleware",
                "csrf",
                config=config,
                keyring=keyring,
                identity=identity,
                auditor=auditor,
                clock=clock,
                production=production,
                proxies=proxies,
                session_engine=session_engine,
            )
            config = required_slice(shared.config.csrf, "CSRFMiddleware", "csrf")
            keyring, identity = shared.keyring, shared.config.csrf_identity
            auditor, clock, proxies = shared.auditor, shared.clock, shared.proxies
            production = shared.production
        guard = CSRFGuard(
            config,
            keyring=keyring,
            auditor=auditor,
            clock=clock,
            production=production,
            proxies=proxies,
        )
        config = guard.config
        self._guard = guard
        self._checker = guard.checker
        self.app = app
        self.config = config
        self.double_submit = guard.double_submit
        self.cookie = guard.cookie
        self._identity = identity
        self._session_engine = session_engine
        # Session tokens need no per-request state: one shared, never-written TokenState.
        self._session_state = TokenState(guard)
        self._forwarded = _environ_name(guard.proxies.header)
        self._header = _environ_name(config.header_name)
        self._api_keys = tuple(_environ_name(h) for h in config.api_key_headers)

    def _facts(self, environ: Environ) -> Facts:
        get = environ.get
        # Every override header counts: an app's override middleware may read any of them.
        override = ",".join(str(environ[name]) for name in _OVERRIDES if environ.get(name)) or None
        return Facts(
            method=normalize_method(get("REQUEST_METHOD", "GET")),
            path=wsgi_path(get("SCRIPT_NAME", ""), get("PATH_INFO", "")),
            scheme="https" if get("wsgi.url_scheme") == "https" else "http",
            host=get("HTTP_HOST") or get("SERVER_NAME"),
            client=get("REMOTE_ADDR"),
            sec_fetch_site=get("HTTP_SEC_FETCH_SITE"),
            origin=get("HTTP_ORIGIN"),
            referer=get("HTTP_REFERER"),
            forwarded_proto=get("HTTP_X_FORWARDED_PROTO"),
            forwarded_host=get("HTTP_X_FORWARDED_HOST"),
            forwarded=get("HTTP_FORWARDED"),
            authorization=get("HTTP_AUTHORIZATION"),
            api_key=any(h in environ for h in self._api_keys),
            method_override=override,
            query=get("QUERY_STRING", ""),
            content_type=get("CONTENT_TYPE"),
            header_token=get(self._header),
            accept=get("HTTP_ACCEPT"),
            cookie=bool(get("HTTP_COOKIE")),
            bearer=get(PRINCIPAL_KEY) is not None,
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        get = environ.get
        method = get("REQUEST_METHOD", "GET")
        reason: CSRFReason | None
        context: CSRFContext | None = None
        if method in SAFE_METHODS or (
            method not in COMMON_UNSAFE_METHODS and normalize_method(method) in SAFE_METHODS
        ):
            # Decided first, from the override headers and the query alone (see the ASGI twin).
            query = get("QUERY_STRING")
            if not (
                get(_OVERRIDES[0])
                or get(_OVERRIDES[1])
                or get(_OVERRIDES[2])
                or (query and ("%" in query or "method" in query.lower()))
            ):
                return self._call_app(environ, start_response)
            facts = self._facts(environ)
            reason = self._checker.check(facts).reason
        else:
            facts = self._facts(environ)
            verdict = self._checker.check(facts)
            reason = verdict.reason
            if verdict.needs_token:
                current = context = CSRFContext(self, environ)
                token: str | bytes | None = facts.header_token
                if token is None:
                    token, reason = self._body_token(facts, environ)
                if reason is None:
                    try:
                        reason = self._guard.judge_token(
                            token,
                            facts,
                            lambda: current.state,
                            lambda: self._known_secret(environ),
                        )
                    except IdentityFailed:
                        reason = CSRFReason.IDENTITY_FAILED
        if reason is None:
            return self._call_app(environ, start_response, context)
        forwarded = get(self._forwarded)
        self._guard.audit(reason, facts, (str(forwarded),) if forwarded else ())
        if self.config.log_only:
            return self._call_app(environ, start_response, context)
        content_type, body = rejection_body(
            reason, json_format=wants_json(facts.accept, facts.content_type)
        )
        return send_refusal(start_response, reason.status, content_type, body, _NO_STORE)

    def _call_app(
        self,
        environ: Environ,
        start_response: StartResponse,
        context: CSRFContext | None = None,
    ) -> Iterable[bytes]:
        if context is None:
            context = CSRFContext(self, environ)
        environ[ENVIRON_KEY] = context
        state = context._state
        verified = state is not None and state.secret is not None  # no cookie will be issued
        if self.double_submit is not None and not verified:
            start_response = _cookie_starter(context, start_response)
        return self.app(environ, start_response)

    def _body_token(self, facts: Facts, environ: Environ) -> tuple[bytes | None, CSRFReason | None]:
        scanner = FormTokenScanner.for_content_type(
            facts.content_type, field=self.config.field_name, max_bytes=self.config.max_body_bytes
        )
        if not isinstance(scanner, FormTokenScanner):
            return None, scanner
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
            more = bool(chunk) and (remaining is None or remaining > 0)
            status = scanner.feed(chunk, more=more)
        environ["wsgi.input"] = io.BufferedReader(_Replay(b"".join(chunks), stream, remaining))
        return scanner.token, _SCAN_REASONS.get(status)

    def _known_secret(self, environ: Environ) -> str | None:
        return self._session(environ).verification_csrf_secret()

    def _session(self, environ: Environ) -> Session:
        session = environ.get(SESSION_ENVIRON_KEY)
        if isinstance(session, Session):
            return session
        if self._session_engine is not None:
            return self._session_engine.open(environ.get("HTTP_COOKIE"))
        raise ConfigurationError(
            "CSRF token_source=SESSION needs bastion's session: wrap the app in "
            "bastion.wsgi.SessionMiddleware outside CSRFMiddleware (or use protect()); or set "
            "token_source=TokenSource.DOUBLE_SUBMIT with a keyring",
            setting="token_source",
        )

    def __repr__(self) -> str:
        return (
            f"CSRFMiddleware(token_source={self.config.token_source.value!r}, "
            f"log_only={self.config.log_only})"
        )


def _content_length(environ: Environ) -> int | None:
    """Bytes left to read: ``CONTENT_LENGTH``; ``None`` (read to the end) for a chunked body the
    server terminates; 0 when neither is known (PEP 3333 forbids reading past the length)."""
    text = environ.get("CONTENT_LENGTH") or ""
    if text.isdigit():
        return int(text)
    return None if environ.get("wsgi.input_terminated") else 0


def _cookie_starter(context: CSRFContext, start_response: StartResponse) -> StartResponse:
    def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        value = context.cookie_header()
        if value is not None:
            headers = [*headers, ("Set-Cookie", value)]
        return start_response(status, headers, exc_info)

    return start


class _Replay(io.RawIOBase):
    """The bytes already read, then the rest of the original ``wsgi.input``."""

    def __init__(self, head: bytes, stream: Any, remaining: int | None) -> None:
        self._head = memoryview(head)
        self._stream = stream
        self._remaining = remaining

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        if self._head:
            count = min(size, len(self._head))
            buffer[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        if self._remaining is not None:
            size = min(size, self._remaining)
        if size <= 0:
            return 0
        data = self._stream.read(size)
        if self._remaining is not None:
            self._remaining -= len(data)
        buffer[: len(data)] = data
        return len(data)


# -- helpers for handlers and templates ------------------------------------------------------------


def _context(environ: Environ) -> CSRFContext:
    context = environ.get(ENVIRON_KEY)
    if not isinstance(context, CSRFContext):
        raise ConfigurationError(
            "no CSRFMiddleware around this app; wrap it in bastion.wsgi.CSRFMiddleware",
            setting="middleware",
        )
    return context


def csrf_token(environ: Environ) -> str:
    """A masked CSRF token for the request of ``environ`` (new text on every call)."""
    return _context(environ).token()


def csrf_input(environ: Environ) -> str:
    """A hidden ``<input>`` carrying a token (plain ``str``; wrap it in ``Markup`` in Jinja2)."""
    context = _context(environ)
    return f'<input type="hidden" name="{context.field_name}" value="{context.token()}">'
