"""Turning results into a markdown table: one row per case, in declaration order.

Columns: the case, its median microseconds per operation, its ratio to its baseline (the
baseline is named in the cell, since one group can hold several), and the number of repeats
the median is taken over. Cells are padded so the table also reads well as plain text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.measure import ratio

if TYPE_CHECKING:
    from collections.abc import Sequence

    from bench.measure import CaseResult

__all__ = ["HEADERS", "Row", "format_ratio", "format_table", "format_us", "rows_from_results"]

HEADERS = ("case", "µs/op (median)", "ratio to baseline", "repeats")
SPREAD_HEADER = "spread (IQR/median)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One line of the table. ``ratio`` and ``baseline`` are ``None`` for a baseline row."""

    case: str
    us_per_op: float
    ratio: float | None
    baseline: str | None
    repeats: int
    spread: float = 0.0


def rows_from_results(results: Sequence[CaseResult]) -> list[Row]:
    """Rows in the order of ``results``; ratios against baselines from the same results."""
    medians = {result.case.name: result.median_ns for result in results}
    rows = []
    for result in results:
        base = result.case.baseline
        rows.append(
            Row(
                case=result.case.name,
                us_per_op=result.median_ns / 1000,
                ratio=None if base is None else ratio(result.median_ns, medians[base]),
                baseline=base,
                repeats=len(result.ns_per_op),
                spread=result.spread,
            )
        )
    return rows


def format_us(us: float) -> str:
    """About three significant digits, never scientific notation."""
    if us >= 100:
        return f"{us:.0f}"
    if us >= 10:
        return f"{us:.1f}"
    if us >= 1:
        return f"{us:.2f}"
    return f"{us:.3f}"


def format_ratio(row: Row) -> str:
    if row.ratio is None or row.baseline is None:
        return "1.00 (baseline)"
    if 0 < row.ratio < 0.01:  # two decimals would print 0.00x: two significant digits instead
        digits = 1 - math.floor(math.log10(row.ratio))
        return f"{row.ratio:.{digits}f}x {row.baseline} ({1 / row.ratio:,.0f}x faster)"
    return f"{row.ratio:.2f}x {row.baseline}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def format_table(rows: Sequence[Row], *, spread: bool = False) -> str:
    """A markdown table of ``rows``; with ``spread``, a noise column is added at the end."""
    headers = [*HEADERS, SPREAD_HEADER] if spread else list(HEADERS)
    body = []
    for row in rows:
        cells = [_cell(row.case), format_us(row.us_per_op), _cell(format_ratio(row))]
        cells.append(str(row.repeats))
        if spread:
            cells.append(f"{row.spread:.0%}")
        body.append(cells)
    widths = [max(len(line[i]) for line in [headers, *body]) for i in range(len(headers))]
    # The case column is left-aligned, the figures right-aligned.
    rule = ["-" * widths[0]] + ["-" * (w - 1) + ":" for w in widths[1:]]
    lines = [_line(headers, widths), "| " + " | ".join(rule) + " |"]
    lines.extend(_line(cells, widths) for cells in body)
    return "\n".join(lines) + "\n"


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [cells[0].ljust(widths[0])] + [
        c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)
    ]
    return "| " + " | ".join(padded) + " |"
