"""The bench harness computes and prints the right things. No timing is asserted anywhere.

Covers the in-process ASGI driver (against the floor app and a real Starlette app), the median
and ratio arithmetic, the table, the rotation of the run order across repeats, GC handling in
timed batches, and one tiny end-to-end run of ``python -m bench`` for the ``asgi`` group.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path

import pytest
from bench.cli import build_parser
from bench.driver import Message, Receive, Scope, Send, call_asgi, http_scope, make_floor_app
from bench.groups.asgi import make_starlette_app
from bench.measure import (
    Case,
    CaseResult,
    async_case,
    median,
    ratio,
    rotated,
    run_cases,
    sync_case,
    time_sync_batch,
)
from bench.report import Row, format_table, format_us, rows_from_results

# -- the ASGI driver -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.asyncio
async def test_floor_app_answers_200_ok() -> None:
    status, headers, body = await call_asgi(make_floor_app(), http_scope())
    assert status == 200
    assert body == b"ok"
    assert (b"content-type", b"text/plain; charset=utf-8") in headers


@pytest.mark.asyncio
async def test_starlette_app_answers_200_ok_and_404_elsewhere() -> None:
    app = make_starlette_app()
    status, headers, body = await call_asgi(app, http_scope("GET", "/"))
    assert (status, body) == (200, b"ok")
    assert (b"content-length", b"2") in headers
    status, _, body = await call_asgi(app, http_scope("GET", "/missing"))
    assert (status, body) == (404, b"Not Found")


@pytest.mark.asyncio
async def test_each_call_gets_a_fresh_scope_and_the_template_is_untouched() -> None:
    template = http_scope()
    headers_before = list(template["headers"])
    seen: list[Scope] = []

    async def app(scope: Scope, _receive: Receive, send: Send) -> None:
        seen.append(scope)
        scope["headers"].append((b"x-added", b"1"))
        scope["state"]["touched"] = True
        scope["app"] = "written by the app"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    for _ in range(2):
        assert await call_asgi(app, template) == (204, [], b"")
    assert seen[0] is not seen[1]
    assert seen[1]["headers"].count((b"x-added", b"1")) == 1
    assert template["headers"] == headers_before
    assert template["state"] == {}
    assert "app" not in template
    # Starlette writes into the scope too; the template must survive it.
    await call_asgi(make_starlette_app(), template)
    assert "app" not in template
    assert template["state"] == {}


@pytest.mark.asyncio
async def test_receive_gives_the_body_then_disconnect_after_the_response() -> None:
    received: list[Message] = []

    async def echo(_scope: Scope, receive: Receive, send: Send) -> None:
        request = await receive()
        received.append(request)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": request["body"], "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})
        received.append(await receive())

    status, _, body = await call_asgi(echo, http_scope("POST", "/"), b"payload")
    assert (status, body) == (200, b"payload!")
    assert received[0] == {"type": "http.request", "body": b"payload", "more_body": False}
    assert received[1] == {"type": "http.disconnect"}


@pytest.mark.asyncio
async def test_driver_refuses_an_app_that_never_answers() -> None:
    async def silent(_scope: Scope, _receive: Receive, _send: Send) -> None:
        return

    with pytest.raises(RuntimeError, match=r"without sending http\.response\.start"):
        await call_asgi(silent, http_scope())


@pytest.mark.asyncio
async def test_driver_refuses_a_body_before_the_start() -> None:
    async def backwards(_scope: Scope, _receive: Receive, send: Send) -> None:
        await send({"type": "http.response.body", "body": b"ok"})

    with pytest.raises(RuntimeError, match=r"before http\.response\.start"):
        await call_asgi(backwards, http_scope())


# -- arithmetic ----------------------------------------------------------------------------------


def test_median_of_odd_and_even_counts() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([7.0]) == 7.0
    with pytest.raises(ValueError, match="at least one repeat"):
        median([])


def test_ratio_divides_by_the_baseline_and_refuses_zero() -> None:
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(1.0, 4.0) == 0.25
    with pytest.raises(ValueError, match="baseline must be > 0"):
        ratio(1.0, 0.0)


def _result(name: str, ns: list[float], baseline: str | None = None) -> CaseResult:
    return CaseResult(sync_case(name, lambda: None, baseline=baseline), ns)


def test_rows_use_the_median_in_microseconds_and_the_ratio_of_medians() -> None:
    rows = rows_from_results(
        [
            _result("floor", [1000.0, 3000.0, 2000.0]),
            _result("stack", [5000.0, 4000.0, 60000.0], baseline="floor"),
        ]
    )
    assert rows[0] == Row(
        case="floor", us_per_op=2.0, ratio=None, baseline=None, repeats=3, spread=0.5
    )
    assert rows[1].case == "stack"
    assert rows[1].us_per_op == 5.0
    assert rows[1].ratio == 2.5
    assert rows[1].baseline == "floor"
    assert rows[1].repeats == 3
    # Inclusive quartiles of (4000, 5000, 60000) are 4500 and 32500.
    assert rows[1].spread == pytest.approx((32500 - 4500) / 5000)
    assert _result("one", [9.0]).spread == 0.0


# -- the table -----------------------------------------------------------------------------------


def test_format_us_keeps_about_three_significant_digits() -> None:
    assert [format_us(x) for x in (0.0351, 1.594, 10.54, 187.6)] == ["0.035", "1.59", "10.5", "188"]


def test_table_layout() -> None:
    rows = [
        Row(case="floor", us_per_op=1.594, ratio=None, baseline=None, repeats=11),
        Row(case="a|b", us_per_op=10.54, ratio=6.6123, baseline="floor", repeats=11, spread=0.25),
    ]
    assert format_table(rows) == (
        "| case  | µs/op (median) | ratio to baseline | repeats |\n"
        "| ----- | -------------: | ----------------: | ------: |\n"
        "| floor |           1.59 |   1.00 (baseline) |      11 |\n"
        "| a\\|b  |           10.5 |       6.61x floor |      11 |\n"
    )
    with_spread = format_table(rows, spread=True).splitlines()
    assert with_spread[0].endswith("| spread (IQR/median) |")
    assert with_spread[3].endswith("|                 25% |")


# -- the measurement core ------------------------------------------------------------------------


def test_rotated_shifts_left_by_the_repeat_number() -> None:
    items = ["a", "b", "c"]
    assert [rotated(items, r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert rotated([], 5) == []


def test_run_cases_interleaves_in_rotated_order_and_disables_gc_in_batches() -> None:
    calls: list[str] = []
    gc_states: list[bool] = []

    def recorder(name: str) -> Case:
        def op() -> None:
            calls.append(name)
            gc_states.append(gc.isenabled())

        return sync_case(name, op, baseline=None if name == "a" else "a")

    async def async_op() -> None:
        calls.append("c")
        gc_states.append(gc.isenabled())

    cases = [recorder("a"), recorder("b"), async_case("c", async_op, baseline="a", weight=2)]
    assert gc.isenabled()
    results = asyncio.run(run_cases(cases, repeats=3, iterations=1, warmup_batches=1))
    assert gc.isenabled()
    assert calls == [
        *["a", "b", "c", "c"],  # warm-up, declaration order; c has weight 2
        *["a", "b", "c", "c"],
        *["b", "c", "c", "a"],
        *["c", "c", "a", "b"],
    ]
    assert not any(gc_states)
    assert [r.case.name for r in results] == ["a", "b", "c"]
    assert all(len(r.ns_per_op) == 3 for r in results)
    assert all(ns > 0 for r in results for ns in r.ns_per_op)


def test_time_sync_batch_leaves_gc_disabled_if_it_was() -> None:
    gc.disable()
    try:
        assert time_sync_batch(lambda: None, 3) >= 0
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_run_cases_refuses_an_unknown_baseline_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="baseline 'nope' is not in the group"):
        asyncio.run(
            run_cases([sync_case("a", lambda: None, baseline="nope")], repeats=1, iterations=1)
        )
    with pytest.raises(ValueError, match="must be unique"):
        asyncio.run(run_cases([sync_case("a", lambda: None)] * 2, repeats=1, iterations=1))


def test_case_needs_exactly_one_operation() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        Case(name="x")


# -- the command line ----------------------------------------------------------------------------


def test_cli_rejects_zero_repeats(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--repeats", "0"])
    assert "expected a number >= 1" in capsys.readouterr().err


def _table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def test_tiny_asgi_run_through_python_dash_m_bench(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    command = [sys.executable, "-m", "bench", "--only", "asgi", "--repeats", "1"]
    command += ["--iterations", "5", "--out", str(out)]
    done = subprocess.run(
        command, check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "## asgi" in done.stdout
    assert "## stores" not in done.stdout
    assert "median of 1 interleaved repeats" in done.stdout
    rows = _table_rows(done.stdout)
    assert [row[0] for row in rows] == ["floor", "starlette"]
    assert rows[0][2] == "1.00 (baseline)"
    assert rows[1][2].endswith("x floor")
    assert [row[3] for row in rows] == ["1", "1"]
    assert out.read_text(encoding="utf-8") == done.stdout


def test_instruction_counts_are_parsed_and_divided_per_request() -> None:
    from bench.instructions import parse_collected, per_request, table  # noqa: PLC0415

    stderr = "==12== Events    : Ir\n==12== Collected : 1192328020\n==12==\n"
    assert parse_collected(stderr) == 1_192_328_020
    with pytest.raises(RuntimeError, match="Collected"):
        parse_collected("valgrind: command not found")
    assert per_request((1000, 990_000), (6000, 1_090_000)) == 20.0
    with pytest.raises(ValueError, match="more requests"):
        per_request((10, 1), (10, 2))
    text = table({"headers: pass-through": 20_000.0, "headers: bastion-strict": 31_000.0})
    assert "| headers: bastion-strict | 31,000 | 1.55x headers: pass-through | +11,000 |" in text
    assert "| headers: pass-through | 20,000 | 1.00 (baseline) | |" in text


def test_every_instruction_case_builds_and_answers_200() -> None:
    """The callgrind child, run without callgrind: each case's app answers its request."""
    from bench.instructions import CASES  # noqa: PLC0415

    for case in CASES:
        done = subprocess.run(
            [sys.executable, "-m", "bench.instructions", "--child", case.name, "3"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert done.returncode == 0, (case.name, done.stderr[-500:])
