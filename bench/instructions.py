"""``python -m bench.instructions``: instruction counts for the microsecond targets.

Wall-clock microseconds move with the machine: the 2-vCPU machines the bench runs on swing
between two speeds, minutes apart, about 1.7x apart. Instructions do not: ``valgrind
--tool=callgrind`` counts the same total for the same interpreter, inputs and hash seed whatever
else the machine is doing. This tool gives the three targets stated in microseconds above a
pass-through layer (security headers, the rate-limit middleware, an untouched request under the
session middleware) a figure that does not depend on the hour it was taken. The ``csrf:`` cases
are the CSRF group's (:mod:`bench.groups.csrf`), for its targets: a safe method within 3k
instructions of the pass-through layer, and at most 0.3x starlette-csrf's overhead when
headers or a token decide. The ``tokens`` cases are the tokens group's access-token
verifications (:mod:`bench.groups.tokens`), one verification per "request", no ASGI app around
it: bastion's codec with the revocation check at most 0.67x PyJWT's instructions and at most
joserfc's. The ``authz`` cases are the authz group's (:mod:`bench.groups.authz`): one RBAC
decision by pycasbin and by bastion, and a FastAPI route bare, with a no-op dependency and
with the authorization guard. ``--only TEXT`` counts only the cases whose name contains it.

Each case runs in a fresh interpreter under callgrind twice, ``--small`` and ``--large``
requests, with ``PYTHONHASHSEED=0``; its instructions per request are the difference divided by
the difference in requests, so start-up and imports cancel out. The table gives instructions
per request, the ratio to the case's baseline and the instructions above it. To turn them into
time, multiply the ratio by the baseline's microseconds from a wall-clock run of the same group.

Needs ``valgrind`` on ``PATH``; a run takes a minute or two. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final

from bench.driver import call_asgi, http_scope, make_floor_app

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bench.driver import ASGIApp, Receive, Scope, Send

__all__ = [
    "CASES",
    "InstructionCase",
    "build_app",
    "main",
    "parse_collected",
    "per_request",
    "table",
]

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


@dataclass(frozen=True, slots=True)
class InstructionCase:
    """A case to count: ``build`` returns the app and the request scope it answers, or for a
    case that is not a request (a token verification), ``op`` returns the operation to repeat."""

    name: str
    build: Callable[[], tuple[ASGIApp, Scope]] | None
    baseline: str | None = None
    status: int = 200
    """The status every request of the case answers (429 for a key over its limit)."""
    op: Callable[[], Callable[[], object]] | None = None


def _headers(policy: str | None) -> tuple[ASGIApp, Scope]:
    from bastion.asgi.headers import SecurityHeadersMiddleware  # noqa: PLC0415
    from bench.groups.headers import PassThrough, make_inner_app  # noqa: PLC0415

    inner = make_inner_app()
    app = PassThrough(inner) if policy is None else SecurityHeadersMiddleware(inner, policy)
    return app, http_scope("GET", "/")


def _ratelimit(limited: bool) -> tuple[ASGIApp, Scope]:
    from bastion.asgi.ratelimit import RateLimitMiddleware  # noqa: PLC0415
    from bastion.engine.ratelimit import RateLimiter, Rule  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415
    from bench.groups.headers import PassThrough  # noqa: PLC0415
    from bench.groups.ratelimit import RATE  # noqa: PLC0415

    floor = make_floor_app()
    if not limited:
        return PassThrough(floor), http_scope("GET", "/")
    limiter = RateLimiter(MemoryStore())
    return RateLimitMiddleware(floor, limiter, Rule("bench", RATE)), http_scope("GET", "/")


_LIMITS_CLASSES: Final = {
    "fixed_window": "FixedWindowRateLimiter",
    "sliding_window": "SlidingWindowCounterRateLimiter",
    "sliding_log": "MovingWindowRateLimiter",
    "token_bucket": "FixedWindowRateLimiter",  # limits has no token bucket
}
_OVER_LIMIT: Final = 10
"""The limit of the over-limit cases: filled at set-up, so every counted request is refused."""


def _limits_layer(strategy: str, *, over: bool) -> tuple[ASGIApp, Scope]:
    """The floor behind a layer doing what ``limits`` needs for one decision and its headers:
    ``hit`` and ``get_window_stats`` on a ``MemoryStorage`` (the speed target's yardstick)."""
    import limits  # noqa: PLC0415
    from limits import strategies  # noqa: PLC0415

    from bench.groups.ratelimit import ITEM  # noqa: PLC0415

    item = limits.RateLimitItemPerHour(_OVER_LIMIT) if over else ITEM
    limiter = getattr(strategies, _LIMITS_CLASSES[strategy])(limits.storage.MemoryStorage())
    for _ in range(_OVER_LIMIT if over else 1):
        limiter.hit(item, "127.0.0.1")
    floor = make_floor_app()

    async def layer(scope: Scope, receive: Receive, send: Send) -> None:
        limiter.hit(item, scope["client"][0])
        limiter.get_window_stats(item, scope["client"][0])
        await floor(scope, receive, send)

    return layer, http_scope("GET", "/")


def _ratelimit_strategy(strategy: str, *, over: bool) -> tuple[ASGIApp, Scope]:
    """The floor behind ``RateLimitMiddleware`` (memory) with one rule of ``strategy``; ``over``:
    a key already over its limit, so every request is refused with 429."""
    from bastion.asgi.ratelimit import RateLimitMiddleware  # noqa: PLC0415
    from bastion.core.ratelimit import Rate  # noqa: PLC0415
    from bastion.engine.ratelimit import RateLimiter, Rule  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415
    from bench.groups.ratelimit import RATE  # noqa: PLC0415

    rate = Rate.per(_OVER_LIMIT, 3600) if over else RATE
    limiter = RateLimiter(MemoryStore())
    rule = Rule("bench", rate, strategy=strategy)
    for _ in range(_OVER_LIMIT if over else 1):
        limiter.hit_sync(rule, "127.0.0.1")
    return RateLimitMiddleware(make_floor_app(), limiter, rule), http_scope("GET", "/")


def _strategy_cases() -> tuple[InstructionCase, ...]:
    cases: list[InstructionCase] = []
    for strategy in _LIMITS_CLASSES:
        for over in (False, True):
            if over and strategy == "token_bucket":
                continue  # its limits yardstick is the fixed window's, measured already
            state = "over limit" if over else "admitted"
            theirs = f"ratelimit {strategy}, {state}: floor + limits hit + window stats"
            cases.append(InstructionCase(theirs, partial(_limits_layer, strategy, over=over)))
            cases.append(
                InstructionCase(
                    f"ratelimit {strategy}, {state}: floor + RateLimitMiddleware (memory)",
                    partial(_ratelimit_strategy, strategy, over=over),
                    theirs,
                    429 if over else 200,
                )
            )
    return tuple(cases)


def _untouched(with_sessions: bool) -> tuple[ASGIApp, Scope]:
    from bastion.asgi.sessions import SessionMiddleware  # noqa: PLC0415
    from bastion.stores.memory import MemoryStore  # noqa: PLC0415
    from bench.groups.sessions import CONFIG, PassThrough, _app, _scope  # noqa: PLC0415

    plain = _app()
    if with_sessions:
        app: ASGIApp = SessionMiddleware(
            plain, store=MemoryStore(), config=CONFIG, production=False
        )
    else:
        app = PassThrough(plain)
    return app, _scope("/", None)


def _cors(layer: str, kind: str) -> tuple[ASGIApp, Scope]:
    from bastion.asgi.cors import CORSMiddleware  # noqa: PLC0415
    from bench.groups.cors import POLICY, request_scope, starlette_cors  # noqa: PLC0415
    from bench.groups.headers import PassThrough, make_inner_app  # noqa: PLC0415

    inner = make_inner_app()
    layers: dict[str, Callable[[], ASGIApp]] = {
        "pass-through": lambda: PassThrough(inner),
        "starlette": lambda: starlette_cors(inner),
        "bastion": lambda: CORSMiddleware(inner, POLICY, production=False),
    }
    return layers[layer](), request_scope(kind)


def _csrf(name: str) -> tuple[ASGIApp, Scope]:
    from bench.groups.csrf import build_cases  # noqa: PLC0415

    for case, app, scope, _baseline in build_cases():
        if case == name:
            return app, scope
    raise SystemExit(f"unknown csrf case {name!r}")


def _csrf_cases() -> tuple[InstructionCase, ...]:
    from bench.groups.csrf import CASE_NAMES, PASS  # noqa: PLC0415

    return tuple(
        InstructionCase(
            f"csrf: {name}",
            partial(_csrf, name),
            None if name == PASS else f"csrf: {PASS}",
        )
        for name in CASE_NAMES
    )


CASES: tuple[InstructionCase, ...] = (
    InstructionCase("headers: pass-through", lambda: _headers(None)),
    InstructionCase("headers: bastion-strict", lambda: _headers("strict"), "headers: pass-through"),
    InstructionCase("headers: bastion-api", lambda: _headers("api"), "headers: pass-through"),
    InstructionCase("ratelimit: floor + pass-through", lambda: _ratelimit(limited=False)),
    InstructionCase(
        "ratelimit: floor + RateLimitMiddleware (memory)",
        lambda: _ratelimit(limited=True),
        "ratelimit: floor + pass-through",
    ),
    *_strategy_cases(),
    InstructionCase("untouched: pass-through layer", lambda: _untouched(with_sessions=False)),
    InstructionCase(
        "untouched: bastion sessions",
        lambda: _untouched(with_sessions=True),
        "untouched: pass-through layer",
    ),
    InstructionCase("cors: pass-through", lambda: _cors("pass-through", "get-allowed")),
    InstructionCase(
        "cors: starlette get-allowed",
        lambda: _cors("starlette", "get-allowed"),
        "cors: pass-through",
    ),
    InstructionCase(
        "cors: bastion get-allowed",
        lambda: _cors("bastion", "get-allowed"),
        "cors: starlette get-allowed",
    ),
    InstructionCase("cors: starlette preflight", lambda: _cors("starlette", "preflight")),
    InstructionCase(
        "cors: bastion preflight",
        lambda: _cors("bastion", "preflight"),
        "cors: starlette preflight",
        status=204,
    ),
    *_csrf_cases(),
)


# -- fullstack: issue 13's Speed rows (memory; the Redis rows are wall-clock only) ---------------


def _fullstack(kind: str, label: str) -> tuple[ASGIApp, Scope]:
    from bench.groups.fullstack import instruction_case  # noqa: PLC0415

    return instruction_case(kind, label)


def _csrf_only(*, with_csrf: bool) -> tuple[ASGIApp, Scope]:
    from bench.groups.fullstack import csrf_only_case  # noqa: PLC0415

    return csrf_only_case(with_csrf=with_csrf)


_FULLSTACK_KINDS = ("GET untouched", "GET read", "GET modify", "POST token", "POST fetch-metadata")
"""``bench.groups.fullstack.KINDS``, spelt out so that importing this module stays light."""
_FULLSTACK_PEER, _FULLSTACK_OURS = "peer stack", ("bastion", "bastion, no rate-limit rule")


def _fullstack_cases() -> tuple[InstructionCase, ...]:
    """Per request kind: the peer stack (starsessions + starlette-csrf + secure.py, the
    baseline), bastion through ``protect()`` and bastion without its rate-limit rule; then
    bastion's CSRF layer alone on a safe method against a pass-through layer."""
    cases = []
    for kind in _FULLSTACK_KINDS:
        base = f"fullstack memory {kind}: {_FULLSTACK_PEER}"
        cases.append(InstructionCase(base, partial(_fullstack, kind, _FULLSTACK_PEER)))
        for label in _FULLSTACK_OURS:
            name = f"fullstack memory {kind}: {label}"
            cases.append(InstructionCase(name, partial(_fullstack, kind, label), base))
    base = "fullstack csrf-only GET: pass-through layer"
    cases.append(InstructionCase(base, partial(_csrf_only, with_csrf=False)))
    ours = "fullstack csrf-only GET: bastion CSRF"
    cases.append(InstructionCase(ours, partial(_csrf_only, with_csrf=True), base))
    return tuple(cases)


CASES += _fullstack_cases()


# -- tokens: issue 14's verification rows (one verification per "request") ----------------------


def _token_op(alg: str, label: str) -> Callable[[], object]:
    import warnings  # noqa: PLC0415

    from bench.groups.tokens import make_fixture, verify_op  # noqa: PLC0415

    warnings.simplefilter("ignore")  # joserfc's RFC 9864 warning on EdDSA, as the group does
    return verify_op(make_fixture(alg), label)


_TOKEN_ALGS = ("HS256", "EdDSA", "ES256")
_TOKEN_PEERS = ("PyJWT decode + claims", "joserfc decode + claims registry")
_TOKEN_OURS = ("bastion decode (codec only)", "bastion decode + revocation check (memory)")
"""``bench.groups.tokens`` labels, spelt out so that importing this module stays light."""


def _token_cases() -> tuple[InstructionCase, ...]:
    """Per algorithm: PyJWT (the baseline), joserfc, bastion's codec, bastion's codec plus the
    revocation check; the last once more against joserfc."""
    cases = []
    for alg in _TOKEN_ALGS:
        pyjwt, joserfc = (f"tokens {alg}: {label}" for label in _TOKEN_PEERS)
        cases.append(InstructionCase(pyjwt, None, op=partial(_token_op, alg, _TOKEN_PEERS[0])))
        cases.append(
            InstructionCase(joserfc, None, pyjwt, op=partial(_token_op, alg, _TOKEN_PEERS[1]))
        )
        if importlib.util.find_spec("bastion.core.tokens.jwt") is None:
            continue  # helper jwt's codec not there yet: the peer rows only
        for label in _TOKEN_OURS:
            op = partial(_token_op, alg, label)
            cases.append(InstructionCase(f"tokens {alg}: {label}", None, pyjwt, op=op))
        ours = _TOKEN_OURS[1]
        cases.append(
            InstructionCase(
                f"tokens {alg}: {ours} (vs joserfc)",
                None,
                joserfc,
                op=partial(_token_op, alg, ours),
            )
        )
    return tuple(cases)


CASES += _token_cases()


# -- authz: issue 15's decision rows (one decision per "request") and the FastAPI guard ----------


def _authz_op(label: str) -> Callable[[], object]:
    from bench.groups.authz import instruction_op  # noqa: PLC0415

    return instruction_op(label)


def _authz_app(guard: str) -> tuple[ASGIApp, Scope]:
    from bench.groups.authz_http import instruction_app  # noqa: PLC0415

    return instruction_app(guard)


_AUTHZ_RBAC = ("RBAC: pycasbin enforce", "RBAC: bastion Policy.evaluate")
_AUTHZ_HTTP = ("none", "no-op", "authz")
"""``bench.groups.authz`` labels and guards, spelt out so that importing this module stays
light. The ABAC rows are wall-clock only: pycasbin's 10,000-rule decisions take 25-500 ms."""


def _authz_cases() -> tuple[InstructionCase, ...]:
    """pycasbin's RBAC ``enforce`` (the baseline) and bastion's ``Policy.evaluate``, one
    decision per operation over the group's sample; the FastAPI route bare (the baseline),
    with a no-op dependency and with the guard."""
    try:
        ours_there = importlib.util.find_spec("bastion.core.authz.policy") is not None
    except ModuleNotFoundError:
        ours_there = False  # helper authz-core's policy not there yet: the peer rows only
    casbin, ours = (f"authz {label}" for label in _AUTHZ_RBAC)
    cases = [InstructionCase(casbin, None, op=partial(_authz_op, _AUTHZ_RBAC[0]))]
    if ours_there:
        cases.append(InstructionCase(ours, None, casbin, op=partial(_authz_op, _AUTHZ_RBAC[1])))
    bare = f"authz FastAPI GET /posts, guard {_AUTHZ_HTTP[0]}"
    cases.append(InstructionCase(bare, partial(_authz_app, _AUTHZ_HTTP[0])))
    for guard in _AUTHZ_HTTP[1:] if ours_there else _AUTHZ_HTTP[1:2]:
        name = f"authz FastAPI GET /posts, guard {guard}"
        cases.append(InstructionCase(name, partial(_authz_app, guard), bare))
    return tuple(cases)


CASES += _authz_cases()


def _case(name: str) -> InstructionCase:
    for case in CASES:
        if case.name == name:
            return case
    raise SystemExit(f"unknown instruction case {name!r}")


def build_app(name: str) -> tuple[ASGIApp, Scope]:
    build = _case(name).build
    if build is None:
        raise SystemExit(f"instruction case {name!r} is an operation, not an app")
    return build()


def run_requests(name: str, count: int) -> None:
    """What the callgrind child runs: ``count`` requests of case ``name``, checked once (an
    ``op`` case checked itself when it was built)."""
    case = _case(name)
    if case.op is not None:
        op = case.op()
        for _ in range(count):
            op()
        return
    app, scope = build_app(name)

    async def drive() -> None:
        status, _headers, _body = await call_asgi(app, scope)
        if status != case.status:
            raise SystemExit(f"{name}: answered {status}, not {case.status}")
        for _ in range(count - 1):
            await call_asgi(app, scope)

    asyncio.run(drive())


def parse_collected(stderr: str) -> int:
    """The instruction total from callgrind's summary on stderr."""
    found = _COLLECTED.findall(stderr)
    if not found:
        raise RuntimeError(f"no 'Collected :' line in callgrind's output:\n{stderr[-2000:]}")
    return int(found[-1])


def per_request(small: tuple[int, int], large: tuple[int, int]) -> float:
    """Instructions per request from two ``(requests, instructions)`` runs."""
    (n_small, i_small), (n_large, i_large) = small, large
    if n_large <= n_small:
        raise ValueError("the large run must have more requests than the small one")
    return (i_large - i_small) / (n_large - n_small)


def _count(name: str, requests: int) -> int:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        name,
        str(requests),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: callgrind run failed:\n{done.stderr[-2000:]}")
    return parse_collected(done.stderr)


def table(counts: dict[str, float], cases: Sequence[InstructionCase] = CASES) -> str:
    """A markdown table: instructions per request, the ratio to the baseline and the
    instructions above it, for the cases in ``counts``."""
    lines = [
        "| case | instructions/request | ratio to baseline | above baseline |",
        "| --- | ---: | ---: | ---: |",
    ]
    for case in cases:
        if case.name not in counts:
            continue
        value = counts[case.name]
        base = counts.get(case.baseline) if case.baseline else None
        if base is None:
            lines.append(f"| {case.name} | {value:,.0f} | 1.00 (baseline) | |")
        else:
            share = value / base
            digits = 1 - math.floor(math.log10(share)) if 0 < share < 0.01 else 2
            ratio = f"{share:.{digits}f}x {case.baseline}"
            lines.append(f"| {case.name} | {value:,.0f} | {ratio} | {value - base:+,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("--small", type=int, default=1000, help="requests in the short run")
    parser.add_argument("--large", type=int, default=6000, help="requests in the long run")
    parser.add_argument(
        "--only", default="", help="count only the cases whose name contains this text"
    )
    parser.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_requests(args.child[0], int(args.child[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("bench.instructions needs valgrind on PATH (Debian: apt-get install valgrind)")
        return 2
    counts: dict[str, float] = {}
    for case in CASES:
        if args.only not in case.name:
            continue
        small = (args.small, _count(case.name, args.small))
        large = (args.large, _count(case.name, args.large))
        counts[case.name] = per_request(small, large)
        print(f"{case.name}: {counts[case.name]:,.0f} instructions/request", file=sys.stderr)
    print(
        f"Instructions per request (callgrind, PYTHONHASHSEED=0, {sys.version.split()[0]}); ",
        end="",
    )
    print(f"runs of {args.small} and {args.large} requests.\n")
    print(table(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
