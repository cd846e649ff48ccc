"""Rate limits as framework sugar: a FastAPI dependency, Starlette/FastAPI and Flask decorators.

* :class:`RateLimit` is a FastAPI dependency (``Depends(RateLimit(limiter, rule))``): it
  charges the request, raises ``HTTPException(429)`` with ``Retry-After`` and the headers when
  refused (503 when a fail-closed backend is down), and adds the headers to the response.
* :func:`limit` decorates a Starlette endpoint or a FastAPI path operation. The handler does
  not need a ``request`` parameter: when it has none, the decorator declares a hidden one to
  FastAPI and removes it before calling the handler. Every other parameter reaches FastAPI as
  the handler declared it (``Annotated[str, Form()]``, ``SessionDep``, ``Depends``, a body
  model; postponed annotations too), so the OpenAPI schema is the undecorated one. A refusal
  answers 429 directly; when the handler returns a ``Response``, the headers are added to it.
* :func:`flask_limit` decorates a Flask view (through ``flask.request``), synchronously.

Key functions are the adapters' own: ASGI-scope keys from :mod:`bastion.asgi.ratelimit` for
Starlette and FastAPI, environ keys from :mod:`bastion.wsgi.ratelimit` for Flask. Starlette,
FastAPI and Flask are imported only when used.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import TYPE_CHECKING, Any

from bastion.asgi.ratelimit import client_ip_key as scope_client_ip
from bastion.core.refusal import RATE_LIMIT_STORE_UNAVAILABLE, RATE_LIMITED, Refusal, refusal_body
from bastion.engine.ratelimit import Rule, render_headers
from bastion.wsgi.ratelimit import client_ip_key as environ_client_ip

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

    from starlette.requests import Request
    from starlette.responses import Response

    from bastion.core.ratelimit import Strategy
    from bastion.engine.ratelimit import LimitsSpec, RateLimiter, RateLimitResult

    ScopeKey = Callable[[MutableMapping[str, Any]], str | None]
    EnvironKey = Callable[[dict[str, Any]], str | None]

__all__ = ["RateLimit", "flask_limit", "limit"]

_HIDDEN = "bastion_ratelimit_request_"


def _rule(rule: Rule | LimitsSpec, strategy: Strategy | str, name: str) -> Rule:
    return rule if isinstance(rule, Rule) else Rule(name, rule, strategy=strategy)


def _refusal(result: RateLimitResult) -> tuple[int, Refusal]:
    if result.unavailable:
        return 503, RATE_LIMIT_STORE_UNAVAILABLE
    return 429, RATE_LIMITED


class RateLimit:
    """A FastAPI dependency charging ``rule`` per request (see the module docstring).

    ``rule`` is a :class:`~bastion.engine.ratelimit.Rule` or limits text (``"10/minute"``),
    then named ``name`` and counted with ``strategy``. ``key`` takes the ASGI scope (client IP
    by default); a ``None`` key exempts the request. Returns the result for the handler.
    """

    __slots__ = ("__signature__", "_cost", "_ietf", "_key", "_legacy", "_limiter", "_rule")

    def __init__(
        self,
        limiter: RateLimiter,
        rule: Rule | LimitsSpec,
        *,
        name: str = "default",
        strategy: Strategy | str = "token_bucket",
        key: ScopeKey | None = None,
        cost: int = 1,
        ietf_headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        self._limiter = limiter
        self._rule = _rule(rule, strategy, name)
        self._key = key if key is not None else scope_client_ip()
        self._cost = cost
        self._ietf = ietf_headers
        self._legacy = legacy_headers
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
        from starlette.exceptions import HTTPException  # noqa: PLC0415 (optional dependency)

        key = self._key(request.scope)
        if key is None:
            return None
        client = request.client
        result = await self._limiter.hit(
            self._rule, key, cost=self._cost, client_ip=client.host if client else None
        )
        headers = render_headers([result], ietf=self._ietf, legacy=self._legacy)
        if not result.allowed:
            status, refusal = _refusal(result)
            raise HTTPException(status, refusal.detail, headers=dict(headers))
        for header, value in headers:
            response.headers[header] = value
        return result


def limit(
    limiter: RateLimiter,
    rule: Rule | LimitsSpec,
    *,
    strategy: Strategy | str = "token_bucket",
    key: ScopeKey | None = None,
    cost: int = 1,
    ietf_headers: bool = True,
    legacy_headers: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate an async Starlette endpoint or FastAPI path operation (module docstring).

    Without a named ``Rule``, the rule is named after the handler, so each handler has its
    own counters.
    """
    key_of = key if key is not None else scope_client_ip()

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        chosen = _rule(rule, strategy, func.__name__.replace("_", "-"))
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
            name = key_of(request.scope)
            if name is None:
                return await func(*args, **kwargs)
            client = request.client
            result = await limiter.hit(
                chosen, name, cost=cost, client_ip=client.host if client else None
            )
            headers = render_headers([result], ietf=ietf_headers, legacy=legacy_headers)
            if not result.allowed:
                status, refusal = _refusal(result)
                media_type, body = refusal_body(
                    refusal,
                    accept=request.headers.get("accept"),
                    content_type=request.headers.get("content-type"),
                )
                return Response(
                    body, status_code=status, headers=dict(headers), media_type=media_type.decode()
                )
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
    strategy: Strategy | str = "token_bucket",
    key: EnvironKey | None = None,
    cost: int = 1,
    ietf_headers: bool = True,
    legacy_headers: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a Flask view; the request comes from ``flask.request`` (module docstring)."""
    key_of = key if key is not None else environ_client_ip()

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        chosen = _rule(rule, strategy, func.__name__.replace("_", "-"))

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            import flask  # noqa: PLC0415 (optional dependency)

            environ: dict[str, Any] = flask.request.environ
            name = key_of(environ)
            if name is None:
                return func(*args, **kwargs)
            result = limiter.hit_sync(
                chosen, name, cost=cost, client_ip=environ.get("REMOTE_ADDR") or None
            )
            headers = render_headers([result], ietf=ietf_headers, legacy=legacy_headers)
            if not result.allowed:
                status, refusal = _refusal(result)
                media_type, body = refusal_body(
                    refusal,
                    accept=flask.request.headers.get("Accept"),
                    content_type=flask.request.headers.get("Content-Type"),
                )
                return flask.Response(
                    body, status=status, headers=headers, content_type=media_type.decode()
                )
            answer = flask.make_response(func(*args, **kwargs))
            for header, value in headers:
                if header not in answer.headers:
                    answer.headers[header] = value
            return answer

        return wrapper

    return decorate
