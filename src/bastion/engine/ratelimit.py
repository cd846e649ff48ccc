"""The rate limiter: rules of limits over a store, failure policies, shadow mode.

A :class:`Rule` is a named set of limits (``"10/second; 1000/day"``) counted with one
algorithm; every limit must admit a request, and a refused request charges none of them. The
rule's name is part of every stored key, so two rules with the same name (on different routes)
share their counters: that is how a shared limit is written.

:class:`RateLimiter` decides with a store's rate-limit capability
(:class:`~bastion.stores.base.SupportsRateLimit`: memory, SQLite and Redis stores have it),
through :meth:`RateLimiter.hit` (async) or :meth:`RateLimiter.hit_sync` (WSGI, no event loop).
When the store fails, each limit follows its ``on_failure`` policy:

* ``"fallback"`` (the default): the limit is counted in a per-process memory store until the
  store answers again. Limits still hold, per process.
* ``"open"``: the limit is skipped.
* ``"closed"``: the request is refused with 503 (``result.unavailable``).

The start and the end of an outage are logged on ``bastion.security.ratelimit`` and sent to the
auditor (``ratelimit_store_unavailable`` / ``ratelimit_store_recovered``) once each, not per
request, so an outage does not flood the logs.

Shadow mode (per rule, or for the whole limiter) counts and reports as usual, but lets refused
requests through: ``result.allowed`` is true, ``result.shadowed`` says it would have been
refused, and an audit event records it. Use it to roll a new limit out.

Keys are stored as given (after the rule name). Do not pass secrets as keys: hash an API key
first. Keys longer than 200 characters are replaced by their SHA-256, which bounds the memory
an attacker-chosen key can take.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, ParamSpec, TypeAlias, TypeVar

from bastion.core.audit import EventName, Outcome
from bastion.core.ratelimit import (
    Decision,
    Rate,
    Strategy,
    check_policy_name,
    legacy_headers,
    parse_rates,
    policy_header,
    ratelimit_header,
    retry_after_header,
)
from bastion.core.request import (
    expand_methods,
    match_forms,
    normalize_method,
    normalize_path,
)
from bastion.errors import ConfigurationError, RateLimitExceeded, StoreError, StoreUnavailable
from bastion.stores.base import require_rate_limit
from bastion.stores.memory import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from bastion.core.audit import Auditor
    from bastion.stores.base import SupportsRateLimit

__all__ = [
    "MAX_COST",
    "FailurePolicy",
    "Limit",
    "LimitsSpec",
    "RateLimitResult",
    "RateLimiter",
    "Route",
    "Rule",
    "header_bytes",
    "render_headers",
    "routes_of",
]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("bastion.security.ratelimit")

MAX_COST: Final = 1_000_000
"""Largest cost one request may have."""

_MAX_KEY_CHARS: Final = 200
_MAX_ADHOC_RULES: Final = 1024


class FailurePolicy(enum.StrEnum):
    """What a limit does when its store fails (see the module docstring)."""

    OPEN = "open"
    CLOSED = "closed"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class Limit:
    """One rate of a rule, with its header name and failure policy."""

    rate: Rate
    name: str | None = None
    on_failure: FailurePolicy = FailurePolicy.FALLBACK

    def __post_init__(self) -> None:
        if not isinstance(self.rate, Rate):
            raise ConfigurationError(
                f"Limit.rate must be a Rate (use parse_rate('10/minute')), got {self.rate!r}",
                setting="rate",
            )
        if self.name is not None:
            check_policy_name(self.name)
        try:
            object.__setattr__(self, "on_failure", FailurePolicy(self.on_failure))
        except ValueError:
            raise ConfigurationError(
                f"on_failure must be 'open', 'closed' or 'fallback', got {self.on_failure!r}",
                setting="on_failure",
            ) from None


LimitsSpec: TypeAlias = "str | Rate | Limit | Iterable[str | Rate | Limit]"


class Rule:
    """A named set of limits counted with one strategy. Immutable once built.

    ``limits`` is text (``"10/second; 1000/day"``), a :class:`Rate`, a :class:`Limit` or a
    sequence of those. ``on_failure`` applies to limits given as text or rates. The names in
    the headers are the limits' own names, else ``name`` (one limit) or ``name-1``, ``name-2``.
    """

    __slots__ = (
        "_items",
        "limits",
        "name",
        "names",
        "policy",
        "policy_raw",
        "prefix",
        "rates",
        "shadow",
        "strategy",
    )

    _items: tuple[str, ...]
    limits: tuple[Limit, ...]
    name: str
    names: tuple[str, ...]
    policy: str
    policy_raw: bytes
    prefix: str
    rates: tuple[Rate, ...]
    shadow: bool
    strategy: Strategy

    def __init__(
        self,
        name: str,
        limits: LimitsSpec,
        *,
        strategy: Strategy | str = Strategy.TOKEN_BUCKET,
        on_failure: FailurePolicy | str = FailurePolicy.FALLBACK,
        shadow: bool = False,
    ) -> None:
        check_policy_name(name)
        if isinstance(limits, str | Rate | Limit):
            items: list[str | Rate | Limit] = [limits]
        else:
            items = list(limits)
        built: list[Limit] = []
        for item in items:
            if isinstance(item, Limit):
                built.append(item)
            else:
                built.extend(
                    Limit(rate, on_failure=FailurePolicy(on_failure)) for rate in parse_rates(item)
                )
        if not built:
            raise ConfigurationError(f"rule {name!r} has no limits", setting="limits")
        rates = tuple(limit.rate for limit in built)
        if len(set(rates)) != len(rates):
            raise ConfigurationError(f"rule {name!r} repeats a rate", setting="limits")
        names = tuple(
            limit.name or (name if len(built) == 1 else f"{name}-{i}")
            for i, limit in enumerate(built, 1)
        )
        opened = [n for n, limit in zip(names, built, strict=True) if limit.on_failure == "open"]
        if shadow or opened:
            _log_rule_opt_outs(name, shadow=bool(shadow), opened=opened)
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "limits", tuple(built))
        set_(self, "rates", rates)
        set_(self, "names", names)
        set_(self, "strategy", Strategy.coerce(strategy))
        set_(self, "shadow", bool(shadow))
        set_(self, "policy", policy_header(names, rates))
        set_(self, "policy_raw", self.policy.encode("ascii"))
        set_(self, "prefix", name + "|")
        set_(self, "_items", tuple(f'"{n}";r=' for n in names))

    def ratelimit_raw(self, decisions: Sequence[Decision]) -> bytes:
        """The ``RateLimit`` header value for this rule's full set of decisions, as bytes."""
        if len(decisions) == 1:
            decision = decisions[0]
            seconds = math.ceil(decision.reset_after - 1e-9)
            value = f"{self._items[0]}{decision.remaining};t={seconds if seconds > 0 else 0}"
            return value.encode("ascii")
        parts = []
        for item, decision in zip(self._items, decisions, strict=True):
            seconds = math.ceil(decision.reset_after - 1e-9)
            parts.append(f"{item}{decision.remaining};t={seconds if seconds > 0 else 0}")
        return ", ".join(parts).encode("ascii")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Rule is immutable; build a new one instead of setting {name}")

    def __repr__(self) -> str:
        rates = "; ".join(str(rate) for rate in self.rates)
        return f"Rule({self.name!r}, {rates!r}, strategy={self.strategy.value!r})"


def _log_rule_opt_outs(name: str, *, shadow: bool, opened: list[str]) -> None:
    if shadow:
        logger.warning(
            "bastion rate limits: rule %r has shadow=True; it counts and logs but refuses "
            "nothing. Turn it off once the logs are clean",
            name,
        )
    if opened:
        logger.warning(
            "bastion rate limits: %s of rule %r use on_failure='open'; while the store is "
            'down they are not enforced at all ("fallback" keeps a per-process limit)',
            ", ".join(repr(n) for n in opened),
            name,
        )


class RateLimitResult(NamedTuple):
    """The outcome of one rule for one request.

    ``allowed`` is what the caller should do (the result is truthy then).
    ``decisions``/``names``/``rates`` are aligned, one per limit that was decided (a
    failed-open limit has none). ``unavailable`` means a fail-closed limit's store failed
    (answer 503); ``shadowed`` that a shadow rule would have refused. A named tuple: immutable
    and cheap, since one is built per request.
    """

    rule: Rule
    allowed: bool
    decisions: tuple[Decision, ...]
    names: tuple[str, ...]
    rates: tuple[Rate, ...]
    unavailable: bool = False
    shadowed: bool = False

    def __bool__(self) -> bool:  # a tuple would be truthy even when refused
        return self.allowed

    @property
    def retry_after(self) -> float:
        """Seconds until every refusing limit admits again (0 when allowed)."""
        return max((d.retry_after for d in self.decisions if not d.allowed), default=0.0)

    def headers(self, *, ietf: bool = True, legacy: bool = False) -> list[tuple[str, str]]:
        """The response headers for this result alone (see :func:`render_headers`)."""
        return render_headers([self], ietf=ietf, legacy=legacy)

    def raise_for_limit(self) -> None:
        """Raise :class:`RateLimitExceeded` (refused) or StoreUnavailable (failed closed)."""
        if self.allowed:
            return
        if self.unavailable:
            raise StoreUnavailable(
                f"rate-limit store failed and rule {self.rule.name!r} fails closed"
            )
        raise RateLimitExceeded(
            f"rate limit {self.rule.name!r} exceeded; retry after {self.retry_after:.3f} s",
            rule=self.rule.name,
            retry_after=self.retry_after,
            headers=tuple(render_headers([self], legacy=True)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where a rule applies in a middleware, and how a request is keyed and charged.

    ``path`` is a prefix matched on whole segments (``"/api"`` covers ``/api`` and
    ``/api/x``, not ``/apix``), or the exact path with ``exact=True``. It is the full path the
    client asked for, mount prefix (``SCRIPT_NAME``, ``root_path``) included, and it is matched
    as :mod:`bastion.core.request` says for protective rules: the path as sent or its normal
    form (``//``, ``.`` and ``..`` resolved), in any case, with or without a trailing slash.
    ``methods`` limits the rule to some methods (``None``: all), compared in upper case; a rule
    for ``GET`` covers ``HEAD``, whose view frameworks run for it. ``key`` turns the request
    (an ASGI scope or a WSGI environ, per adapter) into a key, ``None`` to exempt it; without
    it the middleware's default key (the client IP) is used. ``cost`` is a number or a
    function of the request. Every matching route is applied: a global rule and a per-route
    rule both count.
    """

    rule: Rule
    path: str = "/"
    exact: bool = False
    methods: frozenset[str] | None = None
    key: Callable[[Any], str | None] | None = None
    cost: int | Callable[[Any], int] = 1
    folded: str = field(init=False, repr=False, compare=False)
    """``path`` as requests are compared with it (:func:`~bastion.core.request.match_forms`)."""
    under: str = field(init=False, repr=False, compare=False)
    """``folded`` with a trailing slash: what the paths below it start with."""

    def __post_init__(self) -> None:
        if not isinstance(self.rule, Rule):
            raise ConfigurationError(
                f"Route.rule must be a Rule, got {type(self.rule).__name__}", setting="rule"
            )
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ConfigurationError(
                f"Route.path must start with '/', got {self.path!r}", setting="path"
            )
        if self.methods is not None:
            if isinstance(self.methods, str) or not all(isinstance(m, str) for m in self.methods):
                raise ConfigurationError(
                    f"Route.methods must be a set of method names like {{'POST'}}, got "
                    f"{self.methods!r}",
                    setting="methods",
                )
            object.__setattr__(self, "methods", expand_methods(self.methods))
        folded = match_forms(normalize_path(self.path))[0]
        object.__setattr__(self, "folded", folded)
        object.__setattr__(self, "under", folded.rstrip("/") + "/")
        if isinstance(self.cost, int):
            _check_cost(self.cost)

    def matches(self, method: str, path: str) -> bool:
        """Whether the route covers a request for ``method`` ``path`` (the full path)."""
        return self.matches_forms((normalize_method(method),), match_forms(path))

    def matches_forms(self, methods: tuple[str, ...], forms: tuple[str, ...]) -> bool:
        """:meth:`matches` for the request's normalized ``methods`` (its own, then any a method
        override asks for: a route covers the request when it covers one of them) and the
        path's :func:`~bastion.core.request.match_forms`, read once per request by a
        middleware."""
        if self.methods is not None and self.methods.isdisjoint(methods):
            return False
        folded = self.folded
        if self.exact:
            return folded in forms
        if folded == "/":
            return True
        under = self.under
        for form in forms:  # noqa: SIM110 (hot path, per route per request: cheaper than any())
            if form == folded or form.startswith(under):
                return True
        return False

    @property
    def everywhere(self) -> bool:
        """Whether the route covers every request (no path or method condition)."""
        return self.path == "/" and not self.exact and self.methods is None

    def cost_of(self, request: Any) -> int:
        """The cost of ``request`` (the limiter checks it)."""
        cost = self.cost
        return cost if isinstance(cost, int) else cost(request)


def routes_of(rules: Route | Rule | Iterable[Route | Rule]) -> tuple[Route, ...]:
    """Normalise a middleware's ``rules`` argument: a bare rule applies to every path."""
    items = [rules] if isinstance(rules, Route | Rule) else list(rules)
    routes = tuple(item if isinstance(item, Route) else Route(rule=item) for item in items)
    if not routes:
        raise ConfigurationError("give at least one rule or route", setting="rules")
    return routes


def render_headers(
    results: Sequence[RateLimitResult], *, ietf: bool = True, legacy: bool = False
) -> list[tuple[str, str]]:
    """``RateLimit-Policy`` and ``RateLimit`` (``ietf``), ``X-RateLimit-*`` (``legacy``) and,
    when a result refuses, ``Retry-After``; names lower-case. Shadowed and failed results
    add nothing: a client is never told about a limit that is not enforced.
    """
    shown = [r for r in results if r.decisions and not r.shadowed]
    out: list[tuple[str, str]] = []
    if not shown:
        return out
    if ietf:
        policies = [
            r.rule.policy if r.names is r.rule.names else policy_header(r.names, r.rates)
            for r in shown
        ]
        out.append(("ratelimit-policy", ", ".join(policies)))
        out.append(("ratelimit", ", ".join(ratelimit_header(r.names, r.decisions) for r in shown)))
    decisions = [d for r in shown for d in r.decisions]
    if legacy:
        out.extend(legacy_headers(decisions))
    if any(not r.allowed for r in shown):
        out.append(("retry-after", retry_after_header(decisions)))
    return out


def header_bytes(
    results: Sequence[RateLimitResult], *, ietf: bool = True, legacy: bool = False
) -> list[tuple[bytes, bytes]]:
    """:func:`render_headers` as raw ASGI header pairs, with a fast path for the usual case
    (one admitted, enforced result with all its limits)."""
    if ietf and not legacy and len(results) == 1:
        only = results[0]
        if only.allowed and not only.shadowed and only.decisions and only.names is only.rule.names:
            rule = only.rule
            return [
                (b"ratelimit-policy", rule.policy_raw),
                (b"ratelimit", rule.ratelimit_raw(only.decisions)),
            ]
    return [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in render_headers(results, ietf=ietf, legacy=legacy)
    ]


_new = tuple.__new__  # builds a RateLimitResult without its Python-level __new__


class RateLimiter:
    """Decides rules against a store, applying failure policies and shadow mode.

    ``store`` is any store with the rate-limit capability
    (:class:`~bastion.stores.base.SupportsRateLimit`); one without it is a
    :class:`~bastion.errors.ConfigurationError` naming what it lacks. ``fallback`` is the
    per-process store for ``"fallback"`` limits during an outage (a bounded
    :class:`~bastion.stores.memory.MemoryStore` by default). ``auditor`` receives
    ``excess_rate_limit_exceeded`` for refusals and the outage events.
    """

    __slots__ = (
        "_adhoc",
        "_auditor",
        "_backend",
        "_failing",
        "_fallback",
        "_inline",
        "_own_fallback",
        "_shadow",
    )

    def __init__(
        self,
        store: SupportsRateLimit,
        *,
        auditor: Auditor | None = None,
        fallback: SupportsRateLimit | None = None,
        shadow: bool = False,
    ) -> None:
        self._backend = require_rate_limit(store)
        # A store whose hit_sync does no I/O (memory) is safe to call on the event loop.
        self._inline = self._backend.nonblocking is True
        self._auditor = auditor
        self._own_fallback = fallback is None
        self._fallback = (
            MemoryStore(max_entries=10_000) if fallback is None else require_rate_limit(fallback)
        )
        self._shadow = bool(shadow)
        if self._shadow:
            logger.warning(
                "bastion rate limits: RateLimiter(shadow=True); every rule counts and logs but "
                "refuses nothing. Turn it off once the logs are clean"
            )
        self._failing = False
        self._adhoc: dict[tuple[int, float, Strategy], Rule] = {}

    def __repr__(self) -> str:
        return f"RateLimiter(store={self._backend!r}, shadow={self._shadow})"

    @property
    def store(self) -> SupportsRateLimit:
        return self._backend

    @property
    def nonblocking(self) -> bool:
        """True when the store's decisions never block (memory): async callers may use
        :meth:`hit_sync` on the event loop and skip a coroutine per decision."""
        return self._inline

    # -- deciding ---------------------------------------------------------------------------

    async def hit(
        self, rule: Rule, key: str, *, cost: int = 1, client_ip: str | None = None
    ) -> RateLimitResult:
        """Charge ``cost`` to ``key`` under ``rule`` and decide. Never raises for a store
        failure: the failure policy decides instead."""
        if type(key) is str and 0 < len(key) <= _MAX_KEY_CHARS and type(cost) is int and cost >= 0:
            full = rule.prefix + key
        else:
            full = _store_key(rule, key, cost)
        if cost > MAX_COST:
            _check_cost(cost)
        try:
            if self._inline:  # a store that never blocks: skip the coroutine
                decisions = self._backend.hit_sync(full, rule.strategy, rule.rates, cost)
            else:
                decisions = await self._backend.hit(full, rule.strategy, rule.rates, cost)
        except StoreError as exc:
            return self._failed(rule, full, cost, exc, client_ip)
        if len(decisions) == 1 and decisions[0].allowed and not self._failing:
            return _new(
                RateLimitResult, (rule, True, decisions, rule.names, rule.rates, False, False)
            )
        return self._finish(rule, decisions, rule.names, rule.rates, client_ip)

    def hit_sync(
        self, rule: Rule, key: str, *, cost: int = 1, client_ip: str | None = None
    ) -> RateLimitResult:
        """:meth:`hit` for synchronous callers (WSGI): no event loop involved."""
        full = _store_key(rule, key, cost)
        try:
            decisions = self._backend.hit_sync(full, rule.strategy, rule.rates, cost)
        except StoreError as exc:
            return self._failed(rule, full, cost, exc, client_ip)
        if len(decisions) == 1 and decisions[0].allowed and not self._failing:
            return _new(
                RateLimitResult, (rule, True, decisions, rule.names, rule.rates, False, False)
            )
        return self._finish(rule, decisions, rule.names, rule.rates, client_ip)

    def _finish(
        self,
        rule: Rule,
        decisions: tuple[Decision, ...],
        names: tuple[str, ...],
        rates: tuple[Rate, ...],
        client_ip: str | None,
        *,
        from_store: bool = True,
    ) -> RateLimitResult:
        if from_store and self._failing:
            self._recovered()
        for decision in decisions:
            if not decision.allowed:
                break
        else:
            return RateLimitResult(
                rule=rule, allowed=True, decisions=decisions, names=names, rates=rates
            )
        shadow = rule.shadow or self._shadow
        if self._auditor is not None:
            self._auditor.emit(
                EventName.EXCESS_RATE_LIMIT_EXCEEDED,
                outcome=Outcome.SUCCESS if shadow else Outcome.BLOCKED,
                client_ip=client_ip,
                details={"rule": rule.name, "shadow": shadow},
            )
        if shadow:
            logger.info("shadow rate limit %r would have refused a request", rule.name)
            return RateLimitResult(
                rule=rule,
                allowed=True,
                decisions=decisions,
                names=names,
                rates=rates,
                shadowed=True,
            )
        return RateLimitResult(
            rule=rule, allowed=False, decisions=decisions, names=names, rates=rates
        )

    def _failed(
        self, rule: Rule, key: str, cost: int, exc: StoreError, client_ip: str | None
    ) -> RateLimitResult:
        if not self._failing:
            self._failing = True
            logger.warning(
                "rate-limit store failed (%s); limits follow their failure policy until it "
                "answers again",
                exc,
            )
            if self._auditor is not None:
                self._auditor.emit(
                    "ratelimit_store_unavailable",
                    outcome=Outcome.FAILURE,
                    details={"rule": rule.name, "error": type(exc).__name__},
                )
        policies = [limit.on_failure for limit in rule.limits]
        if FailurePolicy.CLOSED in policies and not (rule.shadow or self._shadow):
            return RateLimitResult(
                rule=rule, allowed=False, decisions=(), names=(), rates=(), unavailable=True
            )
        picked = [i for i, policy in enumerate(policies) if policy is FailurePolicy.FALLBACK]
        if not picked:
            return RateLimitResult(rule=rule, allowed=True, decisions=(), names=(), rates=())
        rates = tuple(rule.rates[i] for i in picked)
        names = tuple(rule.names[i] for i in picked)
        decisions = self._fallback.hit_sync(key, rule.strategy, rates, cost)
        return self._finish(rule, decisions, names, rates, client_ip, from_store=False)

    def _recovered(self) -> None:
        self._failing = False
        logger.warning("rate-limit store answers again; limits are shared again")
        if self._auditor is not None:
            self._auditor.emit("ratelimit_store_recovered", outcome=Outcome.SUCCESS)

    # -- the guide's API ----------------------------------------------------------------------

    def adhoc_rule(self, limit: int, window: float, strategy: Strategy | str) -> Rule:
        """The rule for ``limit`` requests per ``window`` seconds (cached per limiter)."""
        chosen = Strategy.coerce(strategy)
        cache_key = (limit, float(window), chosen)
        rule = self._adhoc.get(cache_key)
        if rule is None:
            rate = Rate.per(limit, window)
            name = f"{chosen.value}-{str(rate).replace('/', '-per-')}"
            rule = Rule(name, rate, strategy=chosen)
            if len(self._adhoc) >= _MAX_ADHOC_RULES:
                self._adhoc.clear()
            self._adhoc[cache_key] = rule
        return rule

    async def check_rate_limit(
        self,
        key: str,
        limit: int,
        window: float,
        strategy: Strategy | str = Strategy.FIXED_WINDOW,
        *,
        cost: int = 1,
    ) -> RateLimitResult:
        """Charge ``key`` against ``limit`` per ``window`` seconds with ``strategy``
        (``"fixed_window"``, ``"sliding_window"``, ``"token_bucket"`` or ``"sliding_log"``).
        The result is truthy when allowed."""
        return await self.hit(self.adhoc_rule(limit, window, strategy), key, cost=cost)

    def check_rate_limit_sync(
        self,
        key: str,
        limit: int,
        window: float,
        strategy: Strategy | str = Strategy.FIXED_WINDOW,
        *,
        cost: int = 1,
    ) -> RateLimitResult:
        """:meth:`check_rate_limit` for synchronous callers."""
        return self.hit_sync(self.adhoc_rule(limit, window, strategy), key, cost=cost)

    def rate_limit(
        self,
        requests: int,
        window: float,
        strategy: Strategy | str = Strategy.FIXED_WINDOW,
        key_func: Callable[..., str] | None = None,
        *,
        cost: int = 1,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function (sync or async) so that each call is charged first.

        ``key_func`` gets the call's arguments and returns the key; without it every call
        shares one counter. Counters are per decorated function. A refused call raises
        :class:`~bastion.errors.RateLimitExceeded`; a failed-closed one StoreUnavailable. For
        web handlers use :mod:`bastion.integrations.ratelimit`, which answers 429 instead.
        """
        rule = self.adhoc_rule(requests, window, strategy)

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            where = f"{func.__module__}.{func.__qualname__}"

            def key_of(*args: Any, **kwargs: Any) -> str:
                return where if key_func is None else f"{where}:{key_func(*args, **kwargs)}"

            if inspect.iscoroutinefunction(func):
                async_func: Callable[..., Awaitable[Any]] = func

                @functools.wraps(func)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    result = await self.hit(rule, key_of(*args, **kwargs), cost=cost)
                    result.raise_for_limit()
                    return await async_func(*args, **kwargs)

                wrapped: Any = async_wrapper
                return wrapped  # type: ignore[no-any-return]

            @functools.wraps(func)
            def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                self.hit_sync(rule, key_of(*args, **kwargs), cost=cost).raise_for_limit()
                return func(*args, **kwargs)

            return sync_wrapper

        return decorate

    async def aclose(self) -> None:
        """Drop the default fallback's counts. The store, and a ``fallback`` passed in, belong
        to whoever opened them (one store serves sessions and rate limits): close them there."""
        if self._own_fallback and isinstance(self._fallback, MemoryStore):
            await self._fallback.aclose()


def _store_key(rule: Rule, key: str, cost: int) -> str:
    if type(cost) is not int or not 0 <= cost <= MAX_COST:
        _check_cost(cost)
    if type(key) is not str or not key or len(key) > _MAX_KEY_CHARS:
        if not isinstance(key, str) or not key:
            raise ConfigurationError(
                f"a rate-limit key must be non-empty text, got {key!r:.40}; return None from a "
                "key function to exempt a request instead",
                setting="key",
            )
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        key = "sha256:" + digest
    return rule.prefix + key


def _check_cost(cost: int) -> None:
    if isinstance(cost, bool) or not isinstance(cost, int) or not 0 <= cost <= MAX_COST:
        raise ConfigurationError(
            f"a request's cost must be a whole number from 0 to {MAX_COST}, got {cost!r}",
            setting="cost",
        )
