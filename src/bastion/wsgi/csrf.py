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
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from bastion.core.clock import Clock, system_clock
from bastion.core.cookies import parse_cookie
from bastion.core.csrf import (
    CSRFConfig,
    Facts,
    FormTokenScanner,
    Reason,
    ScanStatus,
    rejection_body,
    wants_json,
)
from bastion.core.request import normalize_method, wsgi_path
from bastion.engine.csrf import CSRFGuard, TokenState
from bastion.engine.sessions import Session, SessionEngine
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.core.audit import Auditor
    from bastion.core.keys import KeyRing, SecretKey

__all__ = ["ENVIRON_KEY", "CSRFContext", "CSRFMiddleware", "csrf_input", "csrf_token"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
IdentityFunc = Callable[[Environ], "str | None"]

ENVIRON_KEY: Final = "bastion.csrf"
SESSION_ENVIRON_KEY: Final = "bastion.session"
_CHUNK: Final = 64 * 1024
_STATUS_LINES: Final = {400: "400 Bad Request", 403: "403 Forbidden", 413: "413 Content Too Large"}
_OVERRIDES: Final = ("HTTP_X_HTTP_METHOD_OVERRIDE", "HTTP_X_HTTP_METHOD", "HTTP_X_METHOD_OVERRIDE")
_SCAN_REASONS: Final = {
    ScanStatus.TOO_LARGE: Reason.BODY_TOO_LARGE,
    ScanStatus.MALFORMED: Reason.BODY_MALFORMED,
}


def _environ_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class CSRFContext:
    """The CSRF side of one request: makes masked tokens for pages and forms."""

    __slots__ = ("_environ", "_middleware", "state")

    def __init__(self, middleware: CSRFMiddleware, environ: Environ, state: TokenState) -> None:
        self._middleware = middleware
        self._environ = environ
        self.state = state

    @property
    def field_name(self) -> str:
        return self._middleware.config.field_name

    @property
    def new_cookie(self) -> bool:
        return self.state.new_cookie

    def token(self) -> str:
        """A masked token for this request's secret (creating the secret when needed)."""
        return self.state.token(partial(_template_session, self._environ))

    def cookie_header(self) -> str | None:
        return self.state.set_cookie()


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
    """CSRF protection for one WSGI app; arguments as for the ASGI middleware, plus
    ``session_engine`` to read session secrets without a ``SessionMiddleware`` (Flask)."""

    __slots__ = (
        "_api_keys",
        "_guard",
        "_header",
        "_identity",
        "_policy",
        "_session_engine",
        "app",
        "config",
        "cookie",
        "double_submit",
    )

    def __init__(
        self,
        app: WSGIApp,
        *,
        config: CSRFConfig | None = None,
        keyring: KeyRing | SecretKey | None = None,
        identity: IdentityFunc | None = None,
        auditor: Auditor | None = None,
        clock: Clock = system_clock,
        production: bool | None = None,
        session_engine: SessionEngine | None = None,
    ) -> None:
        guard = CSRFGuard(
            config, keyring=keyring, auditor=auditor, clock=clock, production=production
        )
        config = guard.config
        self._guard = guard
        self._policy = guard.policy
        self.app = app
        self.config = config
        self.double_submit = guard.double_submit
        self.cookie = guard.cookie
        self._identity = identity
        self._session_engine = session_engine
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
            authorization=get("HTTP_AUTHORIZATION"),
            api_key=any(h in environ for h in self._api_keys),
            method_override=override,
            query=get("QUERY_STRING", ""),
            content_type=get("CONTENT_TYPE"),
            header_token=get(self._header),
            accept=get("HTTP_ACCEPT"),
        )

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        facts = self._facts(environ)
        guard = self._guard
        if guard.double_submit is None:
            state = TokenState(guard)
        else:
            cookies = parse_cookie(environ.get("HTTP_COOKIE", ""))
            cookie_value = cookies.get(self.config.cookie_name or "")
            identity = (self._identity(environ) if self._identity else None) or ""
            state = guard.begin(cookie_value, identity)
        context = CSRFContext(self, environ, state)
        environ[ENVIRON_KEY] = context
        if guard.double_submit is not None:
            start_response = _cookie_starter(context, start_response)
        verdict = self._policy.check(facts)
        if verdict.passed is not None:
            return self.app(environ, start_response)
        reason = verdict.reason
        if reason is None:
            token: str | bytes | None = facts.header_token
            if token is None:
                token, reason = self._body_token(facts, environ)
            if reason is None:
                reason = guard.judge_token(token, facts, state, partial(self._session, environ))
        if reason is None:
            return self.app(environ, start_response)
        guard.audit(reason, facts)
        if self.config.log_only:
            return self.app(environ, start_response)
        content_type, body = rejection_body(
            reason, json_format=wants_json(facts.accept, facts.content_type)
        )
        start_response(
            _STATUS_LINES[reason.status],
            [
                ("Content-Type", content_type.decode("ascii")),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]

    def _body_token(self, facts: Facts, environ: Environ) -> tuple[bytes | None, Reason | None]:
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
