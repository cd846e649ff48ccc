"""The rate limiter: rules and where they apply, headers, shadow mode, failures, the guide's API."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from bastion.core.audit import Auditor, IdentifierHasher
from bastion.core.clock import FrozenClock
from bastion.core.keys import SecretKey
from bastion.core.ratelimit import DEFAULT_STRATEGY, Rate, Strategy
from bastion.core.refusal import RATE_LIMITED
from bastion.core.request import RequestView
from bastion.engine.ratelimit import (
    FailurePolicy,
    Limit,
    RateLimiter,
    Rule,
    RuleSet,
    render_headers,
)
from bastion.errors import ConfigurationError, RateLimitExceeded, StoreUnavailable
from bastion.stores.memory import MemoryStore
from bastion.stores.redis import RedisStore
from bastion.testing.audit import RecordingAuditSink

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.testing.redis_server import RedisServer

NOW = 1_700_000_000.0


def make_limiter(
    clock: FrozenClock | None = None, *, shadow: bool = False
) -> tuple[RateLimiter, RecordingAuditSink]:
    clock = clock or FrozenClock(NOW)
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(SecretKey(b"k" * 32)), clock, sink)
    return (
        RateLimiter(MemoryStore(clock=clock), auditor=auditor, shadow=shadow),
        sink,
    )


def test_rule_building() -> None:
    rule = Rule("api", "10/second; 1000/day", strategy="gcra")
    assert rule.strategy is Strategy.TOKEN_BUCKET
    assert rule.names == ("api-1", "api-2")
    assert rule.policy == '"api-1";q=10;w=1, "api-2";q=1000;w=86400'
    assert [limit.on_failure for limit in rule.limits] == [FailurePolicy.FALLBACK] * 2
    named = Rule("login", [Limit(Rate.per(5, 60), name="burst", on_failure=FailurePolicy.CLOSED)])
    assert named.names == ("burst",)
    assert named.limits[0].on_failure is FailurePolicy.CLOSED
    assert Rule("one", "5/minute").names == ("one",)
    with pytest.raises(AttributeError, match="immutable"):
        rule.name = "other"
    with pytest.raises(ConfigurationError, match="name"):
        Rule('bad"name', "1/s")
    with pytest.raises(ConfigurationError, match="on_failure"):
        Limit(Rate.per(1, 1), on_failure="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="repeats"):
        Rule("r", [Rate.per(1, 1), Limit(Rate.per(1, 1))])


def test_rule_matching() -> None:
    assert Rule("r", "1/s").matches("GET", "/anything")
    api = Rule("r", "1/s", path="/api/*", methods=frozenset({"post"}))
    assert api.matches("POST", "/api")
    assert api.matches("POST", "/api/x")
    assert not api.matches("POST", "/apix")
    assert not api.matches("GET", "/api")
    exact = Rule("r", "1/s", path="/login")
    assert exact.matches("GET", "/login")
    assert not exact.matches("GET", "/login/x")
    with pytest.raises(ConfigurationError, match="starting with"):
        Rule("r", "1/s", path="api")
    with pytest.raises(ConfigurationError, match="cost"):
        Rule("r", "1/s", cost=-1)


def test_rule_paths_use_the_one_grammar() -> None:
    # "/api" is exactly /api, as for CSRF exemptions and header routes; "/api/*" the prefix.
    assert not Rule("r", "1/s", path="/api").matches("GET", "/api/x")
    assert Rule("r", "1/s", path="/api/*").matches("GET", "/API/x/")
    with pytest.raises(ConfigurationError, match="ends in '/'"):
        Rule("r", "1/s", path="/api/")
    with pytest.raises(ConfigurationError, match="methods"):
        Rule("r", "1/s", methods="POST")  # type: ignore[arg-type]


def test_one_default_algorithm() -> None:
    limiter, _ = make_limiter()
    assert Rule("r", "1/s").strategy is Strategy.TOKEN_BUCKET
    assert limiter.adhoc_rule(3, 60, DEFAULT_STRATEGY).strategy is Strategy.TOKEN_BUCKET
    assert limiter.check_rate_limit_sync("k", 1, 60).rule.strategy is Strategy.TOKEN_BUCKET


@pytest.mark.asyncio
async def test_hit_refuses_with_headers_and_audit() -> None:
    limiter, sink = make_limiter()
    rule = Rule("api", "2/minute; 100/day", strategy="fixed_window")
    first = await limiter.hit(rule, "1.2.3.4", client_ip="1.2.3.4")
    assert first.allowed
    assert first.headers(legacy=True) == [
        ("ratelimit-policy", '"api-1";q=2;w=60, "api-2";q=100;w=86400'),
        ("ratelimit", '"api-1";r=1;t=40, "api-2";r=99;t=6400'),
        ("x-ratelimit-limit", "2"),
        ("x-ratelimit-remaining", "1"),
        ("x-ratelimit-reset", "40"),
    ]
    assert limiter.hit_sync(rule, "1.2.3.4").allowed
    refused = await limiter.hit(rule, "1.2.3.4", client_ip="1.2.3.4")
    assert not refused
    assert refused.retry_after == 40.0
    assert refused.headers() == [
        ("ratelimit-policy", '"api-1";q=2;w=60, "api-2";q=100;w=86400'),
        ("ratelimit", '"api-1";r=0;t=40, "api-2";r=98;t=6400'),
        ("retry-after", "40"),
    ]
    assert [(e.name, e.outcome, e.details["rule"]) for e in sink.events] == [
        ("excess_rate_limit_exceeded", "blocked", "api")
    ]
    assert sink.events[0].client_ip is not None  # hashed, never the raw address
    assert "1.2.3.4" not in sink.events[0].to_json()
    # other keys and other rules are counted apart
    assert (await limiter.hit(rule, "5.6.7.8")).allowed
    assert (await limiter.hit(Rule("other", "2/minute"), "1.2.3.4")).allowed


@pytest.mark.asyncio
async def test_shadow_mode_counts_but_admits(caplog: pytest.LogCaptureFixture) -> None:
    limiter, sink = make_limiter()
    rule = Rule("new", "1/minute", shadow=True)
    assert (await limiter.hit(rule, "k")).allowed
    with caplog.at_level(logging.INFO, logger="bastion.security.ratelimit"):
        result = await limiter.hit(rule, "k")
    assert (result.allowed, result.shadowed) == (True, True)
    assert result.decisions[0].remaining == 0
    assert render_headers([result]) == []
    assert "shadow rate limit 'new'" in caplog.text
    assert [(e.outcome, e.details["shadow"]) for e in sink.events] == [("success", True)]
    everything, _ = make_limiter(shadow=True)
    plain = Rule("plain", "1/minute")
    assert (await everything.hit(plain, "k")).allowed
    assert (await everything.hit(plain, "k")).shadowed


@pytest.mark.asyncio
async def test_guide_api() -> None:
    limiter, _ = make_limiter()
    for strategy in ("fixed_window", "sliding_window", "token_bucket"):
        results = [await limiter.check_rate_limit("user-1", 3, 60, strategy) for _ in range(4)]
        assert [bool(r) for r in results] == [True, True, True, False]
        assert results[-1].retry_after > 0
    assert not limiter.check_rate_limit_sync("user-1", 3, 60, "token_bucket")
    assert limiter.adhoc_rule(3, 60, "fixed_window").name == "fixed_window-3-per-60s"


@pytest.mark.asyncio
async def test_rate_limit_decorator() -> None:
    limiter, _ = make_limiter()

    @limiter.rate_limit(2, 60, "sliding_window", key_func=lambda user: user)
    async def fetch(user: str) -> str:
        return f"data for {user}"

    @limiter.rate_limit(1, 60, "token_bucket")
    def report() -> int:
        return 42

    assert await fetch("a") == "data for a"
    assert await fetch("a") == "data for a"
    assert await fetch("b") == "data for b"
    with pytest.raises(RateLimitExceeded) as info:
        await fetch("a")
    assert info.value.retry_after > 0
    assert ("retry-after", "70") in info.value.headers  # 40 s to the next window, 30 s into it
    assert report() == 42
    with pytest.raises(RateLimitExceeded, match="token_bucket-1-per-60s"):
        report()


def test_keys_and_costs_are_checked() -> None:
    limiter, _ = make_limiter()
    rule = Rule("r", "3/minute", strategy="fixed_window")
    with pytest.raises(ConfigurationError, match="non-empty"):
        limiter.hit_sync(rule, "")
    with pytest.raises(ConfigurationError, match="cost"):
        limiter.hit_sync(rule, "k", cost=-1)
    assert limiter.hit_sync(rule, "x" * 500, cost=3).allowed
    assert not limiter.hit_sync(rule, "x" * 500).allowed  # long keys hash to one stable key
    assert limiter.hit_sync(rule, "k", cost=0).decisions[0].remaining == 3


@pytest.mark.redis
@pytest.mark.asyncio
async def test_failure_policies_when_redis_stops(
    start_redis_server: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis_server()
    clock = FrozenClock(NOW)
    sink = RecordingAuditSink()
    auditor = Auditor(IdentifierHasher(SecretKey(b"k" * 32)), clock, sink)
    backend = RedisStore.from_url(server.url, socket_timeout=1, connect_timeout=1)
    limiter = RateLimiter(backend, auditor=auditor, fallback=MemoryStore(clock=clock))
    open_rule = Rule("open", "1/minute", on_failure="open")
    closed_rule = Rule("closed", "100/minute", on_failure="closed")
    local_rule = Rule("local", "2/minute", on_failure="fallback", strategy="fixed_window")
    mixed = Rule(
        "mixed",
        [
            Limit(Rate.per(5, 60), on_failure=FailurePolicy.OPEN),
            Limit(Rate.per(1, 3600), name="hourly"),
        ],
    )
    try:
        assert (await limiter.hit(open_rule, "k")).allowed
        assert not (await limiter.hit(open_rule, "k")).allowed
        server.stop()
        with caplog.at_level(logging.WARNING, logger="bastion.security.ratelimit"):
            for _ in range(3):
                result = await limiter.hit(open_rule, "k")
                assert (result.allowed, result.decisions, result.unavailable) == (True, (), False)
                closed = limiter.hit_sync(closed_rule, "k")
                assert (closed.allowed, closed.unavailable) == (False, True)
                with pytest.raises(StoreUnavailable, match="fails closed"):
                    closed.raise_for_limit()
            local = [(await limiter.hit(local_rule, "k")).allowed for _ in range(3)]
            assert local == [True, True, False]
            both = await limiter.hit(mixed, "k")
            assert both.names == ("hourly",)
            assert both.headers() == [
                ("ratelimit-policy", '"hourly";q=1;w=3600'),
                ("ratelimit", '"hourly";r=0;t=3600'),
            ]
        # one warning and one audit event for the whole outage, not one per request
        assert caplog.text.count("rate-limit store failed") == 1
        outage = [e for e in sink.events if e.name == "ratelimit_store_unavailable"]
        assert len(outage) == 1
        # the typed fault (a StoreUnavailable subclass): here the connection was refused
        assert outage[0].details["error"] == "StoreConnectionError"
        server.start()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="bastion.security.ratelimit"):
            assert not (await limiter.hit(open_rule, "k")).allowed  # shared counter is back
        assert "answers again" in caplog.text
        assert caplog.text.count("answers again") == 1
        names = [e.name for e in sink.events]
        assert names.count("ratelimit_store_recovered") == 1
        assert names.index("ratelimit_store_recovered") > names.index("ratelimit_store_unavailable")
    finally:
        await limiter.aclose()
        await backend.aclose()


def view(method: str = "GET", path: str = "/", **fields: object) -> RequestView:
    return RequestView(method, path, peer="192.0.2.1", **fields)  # type: ignore[arg-type]


def test_check_applies_every_matching_rule_and_answers_one_verdict() -> None:
    limiter, sink = make_limiter()
    rules = RuleSet(
        [
            Rule("site", "3/minute", strategy="fixed_window"),
            Rule("login", "1/minute", strategy="fixed_window", path="/login", methods={"POST"}),
            Rule(
                "heavy",
                "2/minute",
                strategy="fixed_window",
                path="/api/*",
                key=lambda r: r.header("x-tenant"),
                cost=lambda r: 2,
            ),
            Rule("trial", "1/minute", strategy="fixed_window", path="/api/*", shadow=True),
        ]
    )
    first = limiter.check_sync(view("POST", "/login"), rules)
    assert (first.status, first.refusal, first.allowed) == (200, None, True)
    assert [r.rule.name for r in first.results] == ["site", "login"]
    assert first.headers == [
        ("ratelimit-policy", '"site";q=3;w=60, "login";q=1;w=60'),
        ("ratelimit", '"site";r=2;t=40, "login";r=0;t=40'),
    ]
    refused = limiter.check_sync(view("post", "/Login/"), rules)  # another spelling, same rule
    assert (refused.status, refused.refusal, refused.allowed) == (429, RATE_LIMITED, False)
    assert ("retry-after", "40") in refused.headers
    assert refused.raw_headers()[-1] == (b"retry-after", b"40")
    # no tenant header: "heavy" is exempt; the shadow rule counts, refuses nothing, shows nothing
    api = limiter.check_sync(view("GET", "/api/x"), rules)
    assert [r.rule.name for r in api.results] == ["site", "trial"]
    shadowed = limiter.check_sync(view("GET", "/api/x", raw_headers={"x-tenant": "t"}), rules)
    assert shadowed.status == 429  # site is spent (3 of 3); heavy charged 2 of 2, trial shadowed
    assert [(r.rule.name, r.allowed, r.shadowed) for r in shadowed.results] == [
        ("site", False, False),
        ("heavy", True, False),
        ("trial", True, True),
    ]
    assert "trial" not in dict(shadowed.headers)["ratelimit-policy"]
    assert [e.details["rule"] for e in sink.events] == ["login", "site", "trial"]


@pytest.mark.asyncio
async def test_check_and_check_sync_agree() -> None:
    rules = RuleSet(Rule("site", "1/minute", strategy="fixed_window"))
    async_limiter, _ = make_limiter()
    sync_limiter, _ = make_limiter()
    for _ in range(2):
        left = await async_limiter.check(view(), rules)
        right = sync_limiter.check_sync(view(), rules)
        assert (left.status, left.headers) == (right.status, right.headers)
    assert left.status == 429
