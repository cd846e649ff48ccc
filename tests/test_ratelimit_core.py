"""The pure rate-limit algorithms against simple reference models, rates, keys and headers."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.core.client import TrustedProxies
from bastion.core.ratelimit import (
    MICROS,
    Decision,
    Rate,
    State,
    Strategy,
    decode_state,
    encode_state,
    legacy_headers,
    parse_rate,
    parse_rates,
    policy_header,
    ratelimit_header,
    retry_after_header,
    step,
)
from bastion.errors import ConfigurationError

START = 1_700_000_000 * MICROS

# -- reference models: admitted events kept in a list, exact fractions --------------------------


class Reference:
    """The obvious, slow model of each algorithm: a list of admitted (time, cost) events."""

    def __init__(self, strategy: Strategy, rate: Rate) -> None:
        self.strategy = strategy
        self.limit = rate.limit
        self.period = rate.period_us
        self.events: list[tuple[int, int]] = []
        self.tat = Fraction(0)

    def used_in(self, start: int, end: int) -> int:
        return sum(cost for t, cost in self.events if start <= t < end)

    def hit(self, now: int, cost: int) -> tuple[bool, int]:
        p, limit = self.period, self.limit
        if self.strategy is Strategy.FIXED_WINDOW:
            start = now - now % p
            used = self.used_in(start, start + p)
            ok = used + cost <= limit
            used += cost if ok else 0
            remaining = limit - used
        elif self.strategy is Strategy.SLIDING_LOG:
            used = self.used_in(now - p + 1, now + 1)
            ok = used + cost <= limit
            used += cost if ok else 0
            remaining = limit - used
        elif self.strategy is Strategy.SLIDING_WINDOW:
            start = now - now % p
            current = self.used_in(start, start + p)
            previous = self.used_in(start - p, start)
            weight = Fraction(p - (now - start), p)
            estimate = previous * weight + current
            ok = estimate + cost <= limit
            estimate += cost if ok else 0
            remaining = int((limit - estimate) // 1)
        else:  # GCRA with exact fractions: T = period / limit, burst tolerance = period
            interval = Fraction(p, limit)
            new_tat = max(self.tat, Fraction(now)) + cost * interval
            ok = new_tat - now <= p
            if ok:
                self.tat = new_tat
            remaining = int((p - (max(self.tat, Fraction(now)) - now)) // interval)
        if ok:
            self.events.append((now, cost))
        return ok, max(0, remaining)


rates = st.builds(
    Rate,
    st.integers(min_value=1, max_value=20),
    st.sampled_from([1000, 7_000, 1_000_000, 3_000_000, 60 * MICROS]),
)
steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=2 * MICROS), st.integers(1, 4)),
    min_size=1,
    max_size=60,
)


@pytest.mark.parametrize("strategy", list(Strategy))
@settings(max_examples=150, deadline=None)
@given(rate=rates, hits=steps)
def test_algorithms_agree_with_reference_model(
    strategy: Strategy, rate: Rate, hits: list[tuple[int, int]]
) -> None:
    reference = Reference(strategy, rate)
    state: State | None = None
    now = START
    for gap, cost in hits:
        now += gap
        result = step(strategy, state, now, cost, rate)
        expected = reference.hit(now, cost)
        assert (result.decision.allowed, result.decision.remaining) == expected
        assert result.expires_us >= now
        assert decode_state(encode_state(result.state)) == result.state
        state = result.state


@pytest.mark.parametrize("strategy", list(Strategy))
@settings(max_examples=150, deadline=None)
@given(rate=rates, hits=steps)
def test_retry_after_is_enough(strategy: Strategy, rate: Rate, hits: list[tuple[int, int]]) -> None:
    state: State | None = None
    now = START
    for gap, cost in hits:
        now += gap
        result = step(strategy, state, now, cost, rate)
        decision = result.decision
        if not decision.allowed and cost <= rate.limit:
            wait = round(decision.retry_after * MICROS)
            assert wait > 0
            assert step(strategy, result.state, now + wait, cost, rate).decision.allowed
            if strategy is not Strategy.SLIDING_WINDOW:  # exact for the three exact algorithms
                assert not step(strategy, result.state, now + wait - 1, cost, rate).decision.allowed
        if decision.allowed:
            assert decision.retry_after == 0
        state = result.state


@pytest.mark.parametrize("strategy", list(Strategy))
def test_exactly_limit_admitted_at_one_instant(strategy: Strategy) -> None:
    rate = Rate.per(100, 60)
    state: State | None = None
    admitted = 0
    for _ in range(2000):
        result = step(strategy, state, START + 123, 1, rate)
        admitted += result.decision.allowed
        state = result.state
    assert admitted == 100
    denied = step(strategy, state, START + 123, 1, rate).decision
    assert (denied.allowed, denied.remaining, denied.limit) == (False, 0, 100)
    assert 0 < denied.retry_after <= 60


def test_token_bucket_refills_continuously() -> None:
    rate = Rate.per(10, 10)  # one token per second
    state: State | None = None
    for _ in range(10):
        state = step(Strategy.TOKEN_BUCKET, state, START, 1, rate).state
    denied = step(Strategy.TOKEN_BUCKET, state, START, 1, rate).decision
    assert (denied.allowed, denied.retry_after, denied.reset_after) == (False, 1.0, 10.0)
    later = step(Strategy.TOKEN_BUCKET, state, START + MICROS, 1, rate).decision
    assert (later.allowed, later.remaining) == (True, 0)


def test_fixed_window_resets_at_boundary() -> None:
    rate = Rate.per(2, 60)
    now = START - START % rate.period_us + 50 * MICROS
    state: State | None = None
    for _ in range(2):
        state = step(Strategy.FIXED_WINDOW, state, now, 1, rate).state
    denied = step(Strategy.FIXED_WINDOW, state, now, 1, rate).decision
    assert (denied.allowed, denied.retry_after, denied.reset_after) == (False, 10.0, 10.0)
    assert step(Strategy.FIXED_WINDOW, state, now + 10 * MICROS, 1, rate).decision.allowed


def test_cost_above_limit_is_never_admitted() -> None:
    rate = Rate.per(3, 1)
    for strategy in Strategy:
        decision = step(strategy, None, START, 4, rate).decision
        assert (decision.allowed, decision.remaining) == (False, 3)


# -- rates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "seconds"),
    [
        ("10/minute", 10, 60),
        ("10 per minute", 10, 60),
        ("100/5m", 100, 300),
        ("5/30 seconds", 5, 30),
        ("1/day", 1, 86400),
        (" 3 / hour ", 3, 3600),
        ("7/1.5s", 7, 1.5),
    ],
)
def test_parse_rate(text: str, limit: int, seconds: float) -> None:
    assert parse_rate(text) == Rate.per(limit, seconds)


@pytest.mark.parametrize(
    "text", ["", "10", "ten/minute", "10/fortnight", "0/minute", "10/0s", "-1/s", "10//s"]
)
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_rate(text)
    assert info.value.setting == "rate"


def test_parse_rates_several() -> None:
    assert parse_rates("10/second; 1000/day") == (Rate.per(10, 1), Rate.per(1000, 86400))
    assert parse_rates(["1/s", Rate.per(2, 2)]) == (Rate.per(1, 1), Rate.per(2, 2))
    with pytest.raises(ConfigurationError, match="repeat"):
        parse_rates("1/s; 1/second")
    with pytest.raises(ConfigurationError, match="no rate"):
        parse_rates(" ; ")


def test_rate_too_fine_for_exact_lua_arithmetic() -> None:
    with pytest.raises(ConfigurationError, match="2\\*\\*53"):
        Rate.per(10_000_000, 86400)


@given(st.text(max_size=40))
def test_parse_rate_is_total(text: str) -> None:
    try:
        rate = parse_rate(text)
    except ConfigurationError:
        return
    assert rate.limit >= 1
    assert rate.period_us >= 1000


def test_strategy_coerce() -> None:
    assert Strategy.coerce("gcra") is Strategy.TOKEN_BUCKET
    assert Strategy.coerce("Sliding-Window") is Strategy.SLIDING_WINDOW
    with pytest.raises(ConfigurationError, match="fixed_window"):
        Strategy.coerce("leaky")


@given(st.text(alphabet="0123456789,x-", max_size=20))
def test_decode_state_is_total(text: str) -> None:
    state = decode_state(text)
    assert state is None or all(isinstance(part, int) for part in state)


# -- client IP ------------------------------------------------------------------------------


def test_client_ip_ignores_headers_from_untrusted_peers() -> None:
    resolver = TrustedProxies(["10.0.0.0/8"])
    assert resolver.key("203.0.113.9", ["1.2.3.4"]) == "203.0.113.9"
    assert resolver.key("10.0.0.1", ["1.2.3.4"]) == "1.2.3.4"
    # spoofed leftmost entries are skipped: the first untrusted hop from the right wins
    assert resolver.key("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2"]) == "1.2.3.4"
    assert resolver.key("10.0.0.1", ["6.6.6.6", "1.2.3.4"]) == "1.2.3.4"
    # garbage stops the walk at the last vouched-for address
    assert resolver.key("10.0.0.1", ["1.2.3.4, nonsense, 10.0.0.3"]) == "10.0.0.3"
    assert resolver.key("10.0.0.1", ["10.0.0.4, 10.0.0.3"]) == "10.0.0.4"
    assert resolver.key(None, ["1.2.3.4"]) is None
    assert resolver.key("not-an-ip") is None


def test_client_ip_forwarded_header() -> None:
    resolver = TrustedProxies(["::1"], header="forwarded")
    value = 'for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https'
    assert resolver.key("::1", [value]) == "2001:db8:cafe::/64"
    assert resolver.key("::1", ["for=192.0.2.60:8080"]) == "192.0.2.60"
    assert resolver.key("::1", ["for=_hidden"]) == "::/64"


def test_ipv6_grouped_by_prefix() -> None:
    assert (
        TrustedProxies().key("2001:db8::1")
        == TrustedProxies().key("2001:db8::ffff:1")
        == "2001:db8::/64"
    )
    assert TrustedProxies(ipv6_prefix=48).key("2001:db8:1:2::1") == "2001:db8:1::/48"
    assert TrustedProxies(ipv6_prefix=128).key("2001:db8::1") == "2001:db8::1"
    assert TrustedProxies().key("::ffff:192.0.2.1") == "192.0.2.1"
    with pytest.raises(ConfigurationError, match="ipv6_prefix"):
        TrustedProxies(ipv6_prefix=0)
    with pytest.raises(ConfigurationError, match="trusted proxy"):
        TrustedProxies(["nope"])


@given(st.text(max_size=30), st.lists(st.text(max_size=40), max_size=3))
def test_client_ip_is_total(peer: str, values: list[str]) -> None:
    key = TrustedProxies(["0.0.0.0/0", "::/0"]).key(peer, values)
    assert key is None or isinstance(key, str)


# -- headers --------------------------------------------------------------------------------


def test_headers() -> None:
    rates = (Rate.per(100, 60), Rate.per(1000, 86400))
    assert policy_header(["burst", "daily"], rates) == '"burst";q=100;w=60, "daily";q=1000;w=86400'
    decisions = [
        Decision(False, 100, 0, 17.2, 16.5, 60),
        Decision(True, 1000, 958, 86000.0, 0.0, 86400),
    ]
    assert ratelimit_header(["burst", "daily"], decisions) == (
        '"burst";r=0;t=18, "daily";r=958;t=86000'
    )
    assert legacy_headers(decisions) == [
        ("x-ratelimit-limit", "100"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "18"),
    ]
    assert retry_after_header(decisions) == "17"
    assert retry_after_header([Decision(False, 1, 0, 0.0, 0.0, 1)]) == "1"


def _filtered_log_step(state: State, now: int, cost: int, rate: Rate) -> tuple[State, bool]:
    """The sliding log as first written: every pair filtered, whatever the order."""
    live = [
        v
        for i in range(0, len(state) - 1, 2)
        if state[i] > now - rate.period_us
        for v in (state[i], state[i + 1])
    ]
    used = sum(live[1::2])
    ok = used + cost <= rate.limit
    if ok:
        if live and live[-2] == now:
            live[-1] += cost
        else:
            live += [now, cost]
    return tuple(live), ok


@given(
    times=st.lists(st.integers(0, 3 * MICROS), max_size=12),
    now=st.integers(0, 4 * MICROS),
    cost=st.integers(0, 4),
)
def test_sliding_log_reads_any_stored_order_like_a_full_filter(
    times: list[int], now: int, cost: int
) -> None:
    """The step slices the live part of an oldest-first log; a log out of order (another
    clock wrote it) is filtered pair by pair, with the same result either way."""
    rate = Rate(5, MICROS)
    state: State = tuple(v for t in times for v in (START + t, 1))
    made = step(Strategy.SLIDING_LOG, state, START + now, cost, rate)
    assert (made.state, made.decision.allowed) == _filtered_log_step(state, START + now, cost, rate)
    ordered = tuple(v for t in sorted(times) for v in (START + t, 1))
    made = step(Strategy.SLIDING_LOG, ordered, START + now, cost, rate)
    assert (made.state, made.decision.allowed) == _filtered_log_step(
        ordered, START + now, cost, rate
    )
