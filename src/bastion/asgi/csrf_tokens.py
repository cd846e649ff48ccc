"""The token side of :class:`~bastion.asgi.csrf.CSRFMiddleware`: the request's
:class:`CSRFContext` and the helpers that hand its masked tokens to handlers and templates
(:func:`csrf_token`, :func:`csrf_input`, :func:`add_jinja2_globals`).

The middleware decides; this module changes when the way tokens reach pages changes.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Final, cast

from bastion.core.cookies import find_cookie
from bastion.core.csrf.identity import identity_of
from bastion.engine.sessions import Session
from bastion.errors import ConfigurationError

if TYPE_CHECKING:
    from bastion.asgi.csrf import CSRFMiddleware
    from bastion.asgi.types import Message, Scope, Send
    from bastion.core.csrf import TokenState

__all__ = [
    "CONTEXT_KEY",
    "CSRFContext",
    "ContextSource",
    "add_jinja2_globals",
    "csrf_input",
    "csrf_token",
]

CONTEXT_KEY: Final = "bastion.csrf"
"""Where the middleware puts the request's :class:`CSRFContext` in the scope (on a safe request
with session tokens, the middleware itself, until :func:`csrf_token` makes the context)."""


class ContextSource:
    """What a safe request with session tokens finds under :data:`CONTEXT_KEY`: the middleware
    itself, which makes the request's :class:`CSRFContext` only when a template asks for a
    token (see :func:`csrf_token`)."""

    __slots__ = ()


class CSRFContext:
    """The CSRF side of one request: makes masked tokens for pages and forms.

    Nothing is read for it until a token is asked for: then, with double-submit tokens, the
    request's cookie is verified (once) and a new cookie issued if it brought none. Each
    :meth:`token` call returns new text (a fresh mask) for the same secret.
    """

    __slots__ = ("_cookie", "_middleware", "_scope", "_send", "_state")

    def __init__(
        self, middleware: CSRFMiddleware, scope: Scope, cookie_header: str | None = None
    ) -> None:
        self._middleware = middleware
        self._scope = scope
        self._cookie = cookie_header
        self._state: TokenState | None = None
        self._send: Send | None = None

    @property
    def field_name(self) -> str:
        return self._middleware.config.field_name

    @property
    def header_name(self) -> str:
        return self._middleware.config.header_name

    @property
    def state(self) -> TokenState:
        """The request's token state, verified from its double-submit cookie on first use."""
        state = self._state
        if state is None:
            middleware, scope = self._middleware, self._scope
            if middleware.double_submit is None:
                return middleware._session_state
            cookie = self._cookie
            if cookie is None:
                cookie = _cookie_header(scope)
            name = middleware.config.cookie_name or ""
            # Only this cookie is read (after a substring test), not the whole header.
            value = find_cookie(cookie, name)
            identity = identity_of(middleware._identity, scope)  # IdentityFailed: a 503
            state = self._state = middleware._guard.begin(value, identity)
        return state

    @property
    def new_cookie(self) -> bool:
        return self._state is not None and self._state.new_cookie

    def token(self) -> str:
        """A masked token for this request's secret (creating the secret when needed)."""
        return self.state.token(self._secret)

    def _secret(self) -> str:
        return _session_of(self._scope).csrf_secret

    def _known_secret(self) -> str | None:
        return _session_of(self._scope).verification_csrf_secret()

    def cookie_header(self) -> bytes | None:
        """The ``Set-Cookie`` value for a double-submit cookie issued during this request."""
        state = self._state
        value = None if state is None else state.set_cookie()
        return None if value is None else value.encode("latin-1")

    async def send(self, message: Message) -> None:
        """The app's ``send`` in double-submit mode: adds the cookie issued during the request."""
        state = self._state
        if state is not None and state.new_cookie and message["type"] == "http.response.start":
            value = self.cookie_header()
            if value is not None:
                headers = list(message.get("headers", ()))
                headers.append((b"set-cookie", value))
                message["headers"] = headers
        send = self._send
        if send is None:  # pragma: no cover - the middleware sets it before the app runs
            raise RuntimeError("CSRFContext.send used outside CSRFMiddleware")
        await send(message)


def _cookie_header(scope: Scope) -> str:
    """The request's ``Cookie`` header; several (HTTP/2 splits them) joined with ``; ``."""
    found = [value.decode("latin-1") for name, value in scope["headers"] if name == b"cookie"]
    return "; ".join(found)


def _session_of(scope: Scope) -> Session:
    session = scope.get("session")
    if not isinstance(session, Session):
        raise ConfigurationError(
            "CSRF token_source=SESSION needs bastion's SessionMiddleware outside "
            "CSRFMiddleware (or use protect()); or set token_source=TokenSource.DOUBLE_SUBMIT "
            "with a keyring",
            setting="token_source",
        )
    return session


# -- helpers for handlers and templates ------------------------------------------------------------


def _context(request: Any) -> CSRFContext:
    scope = getattr(request, "scope", request)
    context = scope.get(CONTEXT_KEY) if isinstance(scope, MutableMapping) else None
    if isinstance(context, ContextSource):  # a safe request with session tokens: made now
        context = scope[CONTEXT_KEY] = CSRFContext(cast("CSRFMiddleware", context), scope)
    if not isinstance(context, CSRFContext):
        raise ConfigurationError(
            "no CSRFMiddleware in front of this route; add "
            "Middleware(bastion.asgi.CSRFMiddleware) (or use protect())",
            setting="middleware",
        )
    return context


def csrf_token(request: Any) -> str:
    """A masked CSRF token for ``request`` (a Starlette request or a scope): put it in a form
    field or send it in the ``X-CSRF-Token`` header. New text on every call."""
    return _context(request).token()


def csrf_input(request: Any) -> str:
    """``<input type="hidden" name="csrf_token" value="...">`` for a form (plain ``str``; the
    Jinja2 global wraps it in ``Markup``)."""
    context = _context(request)
    return f'<input type="hidden" name="{context.field_name}" value="{context.token()}">'


def add_jinja2_globals(env: Any) -> None:
    """Add ``csrf_token()`` and ``csrf_input()`` to a Jinja2 environment (``templates.env``).

    The template context needs ``request``, as Starlette's ``TemplateResponse`` guarantees.
    """
    import jinja2  # noqa: PLC0415 (optional dependency, needed only by apps that use Jinja2)
    import markupsafe  # noqa: PLC0415 (comes with Jinja2)

    @jinja2.pass_context
    def template_csrf_token(context: Any) -> str:
        return csrf_token(context["request"])

    @jinja2.pass_context
    def template_csrf_input(context: Any) -> markupsafe.Markup:
        return markupsafe.Markup(csrf_input(context["request"]))  # noqa: S704 (built from base64url and a validated field name)

    env.globals["csrf_token"] = template_csrf_token
    env.globals["csrf_input"] = template_csrf_input
