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

Each charges through :meth:`~bastion.engine.ratelimit.RateLimiter.check` (``check_sync`` for
Flask) like the middlewares, so key and cost functions are the same functions of a
:class:`~bastion.core.request.RequestView` (:mod:`bastion.core.ratelimit.keys`) under every
framework. Starlette, FastAPI and Flask are imported only when used.
"""

from __future__ import annotations

import functools
import inspect
import typing
from typing import TYPE_CHECKING, Any

from bastion.asgi.ratelimit import request_view as scope_view
from bastion.core.ratelimit.rates import DEFAULT_STRATEGY
from bastion.core.ratelimit.rules import Rule, RuleSet
from bastion.core.refusal import refusal_body
from bastion.errors import ConfigurationError
from bastion.wsgi.ratelimit import request_view as environ_view

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.requests import Request
    from starlette.responses import Response

    from bastion.core.ratelimit.keys import KeyFunc
    from bastion.core.ratelimit.rates import Strategy
    from bastion.core.ratelimit.rules import LimitsSpec, RateLimitResult
    from bastion.core.request import RequestView
    from bastion.engine.ratelimit import RateLimiter

    Cost = int | Callable[[RequestView], int]

__all__ = ["RateLimit", "flask_limit", "limit"]

_HIDDEN = "bastion_ratelimit_request_"


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
        from starlette.exceptions import HTTPException  # noqa: PLC0415 (optional dependency)

        verdict = await self._limiter.check(scope_view(request.scope), self._rules)
        if not verdict.results:
            return None
        headers = verdict.headers
        if verdict.refusal is not None:
            raise HTTPException(verdict.status, verdict.refusal.detail, headers=dict(headers))
        for header, value in headers:
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
            headers = verdict.headers
            if verdict.refusal is not None:
                media_type, body = refusal_body(
                    verdict.refusal,
                    accept=request.headers.get("accept"),
                    content_type=request.headers.get("content-type"),
                )
                return Response(
                    body,
                    status_code=verdict.status,
                    headers=dict(headers),
                    media_type=media_type.decode(),
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
                media_type, body = refusal_body(
                    verdict.refusal,
                    accept=flask.request.headers.get("Accept"),
                    content_type=flask.request.headers.get("Content-Type"),
                )
                return flask.Response(
                    body, status=verdict.status, headers=headers, content_type=media_type.decode()
                )
            answer = flask.make_response(func(*args, **kwargs))
            for header, value in headers:
                if header not in answer.headers:
                    answer.headers[header] = value
            return answer

        return wrapper

    return decorate
