"""Rules: what is limited (a named set of limits), where (path and methods), how a request is
keyed and charged, and the outcome of one rule for one request.

A :class:`Rule` is a named set of limits (``"10/second; 1000/day"``) counted with one
algorithm; every limit must admit a request, and a refused request charges none of them. The
rule's name is part of every stored key, so two rules with the same name share their counters:
that is how a shared limit is written.

Where a rule applies is written in the one path grammar of :mod:`bastion.core.paths`
(``path="/login"`` exactly that path, ``path="/api/*"`` the prefix, every path by default) and
matched as protective rules are (:meth:`~bastion.core.paths.PathPattern.covers`): the path as
sent or in normal form, any case, with or without a trailing slash. It is the full path the
client asked for, mount prefix (``SCRIPT_NAME``, ``root_path``) included. ``methods`` limits
the rule to some methods (``None``: all), compared in upper case; a rule for ``GET`` covers
``HEAD``, whose view frameworks run for it, and a rule naming methods also covers a request
that a method override or a body can turn into one of them (:mod:`bastion.core.request`).

``key`` turns the request (a :class:`~bastion.core.request.RequestView`, the same under every
adapter) into a key, ``None`` to exempt it; without it the middleware's default key (the
client IP) is used. ``cost`` is a number or a function of the request. Every matching rule is
applied: a global rule and a per-path rule both count. :class:`RuleSet` is the compiled list a
middleware holds, and :class:`Verdict` the answer for one request.
"""

from __future__ import annotations

import enum
import logging
import math
import re
from dataclasses import dataclass
from math import ceil as _ceil
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

from bastion.core.paths import EVERYWHERE, PathPattern
from bastion.core.ratelimit.headers import (
    check_policy_name,
    header_bytes,
    policy_header,
    render_headers,
    retry_after_header,
)
from bastion.core.ratelimit.keys import ClientIPKey, client_ip_key
from bastion.core.ratelimit.rates import DEFAULT_STRATEGY, Rate, Strategy, parse_rates
from bastion.core.refusal import (
    RATE_LIMIT_FAILED,
    RATE_LIMIT_STORE_UNAVAILABLE,
    RATE_LIMITED,
    Refusal,
)
from bastion.core.request import (
    OVERRIDE_HEADERS,
    body_methods,
    expand_methods,
    has_body,
    match_forms,
    normalize_method,
    override_methods,
)
from bastion.errors import ConfigurationError, RateLimitExceeded, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from bastion.core.ratelimit.algorithms import Decision
    from bastion.core.ratelimit.keys import KeyFunc
    from bastion.core.request import RequestView

__all__ = [
    "MAX_COST",
    "OUTAGE_RETRY_AFTER",
    "FailurePolicy",
    "Limit",
    "LimitsSpec",
    "RateLimitResult",
    "Rule",
    "RuleSet",
    "Verdict",
    "check_cost",
]

logger = logging.getLogger("bastion.security.ratelimit")

MAX_COST: Final = 1_000_000
"""Largest cost one request may have."""


class FailurePolicy(enum.StrEnum):
    """What a limit does when its backend fails (see the module docstring)."""

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
    """A named set of limits counted with one strategy, and where it applies. Immutable.

    ``limits`` is text (``"10/second; 1000/day"``), a :class:`Rate`, a :class:`Limit` or a
    sequence of those. ``on_failure`` applies to limits given as text or rates. The names in
    the headers are the limits' own names, else ``name`` (one limit) or ``name-1``, ``name-2``.
    ``path``, ``methods``, ``key`` and ``cost`` are described in the module docstring; the
    default strategy is :data:`~bastion.core.ratelimit.rates.DEFAULT_STRATEGY`.
    """

    __slots__ = (
        "_items",
        "_one",
        "cost",
        "everywhere",
        "key",
        "limits",
        "methods",
        "name",
        "names",
        "path",
        "policy",
        "policy_pair",
        "policy_raw",
        "prefix",
        "rates",
        "shadow",
        "strategy",
    )

    _items: tuple[str, ...]
    _one: bytes
    cost: int | Callable[[RequestView], int]
    everywhere: bool
    key: KeyFunc | None
    limits: tuple[Limit, ...]
    methods: frozenset[str] | None
    name: str
    names: tuple[str, ...]
    path: PathPattern
    policy: str
    policy_pair: tuple[bytes, bytes]
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
        path: str | PathPattern = EVERYWHERE,
        methods: Iterable[str] | None = None,
        key: KeyFunc | None = None,
        cost: int | Callable[[RequestView], int] = 1,
        strategy: Strategy | str = DEFAULT_STRATEGY,
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
        pattern = path if isinstance(path, PathPattern) else PathPattern.parse(path, setting="path")
        chosen = _methods(methods)
        if key is not None and not callable(key):
            raise ConfigurationError(
                f"Rule.key must be a function of the request, got {key!r:.40}", setting="key"
            )
        if isinstance(cost, int):
            check_cost(cost)
            # A plain int: the engine tells a fixed cost from a function by ``type(...) is
            # int``, so an IntEnum kept as given would be called as a function.
            cost = int(cost)
        elif not callable(cost):
            raise ConfigurationError(
                f"Rule.cost must be a whole number or a function of the request, got {cost!r:.40}",
                setting="cost",
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
        set_(self, "path", pattern)
        set_(self, "methods", chosen)
        set_(self, "key", key)
        set_(self, "cost", cost)
        set_(self, "everywhere", pattern.everywhere and chosen is None)
        set_(self, "policy", policy_header(names, rates))
        set_(self, "policy_raw", self.policy.encode("ascii"))
        set_(self, "prefix", name + "|")
        set_(self, "policy_pair", (b"ratelimit-policy", self.policy_raw))
        set_(self, "_items", tuple(f'"{n}";r=' for n in names))
        # The RateLimit value of the first limit, to be filled with its remaining and seconds
        # (a name is 1-64 of letters, digits and _ . : / + * -: no '%' to escape).
        set_(self, "_one", f'"{names[0]}";r=%d;t=%d'.encode("ascii"))

    def matches(self, method: str, path: str) -> bool:
        """Whether the rule covers a request for ``method`` ``path`` (the full path)."""
        return self.matches_forms((normalize_method(method),), match_forms(path))

    def matches_forms(self, methods: tuple[str, ...], forms: tuple[str, ...]) -> bool:
        """:meth:`matches` for the request's normalized ``methods`` (its own, then any a method
        override asks for: the rule covers the request when it covers one of them) and the
        path's :func:`~bastion.core.request.match_forms`."""
        if self.methods is not None and self.methods.isdisjoint(methods):
            return False
        return self.path.covers(forms)

    def cost_of(self, request: RequestView) -> int:
        """The cost of ``request`` (the limiter checks it)."""
        cost = self.cost
        return cost if isinstance(cost, int) else cost(request)

    def ratelimit_raw(self, decisions: Sequence[Decision]) -> bytes:
        """The ``RateLimit`` header value for this rule's full set of decisions, as bytes."""
        if len(decisions) == 1:
            decision = decisions[0]
            seconds = _ceil(decision[3] - 1e-9)  # reset_after
            return self._one % (decision[2], seconds if seconds > 0 else 0)  # remaining
        parts = []
        for item, decision in zip(self._items, decisions, strict=True):
            seconds = math.ceil(decision.reset_after - 1e-9)
            parts.append(f"{item}{decision.remaining};t={seconds if seconds > 0 else 0}")
        return ", ".join(parts).encode("ascii")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Rule is immutable; build a new one instead of setting {name}")

    def __repr__(self) -> str:
        rates = "; ".join(str(rate) for rate in self.rates)
        where = "" if self.path.everywhere else f", path={self.path.text!r}"
        methods = "" if self.methods is None else f", methods={sorted(self.methods)!r}"
        return f"Rule({self.name!r}, {rates!r}{where}{methods}, strategy={self.strategy.value!r})"


_METHOD_TOKEN: Final = re.compile(r"[!#$%&'+\-.^_`|~0-9A-Za-z]+", re.ASCII)
"""An HTTP method name (an RFC 9110 token, less ``*``): what a request's method can be."""


def _methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    """The rule's methods, refusing what no request could match: each of them would leave
    the rule covering nothing, silently (a generator is read once, here)."""
    if methods is None:
        return None
    if isinstance(methods, str):
        raise ConfigurationError(
            f"Rule.methods must be a set of method names like {{'POST'}}, got {methods!r}",
            setting="methods",
        )
    names = tuple(methods)
    if not all(isinstance(m, str) for m in names):
        raise ConfigurationError(
            f"Rule.methods must be a set of method names like {{'POST'}}, got {names!r}",
            setting="methods",
        )
    if not names:
        raise ConfigurationError(
            "Rule.methods is empty, so the rule would cover no request; leave methods=None "
            "for every method",
            setting="methods",
        )
    for name in names:
        if name == "*":
            raise ConfigurationError(
                "Rule.methods: '*' is no method name; leave methods=None for every method",
                setting="methods",
            )
        if _METHOD_TOKEN.fullmatch(name) is None:
            raise ConfigurationError(
                f"Rule.methods: {name!r:.40} is no HTTP method name (letters, no spaces), so "
                "no request could match it; write it like 'POST'",
                setting="methods",
            )
    return expand_methods(names)


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
    failed-open limit has none). ``unavailable`` means a fail-closed limit's backend failed
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


OUTAGE_RETRY_AFTER: Final = 5
"""``Retry-After`` seconds of the 503 a fail-closed limit answers while its store is down: the
same wait the session layer's outage 503 gives, so clients back off instead of retrying at
once against a store that is recovering (there is no decision to compute a wait from)."""
_OUTAGE_WAIT: Final = str(OUTAGE_RETRY_AFTER)
_OUTAGE_WAIT_RAW: Final = _OUTAGE_WAIT.encode("ascii")

_ANYWHERE: Final[tuple[tuple[str, ...], tuple[str, ...]]] = ((), ("/",))
_new: Final[Callable[..., Any]] = tuple.__new__


class RuleSet:
    """The rules of one middleware or decorator, compiled once: which apply to a request, with
    which key and cost. ``key`` is the default key function of rules without their own (the
    client IP by default); ``ietf_headers``/``legacy_headers`` choose the headers sent."""

    __slots__ = (
        "_by_method",
        "conditional",
        "entries",
        "ietf",
        "key",
        "legacy",
        "peer_keys",
        "plain",
        "rules",
    )

    def __init__(
        self,
        rules: Rule | Iterable[Rule],
        *,
        key: KeyFunc | None = None,
        ietf_headers: bool = True,
        legacy_headers: bool = False,
    ) -> None:
        items = (rules,) if isinstance(rules, Rule) else tuple(rules)
        for item in items:
            if not isinstance(item, Rule):
                raise ConfigurationError(
                    f"rate-limit rules must be Rule objects, got {type(item).__name__}",
                    setting="rules",
                )
        if not items:
            raise ConfigurationError("give at least one rule", setting="rules")
        self.rules: tuple[Rule, ...] = items
        self.key: KeyFunc = key if key is not None else client_ip_key()
        self.ietf = bool(ietf_headers)
        self.legacy = bool(legacy_headers)
        self.plain = self.ietf and not self.legacy
        """The IETF headers alone (the default): the ones rendered directly as bytes."""
        self.entries: tuple[tuple[Rule, KeyFunc, bool], ...] = tuple(
            (rule, rule.key or self.key, rule.everywhere) for rule in items
        )
        self.conditional = not all(rule.everywhere for rule in items)
        """Whether some rule names a path or methods (else nothing of a request is read)."""
        self._by_method = any(rule.methods is not None for rule in items)
        self.peer_keys: tuple[tuple[Rule, Callable[[str | None], str | None]], ...] | None = (
            tuple((rule, key_of.of_peer) for rule, key_of, _ in self.entries)  # type: ignore[attr-defined]
            if all(
                rule.everywhere
                and type(rule.cost) is int
                and isinstance(key_of, ClientIPKey)
                and key_of.peer_only
                for rule, key_of, _ in self.entries
            )
            else None
        )
        """When every rule applies everywhere, at a fixed cost, keyed by the peer alone (the
        default key without trusted proxies): each rule with its key of the peer, for
        :meth:`~bastion.engine.ratelimit.RateLimiter.check_peer_sync`. Else ``None``."""

    def __repr__(self) -> str:
        return f"RuleSet({list(self.rules)!r})"

    def targets(self, request: RequestView) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What rules are matched against: the request's methods (its own, a body's
        ``POST`` and any a method override asks for, read only when a rule names methods)
        and its path's match forms (read only when a rule names a path)."""
        if not self.conditional:
            return _ANYWHERE
        forms = match_forms(request.path)
        if not self._by_method:
            return (normalize_method(request.method),), forms
        headers = request.headers
        body = has_body(headers.get("content-length"), headers.get("transfer-encoding"))
        methods = body_methods(request.method, body=body)
        overrides = [headers.get(name) for name in OVERRIDE_HEADERS]
        asked = override_methods(overrides, request.query)
        return (*methods, *asked), forms

    def verdict(self, results: list[RateLimitResult]) -> Verdict:
        """The verdict of the rules' ``results`` for one request: 503 before 429."""
        if len(results) == 1:  # the usual case: one rule applies
            only = results[0]
            if only.allowed:
                admitted: Verdict = _new(Verdict, (200, (only,), None, self))
                return admitted
            if not only.unavailable:
                refused: Verdict = _new(Verdict, (429, (only,), RATE_LIMITED, self))
                return refused
        status, refusal = 200, None
        for result in results:
            if result.unavailable:
                status, refusal = 503, RATE_LIMIT_STORE_UNAVAILABLE
                break
            if not result.allowed and refusal is None:
                status, refusal = 429, RATE_LIMITED
        verdict: Verdict = _new(Verdict, (status, tuple(results), refusal, self))
        return verdict

    def failed(self, results: list[RateLimitResult], failed: RateLimitResult) -> Verdict:
        """The verdict when a rule's key or cost function failed (``failed``, its refusing
        result, after the ``results`` of the rules decided before it): ``503`` with
        :data:`~bastion.core.refusal.RATE_LIMIT_FAILED` and no headers, since the failure is
        not known to be temporary. The rules after it are not charged."""
        verdict: Verdict = _new(Verdict, (503, (*results, failed), RATE_LIMIT_FAILED, self))
        return verdict


class Verdict(NamedTuple):
    """What the rate limits say of one request: ``status`` 200 (go on; :attr:`headers` to add
    to the response), 429 (refused; ``Retry-After`` among the headers) or 503 (a fail-closed
    limit's store is down), with the ``refusal`` to render and each rule's result."""

    status: int
    results: tuple[RateLimitResult, ...]
    refusal: Refusal | None
    rules: RuleSet

    @property
    def allowed(self) -> bool:
        return self.refusal is None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """The rate-limit headers of the verdict; for a store outage's 503 only
        ``Retry-After`` (:data:`OUTAGE_RETRY_AFTER`), for a failed key function's none."""
        if self.status == 503:
            return [] if self.refusal is RATE_LIMIT_FAILED else [("retry-after", _OUTAGE_WAIT)]
        rules = self.rules
        return render_headers(self.results, ietf=rules.ietf, legacy=rules.legacy)

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """:attr:`headers` as raw ASGI header pairs. The bytes of one enforced rule with all its
        limits are built here directly: the common case, admitted or refused."""
        status, results, refusal, rules = self
        if status == 503:
            return [] if refusal is RATE_LIMIT_FAILED else [(b"retry-after", _OUTAGE_WAIT_RAW)]
        if len(results) == 1 and rules.plain:
            # Fields by index (a named tuple's attributes cost a descriptor call each):
            # rule, allowed, decisions, names, rates, unavailable, shadowed.
            only = results[0]
            rule = only[0]
            decisions = only[2]
            if decisions and not only[6] and only[3] is rule.names:
                if len(decisions) == 1:
                    decision = decisions[0]  # allowed, limit, remaining, reset_after, retry_after
                    seconds = _ceil(decision[3] - 1e-9)
                    value = rule._one % (decision[2], seconds if seconds > 0 else 0)
                else:
                    value = rule.ratelimit_raw(decisions)
                raw = [rule.policy_pair, (b"ratelimit", value)]
                if not only[1]:
                    if len(decisions) == 1:  # retry_after_header() for one refusing limit
                        seconds = _ceil(decisions[0][4] - 1e-9)
                        wait = b"%d" % seconds if seconds > 1 else b"1"
                    else:
                        wait = retry_after_header(decisions).encode("ascii")
                    raw.append((b"retry-after", wait))
                return raw
        return header_bytes(results, ietf=rules.ietf, legacy=rules.legacy)


def check_cost(cost: int) -> None:
    """Refuse a cost that is not a whole number from 0 to :data:`MAX_COST`."""
    if isinstance(cost, bool) or not isinstance(cost, int) or not 0 <= cost <= MAX_COST:
        raise ConfigurationError(
            f"a request's cost must be a whole number from 0 to {MAX_COST}, got {cost!r}",
            setting="cost",
        )
