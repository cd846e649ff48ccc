"""Rate-limit decisions without I/O: rates, algorithms as step functions, rules, keys, headers.

Every algorithm is a pure function ``step(state, now_us, cost, rate) -> Step``
(:mod:`~bastion.core.ratelimit.algorithms`); stores apply a step atomically (a lock, a SQLite
transaction, a Lua script) and the algorithms never see a clock, a lock or a socket. The
package holds one concern per module:

* :mod:`~bastion.core.ratelimit.rates`: :class:`Rate`, :func:`parse_rate`, :class:`Strategy`;
* :mod:`~bastion.core.ratelimit.algorithms`: the four steps, :func:`apply_limits`, the state
  codec;
* :mod:`~bastion.core.ratelimit.rules`: :class:`Rule` (limits, path, methods, key, cost),
  :class:`RuleSet`, :class:`RateLimitResult`, :class:`Verdict`;
* :mod:`~bastion.core.ratelimit.keys`: the key functions over
  :class:`~bastion.core.request.RequestView`;
* :mod:`~bastion.core.ratelimit.headers`: the one renderer of the rate-limit headers.

The names are re-exported here.
"""

from __future__ import annotations

from bastion.core.ratelimit.algorithms import (
    STEP_FUNCTIONS,
    Decision,
    State,
    Step,
    apply_limits,
    decode_state,
    encode_state,
    fixed_window_step,
    gcra_step,
    sliding_log_step,
    sliding_window_step,
    step,
)
from bastion.core.ratelimit.headers import (
    check_policy_name,
    header_bytes,
    legacy_headers,
    policy_header,
    ratelimit_header,
    render_headers,
    retry_after_header,
    tightest,
)
from bastion.core.ratelimit.keys import KeyFunc, client_ip_key, header_key, path_key, user_key
from bastion.core.ratelimit.rates import (
    DEFAULT_STRATEGY,
    MAX_SCALED,
    MICROS,
    Rate,
    Strategy,
    micros,
    parse_rate,
    parse_rates,
)
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

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_COST",
    "MAX_SCALED",
    "MICROS",
    "STEP_FUNCTIONS",
    "Decision",
    "FailurePolicy",
    "KeyFunc",
    "Limit",
    "LimitsSpec",
    "Rate",
    "RateLimitResult",
    "Rule",
    "RuleSet",
    "State",
    "Step",
    "Strategy",
    "Verdict",
    "apply_limits",
    "check_cost",
    "check_policy_name",
    "client_ip_key",
    "decode_state",
    "encode_state",
    "fixed_window_step",
    "gcra_step",
    "header_bytes",
    "header_key",
    "legacy_headers",
    "micros",
    "parse_rate",
    "parse_rates",
    "path_key",
    "policy_header",
    "ratelimit_header",
    "render_headers",
    "retry_after_header",
    "sliding_log_step",
    "sliding_window_step",
    "step",
    "tightest",
    "user_key",
]
