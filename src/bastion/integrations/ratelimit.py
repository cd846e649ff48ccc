"""Rate limits as framework sugar: a FastAPI dependency, Starlette/FastAPI and Flask decorators.

* :class:`RateLimit` is a FastAPI dependency (``Depends(RateLimit(limiter, rule))``): it
  charges the request, refuses with 429, ``Retry-After`` and the headers (503 when a
  fail-closed backend is down), and adds the headers to the response.
* :func:`limit` decorates a Starlette endpoint or a FastAPI path operation. The handler does
  not need a ``request`` parameter: when it has none, the decorator declares a hidden one to
  FastAPI and removes it before calling the handler. Every other parameter reaches FastAPI as
  the handler declared it (``Annotated[str, Form()]``, ``SessionDep``, ``Depends``, a body
  model; postponed annotations too), so the OpenAPI schema is the undecorated one. A refusal
  answers 429 directly; when the handler returns a ``Response``, the headers are added to it.
* :func:`flask_limit` decorates a Flask view (through ``flask.request``), synchronously.

Each charges through :meth:`~bastion.engine.ratelimit.RateLimiter.check` (``check_sync`` for
Flask) like the middlewares, so key and cost functions are the same functions of a
:class:`~bastion.core.request.RequestView` (:mod:`bastion.core.ratelimit.keys`) under every
framework. Starlette, FastAPI and Flask are imported only when used.

Every refusal is the middleware's, byte for byte: its body comes from
:func:`~bastion.core.refusal.refusal_body` (JSON or text by ``Accept`` and ``Content-Type``)
and its headers from the adapter's one refusal sender (``Content-Type``, ``Content-Length``,
then ``RateLimit-Policy``, ``RateLimit`` and ``Retry-After``), whichever integration refuses.
A dependency can only raise, so :class:`RateLimit` raises an ``HTTPException`` carrying the
refusal and puts the handler that sends it in the running app's exception table the first
time it refuses (:func:`_install_handler`): the app's own ``HTTPException`` handler does not
render rate-limit refusals.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import TYPE_CHECKING, Any

from bastion.asgi._http import refusal_headers as refusal_raw_headers
from bastion.asgi._http import send_refusal
from bastion.asgi.ratelimit import request_view as scope_view
from bastion.core.ratelimit.rates import DEFAULT_STRATEGY
from bastion.core.ratelimit.rules import Rule, RuleSet
from bastion.core.refusal import refusal_body
from bastion.errors import ConfigurationError
from bastion.wsgi._http import refusal_headers, status_line
from bastion.wsgi.ratelimit import request_view as environ_view

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response

    from bastion.asgi.types import Receive, Scope, Send
    from bastion.core.ratelimit.keys import KeyFunc
    from bastion.core.ratelimit.rates import Strategy
    from bastion.core.ratelimit.rules import LimitsSpec, RateLimitResult, Verdict
    from bastion.core.refusal import Refusal
    from bastion.core.request import RequestView
    from bastion.engine.ratelimit import RateLimiter

    Cost = int | Callable[[RequestView], int]

__all__ = ["RateLimit", "flask_limit", "limit"]

_HIDDEN = "bastion_ratelimit_request_"
_HANDLERS = "starlette.exception_handlers"  # the scope entry of the app's live handler table


@functools.cache
def _refused_class() -> Callable[[int, bytes, bytes, list[tuple[bytes, bytes]]], Response]:
    """The Starlette ``Response`` of a refusal, made once (Starlette is imported only when an
    integration is used). It sends itself through the ASGI adapter's refusal sender, so its
    bytes are the middleware's, and FastAPI passes a ``Response`` through unchanged."""
    from starlette.responses import Response  # noqa: PLC0415 (optional dependency)

    class RefusalResponse(Response):
        def __init__(
            self,
            status: int,
            content_type: bytes,
            body: bytes,
            extra: list[tuple[bytes, bytes]],
        ) -> None:
            self._type = content_type
            self._bytes = body
            self._extra = extra
            super().__init__(body, status_code=status)

        def init_headers(self, headers: Any = None) -> None:  # noqa: ARG002 (ours, not these)
            self.raw_headers = refusal_raw_headers(self._type, self._bytes, self._extra)

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002
            await send_refusal(
                send,
                self.status_code,
                self._type,
                self._bytes,
                self._extra,
                websocket=scope["type"] == "websocket",
            )
            if self.background is not None:
                await self.background()

    return RefusalResponse


def _refusal_response(verdict: Verdict, refused: Refusal, headers: Any) -> Response:
    """The refusal ``refused`` of ``verdict`` for a request with Starlette ``headers``."""
    content_type, body = refusal_body(
        refused, accept=headers.get("accept"), content_type=headers.get("content-type")
    )
    return _refused_class()(verdict.status, content_type, body, verdict.raw_headers())


@functools.cache
def _refused_exception() -> Callable[[Response, str, dict[str, str]], HTTPException]:
    """What :class:`RateLimit` raises: an ``HTTPException`` (so an app whose exception table
    cannot be reached still answers the right status and headers) carrying the refusal."""
    from starlette.exceptions import HTTPException  # noqa: PLC0415 (optional dependency)

    class RateLimitRefused(HTTPException):
        def __init__(self, response: Response, detail: str, headers: dict[str, str]) -> None:
            super().__init__(response.status_code, detail, headers=headers)
            self.response = response

    return RateLimitRefused


async def _render_refused(request: Request, exc: Exception) -> Response:  # noqa: ARG001
    """The exception handler of :func:`_refused_exception`: the refusal it carries."""
    response: Response = getattr(exc, "response")  # noqa: B009 (set by RateLimitRefused)
    return response


def _install_handler(scope: Scope, refused: type[Exception]) -> None:
    """Put :func:`_render_refused` in the running app's exception table for ``refused``.

    A dependency cannot answer, only raise. Starlette's exception middleware puts its live
    table in the scope, and the route looks the raised class up there by MRO, so an entry for
    the exact class renders the refusal instead of the app's ``HTTPException`` handler
    (FastAPI's ``{"detail": ...}``). Without that table, the app's ``HTTPException`` handler
    answers, with the refusal's status and rate-limit headers.
    """
    tables = scope.get(_HANDLERS)
    if isinstance(tables, tuple) and tables and isinstance(tables[0], dict):
        tables[0].setdefault(refused, _render_refused)


def _rules(
    rule: Rule | LimitsSpec,
    strategy: Strategy | str,
    name: str,
    key: KeyFunc | None,
    cost: Cost | None,
    *,
    ietf: bool,
    legacy: bool,
) -> RuleSet:
    """The one-rule set a decorator or dependency charges: ``rule`` as given, or limits text
    made into a rule named ``name``. ``key`` is the default key (the rule's own wins)."""
    if isinstance(rule, Rule):
        if cost is not None:
            raise ConfigurationError(
                f"rule {rule.name!r} is a Rule: give its cost as Rule(..., cost=) instead",
                setting="cost",
            )
        chosen = rule
    else:
        chosen = Rule(name, rule, strategy=strategy, cost=1 if cost is None else cost)
    return RuleSet(chosen, key=key, ietf_headers=ietf, legacy_headers=legacy)


class RateLimit:
    """A FastAPI dependency charging ``rule`` per request (see the module docstring).

    ``rule`` is a :class:`~bastion.core.ratelimit.rules.Rule` or limits text
    (``"10/minute"``), then named ``name`` and counted with ``strategy`` at ``cost``. ``key``
    takes the request view (client IP by default); a ``None`` key exempts the request. Returns
    the result for the handler.
    """

    __slots__ = ("__signature__", "_limiter", "_rules")

    def __init__(
        self,
        limiter: RateLimiter,
        rule: Rule | LimitsSpec,
        *,
        name: str = "default",
        strategy: Strategy | str = DEFAULT_STRATEGY,
        key: KeyFunc | None = None,
        cost: Cost | None = None,
        ietf_headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        self._limiter = limiter
        self._rules = _rules(
            rule, strategy, name, key, cost, ietf=ietf_headers, legacy=legacy_headers
        )
        # FastAPI reads the parameters' types from the signature; with postponed annotations
        # they would be unresolvable strings, so the signature is given with the real types.
        from starlette.requests import Request  # noqa: PLC0415 (optional dependency)
        from starlette.responses import Response  # noqa: PLC0415

        keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter("request", keyword, annotation=Request),
                inspect.Parameter("response", keyword, annotation=Response),
            ]
        )

    async def __call__(self, request: Request, response: Response) -> RateLimitResult | None:
        verdict = await self._limiter.check(scope_view(request.scope), self._rules)
        if not verdict.results:
            return None
        refused = verdict.refusal
        if refused is not None:
            answer = _refusal_response(verdict, refused, request.headers)
            error = _refused_exception()(answer, refused.detail, dict(verdict.headers))
            _install_handler(request.scope, type(error))
            raise error
        for header, value in verdict.headers:
            response.headers[header] = value
        return verdict.results[0]


def limit(
    limiter: RateLimiter,
    rule: Rule | LimitsSpec,
    *,
    strategy: Strategy | str = DEFAULT_STRATEGY,
    key: KeyFunc | None = None,
    cost: Cost | None = None,
    ietf_headers: bool = True,
    legacy_headers: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate an async Starlette endpoint or FastAPI path operation (module docstring).

    Without a named ``Rule``, the rule is named after the handler, so each handler has its
    own counters.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        rules = _rules(
            rule,
            strategy,
            func.__name__.replace("_", "-"),
            key,
            cost,
            ietf=ietf_headers,
            legacy=legacy_headers,
        )
        signature = _evaluated_signature(func)
        params = list(signature.parameters.values())
        from starlette.requests import Request  # noqa: PLC0415 (optional dependency)
        from starlette.responses import Response  # noqa: PLC0415

        has_request = any(_is_subclass(p.annotation, Request) for p in params)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = kwargs.pop(_HIDDEN, None) if not has_request else None
            if request is None:
                request = next(
                    (a for a in (*args, *kwargs.values()) if isinstance(a, Request)), None
                )
            if request is None:
                raise TypeError(
                    f"{func.__qualname__}: no Request among its arguments; rate-limit "
                    "decorators need a Starlette endpoint or a FastAPI path operation"
                )
            verdict = await limiter.check(scope_view(request.scope), rules)
            if not verdict.results:
                return await func(*args, **kwargs)
            refused = verdict.refusal
            if refused is not None:
                return _refusal_response(verdict, refused, request.headers)
            headers = verdict.headers
            answer = await func(*args, **kwargs)
            if isinstance(answer, Response):
                for header, value in headers:
                    if header not in answer.headers:
                        answer.headers[header] = value
            return answer

        functools.update_wrapper(wrapper, func)
        if not has_request:
            hidden = inspect.Parameter(_HIDDEN, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
            kept = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
            varkw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
            wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
                parameters=[*kept, hidden, *varkw]
            )
        else:
            wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


def _evaluated_signature(func: Callable[..., Any]) -> inspect.Signature:
    """``func``'s signature with postponed (string) annotations evaluated in its module.

    The wrapper's signature is what FastAPI reads, and the wrapper's ``__globals__`` are this
    module's, so strings must be turned into objects here. They are evaluated as written, so
    ``Annotated[str, Form()]`` and ``SessionDep = Annotated[Session, Depends(...)]`` keep their
    metadata (``typing.get_type_hints`` would strip it unless asked not to). When a name cannot
    be resolved yet, the annotations stay as written: FastAPI then evaluates them against the
    handler's own module (it follows ``__wrapped__``), exactly as for an undecorated handler.
    """
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, AttributeError, TypeError, SyntaxError):
        return inspect.signature(func)


def _is_subclass(annotation: object, cls: type) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return isinstance(annotation, type) and issubclass(annotation, cls)


def flask_limit(
    limiter: RateLimiter,
    rule: Rule | LimitsSpec,
    *,
    strategy: Strategy | str = DEFAULT_STRATEGY,
    key: KeyFunc | None = None,
    cost: Cost | None = None,
    ietf_headers: bool = True,
    legacy_headers: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Flask view; the request comes from ``flask.request`` (module docstring)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        rules = _rules(
            rule,
            strategy,
            func.__name__.replace("_", "-"),
            key,
            cost,
            ietf=ietf_headers,
            legacy=legacy_headers,
        )

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import flask  # noqa: PLC0415 (optional dependency)

            verdict = limiter.check_sync(environ_view(flask.request.environ), rules)
            if not verdict.results:
                return func(*args, **kwargs)
            headers = verdict.headers
            if verdict.refusal is not None:
                # The WSGI middleware's bytes: its status line, and the adapter's headers in
                # its order (werkzeug would write "429 TOO MANY REQUESTS" and append the type).
                content_type, body = refusal_body(
                    verdict.refusal,
                    accept=flask.request.headers.get("Accept"),
                    content_type=flask.request.headers.get("Content-Type"),
                )
                return flask.Response(
                    body,
                    status=status_line(verdict.status),
                    headers=refusal_headers(content_type, body, headers),
                )
            answer = flask.make_response(func(*args, **kwargs))
            for header, value in headers:
                if header not in answer.headers:
                    answer.headers[header] = value
            return answer

        return wrapper

    return decorate
