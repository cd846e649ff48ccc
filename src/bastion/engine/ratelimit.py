"""The rate limiter: rules over a store, failure policies, shadow mode, per-request verdicts.

A :class:`~bastion.core.ratelimit.rules.Rule` (re-exported here) is a named set of limits and
where it applies. :class:`RateLimiter` decides with a store's rate-limit capability
(:class:`~bastion.stores.base.SupportsRateLimit`: memory, SQLite and Redis stores have it): one
rule and key through :meth:`RateLimiter.hit` (async) or
:meth:`RateLimiter.hit_sync` (WSGI, no event loop), or a whole request through
:meth:`RateLimiter.check`/:meth:`RateLimiter.check_sync`, which apply every matching rule of a
:class:`~bastion.core.ratelimit.rules.RuleSet` and return a
:class:`~bastion.core.ratelimit.rules.Verdict` (503 before 429): the one rule loop of every
adapter. When the store fails, each limit follows its ``on_failure`` policy:

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

import functools
import hashlib
import inspect
import logging
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from bastion.core.audit import EventName, Outcome
from bastion.core.ratelimit.headers import header_bytes, render_headers
from bastion.core.ratelimit.rates import DEFAULT_STRATEGY, Rate, Strategy
from bastion.core.ratelimit.rules import (
    MAX_COST,
    FailurePolicy,
    Limit,
    LimitsSpec,
    RateLimitResult,
    Rule,
    RuleSet,
    Verdict,
    check_cost,
)
from bastion.errors import ConfigurationError, StoreError
from bastion.stores.base import require_rate_limit
from bastion.stores.memory import MemoryStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from bastion.core.audit import Auditor
    from bastion.core.ratelimit.algorithms import Decision
    from bastion.core.request import RequestView
    from bastion.stores.base import SupportsRateLimit

__all__ = [
    "MAX_COST",
    "FailurePolicy",
    "Limit",
    "LimitsSpec",
    "RateLimitResult",
    "RateLimiter",
    "Rule",
    "RuleSet",
    "Verdict",
    "header_bytes",
    "render_headers",
]

P = ParamSpec("P")
R = TypeVar("R")

logger = logging.getLogger("bastion.security.ratelimit")

_ANYWHERE: Final[tuple[tuple[str, ...], tuple[str, ...]]] = ((), ())
"""What rules that all apply everywhere are matched against: nothing is read."""
_MAX_KEY_CHARS: Final = 200
_MAX_ADHOC_RULES: Final = 1024


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
        if type(key) is str and 0 < len(key) <= _MAX_KEY_CHARS and type(cost) is int:
            full = rule.prefix + key if 0 <= cost <= MAX_COST else _store_key(rule, key, cost)
        else:
            full = _store_key(rule, key, cost)
        return await self._decide(rule, full, cost, client_ip)

    async def _decide(
        self, rule: Rule, full: str, cost: int, client_ip: str | None
    ) -> RateLimitResult:
        try:
            if self._inline:  # a store that never blocks: skip the coroutine
                decisions = self._backend.hit_sync(full, rule.strategy, rule.rates, cost)
            else:
                decisions = await self._backend.hit(full, rule.strategy, rule.rates, cost)
        except StoreError as exc:
            return self._failed(rule, full, cost, exc, client_ip)
        if len(decisions) == 1 and not self._failing:
            if decisions[0].allowed:
                return _new(
                    RateLimitResult, (rule, True, decisions, rule.names, rule.rates, False, False)
                )
            if self._auditor is None and not rule.shadow and not self._shadow:
                # _finish's answer when there is nothing to audit or shadow: a flood is all
                # refusals, so they skip the call
                return _new(
                    RateLimitResult, (rule, False, decisions, rule.names, rule.rates, False, False)
                )
        return self._finish(rule, decisions, rule.names, rule.rates, client_ip)

    def hit_sync(
        self, rule: Rule, key: str, *, cost: int = 1, client_ip: str | None = None
    ) -> RateLimitResult:
        """:meth:`hit` for synchronous callers (WSGI): no event loop involved."""
        if type(key) is str and 0 < len(key) <= _MAX_KEY_CHARS and type(cost) is int:
            full = rule.prefix + key if 0 <= cost <= MAX_COST else _store_key(rule, key, cost)
        else:
            full = _store_key(rule, key, cost)
        return self._decide_sync(rule, full, cost, client_ip)

    def _decide_sync(
        self, rule: Rule, full: str, cost: int, client_ip: str | None
    ) -> RateLimitResult:
        try:
            decisions = self._backend.hit_sync(full, rule.strategy, rule.rates, cost)
        except StoreError as exc:
            return self._failed(rule, full, cost, exc, client_ip)
        if len(decisions) == 1 and not self._failing:
            if decisions[0].allowed:
                return _new(
                    RateLimitResult, (rule, True, decisions, rule.names, rule.rates, False, False)
                )
            if self._auditor is None and not rule.shadow and not self._shadow:
                # _finish's answer when there is nothing to audit or shadow: a flood is all
                # refusals, so they skip the call
                return _new(
                    RateLimitResult, (rule, False, decisions, rule.names, rule.rates, False, False)
                )
        return self._finish(rule, decisions, rule.names, rule.rates, client_ip)

    async def check(self, request: RequestView, rules: RuleSet) -> Verdict:
        """Apply every rule of ``rules`` that covers ``request``, each with its key and cost,
        and answer with the verdict (503 before 429). A key function returning ``None``
        exempts the request from that rule. A key or cost function that raises, or returns
        no valid key or cost, fails its rule closed (see :meth:`_key_failed`)."""
        if self._inline:  # a store that never blocks: no coroutine per rule
            return self.check_sync(request, rules)
        methods, forms = rules.targets(request) if rules.conditional else _ANYWHERE
        results: list[RateLimitResult] = []
        for rule, key_of, everywhere in rules.entries:
            if not everywhere and not rule.matches_forms(methods, forms):
                continue
            try:
                key = key_of(request)
                if key is None:
                    continue
                cost = rule.cost
                cost = cost if type(cost) is int else cost(request)  # type: ignore[operator]
                full = _store_key(rule, key, cost)
            except Exception as exc:  # noqa: BLE001 (any bug in the app's function)
                failed = self._key_failed(rule, exc, request.peer)
                if failed is None:
                    continue
                return rules.failed(results, failed)
            results.append(await self._decide(rule, full, cost, request.peer))
        return rules.verdict(results)

    def check_sync(self, request: RequestView, rules: RuleSet) -> Verdict:
        """:meth:`check` for synchronous callers (WSGI, Flask), and for a store that never
        blocks under ASGI."""
        methods, forms = rules.targets(request) if rules.conditional else _ANYWHERE
        results: list[RateLimitResult] = []
        for rule, key_of, everywhere in rules.entries:
            if not everywhere and not rule.matches_forms(methods, forms):
                continue
            try:
                key = key_of(request)
                if key is None:
                    continue
                cost = rule.cost
                if type(cost) is not int:
                    cost = cost(request)  # type: ignore[operator]
                if type(key) is str and 0 < len(key) <= _MAX_KEY_CHARS and type(cost) is int:
                    full = (
                        rule.prefix + key if 0 <= cost <= MAX_COST else _store_key(rule, key, cost)
                    )
                else:
                    full = _store_key(rule, key, cost)
            except Exception as exc:  # noqa: BLE001 (any bug in the app's function)
                failed = self._key_failed(rule, exc, request.peer)
                if failed is None:
                    continue
                return rules.failed(results, failed)
            results.append(self._decide_sync(rule, full, cost, request.peer))
        return rules.verdict(results)

    def check_peer_sync(self, peer: str | None, rules: RuleSet) -> Verdict:
        """:meth:`check_sync` for a rule set decided by the peer alone
        (:attr:`~bastion.core.ratelimit.rules.RuleSet.peer_keys` is set: every rule applies
        everywhere, at a fixed cost, keyed by the client's address without trusted proxies):
        the same verdict, with no request view built."""
        peer_keys = rules.peer_keys
        if peer_keys is None:
            raise ConfigurationError(
                "check_peer_sync needs a rule set decided by the peer alone (rules.peer_keys); "
                "use check_sync",
                setting="rules",
            )
        results: list[RateLimitResult] = []
        for rule, key_of in peer_keys:
            cost: int = rule.cost  # type: ignore[assignment]
            try:
                key = key_of(peer)
                if key is None:
                    continue
                if len(key) > _MAX_KEY_CHARS:
                    full = _store_key(rule, key, cost)
                else:
                    full = rule.prefix + key
            except Exception as exc:  # noqa: BLE001 (the same contract as check_sync)
                failed = self._key_failed(rule, exc, peer)
                if failed is None:
                    continue
                return rules.failed(results, failed)
            result = self._decide_sync(rule, full, cost, peer)
            if len(peer_keys) == 1 and result.allowed:  # the usual case: one rule, admitted
                admitted: Verdict = _new(Verdict, (200, (result,), None, rules))
                return admitted
            results.append(result)
        return rules.verdict(results)

    def _key_failed(
        self, rule: Rule, exc: Exception, client_ip: str | None
    ) -> RateLimitResult | None:
        """A rule's key or cost function raised, or gave no valid key or cost. That is a bug in
        the app's code, but the request may be what trips it (a header the function cannot
        parse), so it is not answered as a server error with a traceback: the limit cannot be
        decided, and the rule fails closed (a result that refuses, answered 503 with
        :data:`~bastion.core.refusal.RATE_LIMIT_FAILED`; the app is not called). A shadow
        rule refuses nothing, so it is skipped (``None``). Either way the error is logged with
        the rule's name and its traceback, and audited (``ratelimit_key_failed``)."""
        shadow = rule.shadow or self._shadow
        logger.error(
            "rate-limit rule %r: its key or cost function failed (%s: %s); %s",
            rule.name,
            type(exc).__name__,
            exc,
            "the shadow rule is skipped" if shadow else "the request is refused with 503",
            exc_info=exc,
        )
        if self._auditor is not None:
            self._auditor.emit(
                "ratelimit_key_failed",
                outcome=Outcome.FAILURE,
                client_ip=client_ip,
                details={"rule": rule.name, "error": type(exc).__name__, "shadow": shadow},
            )
        if shadow:
            return None
        return RateLimitResult(
            rule=rule, allowed=False, decisions=(), names=(), rates=(), unavailable=True
        )

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
            admitted: RateLimitResult = _new(
                RateLimitResult, (rule, True, decisions, names, rates, False, False)
            )
            return admitted
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
        refused: RateLimitResult = _new(
            RateLimitResult, (rule, False, decisions, names, rates, False, False)
        )
        return refused

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
        strategy: Strategy | str = DEFAULT_STRATEGY,
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
        strategy: Strategy | str = DEFAULT_STRATEGY,
        *,
        cost: int = 1,
    ) -> RateLimitResult:
        """:meth:`check_rate_limit` for synchronous callers."""
        return self.hit_sync(self.adhoc_rule(limit, window, strategy), key, cost=cost)

    def rate_limit(
        self,
        requests: int,
        window: float,
        strategy: Strategy | str = DEFAULT_STRATEGY,
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
        check_cost(cost)
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
