"""``python -m bench``: run the groups, print one markdown table per group, optionally save them.

Defaults are sized so that the whole run takes well under two minutes on a 2-core machine.
Figures are only comparable within one run: ratios, not microseconds, are what to compare
between machines and between runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.group import Options, run_group
from bench.groups import GROUP_NAMES, load_group
from bench.report import format_table, rows_from_results

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.group import Group
    from bench.report import Row

__all__ = ["DEFAULT_REPEATS", "build_parser", "main", "render_header", "render_section"]

DEFAULT_REPEATS = 15


def _positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure bastion beside raw baselines; print markdown tables of medians.",
    )
    parser.add_argument(
        "--repeats",
        type=_positive_int,
        default=DEFAULT_REPEATS,
        help=f"timed batches per case, interleaved across cases (default {DEFAULT_REPEATS})",
    )
    parser.add_argument(
        "--iterations",
        type=_positive_int,
        default=None,
        help="operations per batch, for every group (default: each group's own)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=GROUP_NAMES,
        metavar="GROUP",
        help=f"run only this group; may be repeated (groups: {', '.join(GROUP_NAMES)})",
    )
    parser.add_argument("--out", type=Path, help="also write the tables to this file")
    parser.add_argument(
        "--redis-url",
        help="use this Redis server instead of starting one (only bastion-bench:* keys touched)",
    )
    parser.add_argument(
        "--spread",
        action="store_true",
        help="add a noise column: interquartile range of the repeats / median",
    )
    return parser


def render_header(now: datetime, repeats: int) -> str:
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return (
        "# bastion bench\n\n"
        f"{now:%Y-%m-%d %H:%M} UTC · {python} · {machine} · median of {repeats} "
        "interleaved repeats\n"
    )


def render_section(
    group: Group, rows: Sequence[Row], *, iterations: int, seconds: float, spread: bool = False
) -> str:
    return (
        f"\n## {group.name}\n\n{group.title} "
        f"Batches of {iterations} operations per case; run took {seconds:.1f} s.\n\n"
        + format_table(rows, spread=spread)
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen = set(args.only or GROUP_NAMES)
    names = [name for name in GROUP_NAMES if name in chosen]
    options = Options(redis_url=args.redis_url)

    header = render_header(datetime.now(UTC), args.repeats)
    print(header, end="", flush=True)
    parts = [header]
    for name in names:
        group = load_group(name)
        iterations = args.iterations or group.iterations
        started = time.perf_counter()
        try:
            results = run_group(group, options, repeats=args.repeats, iterations=iterations)
        except FileNotFoundError as exc:
            # RedisServer's message says how to install redis-server.
            print(f"bench: group {name!r}: {exc}; or pass --redis-url", file=sys.stderr)
            return 2
        section = render_section(
            group,
            rows_from_results(results),
            iterations=iterations,
            seconds=time.perf_counter() - started,
            spread=args.spread,
        )
        print(section, end="", flush=True)
        parts.append(section)
    if args.out is not None:
        args.out.write_text("".join(parts), encoding="utf-8")
    return 0
