"""A report's parts: the `Report` and its sections, plain data that both renderings read.

A section is one of a few kinds — a paragraph, a table, bars, distributions, texts side by side, a heat map —
each holding the numbers a job computed, never formatted prose about them. `cell` and `number` turn a value
into the text both renderings show, so the Markdown and the HTML never disagree on a figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Cell = str | int | float | None


@dataclass
class Text:
    """A paragraph of plain text (escaped in HTML, never read as markup)."""

    text: str
    heading: str | None = None


@dataclass
class Table:
    """A table; a column whose cells are all numbers (or None) is right-aligned."""

    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    heading: str | None = None

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table row {i} has {len(row)} cells for {len(self.columns)} columns")


@dataclass
class Bar:
    """One bar: `value`; `low`/`high` an interval drawn as whiskers; `parts` a stacked bar (win/tie/loss)."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    parts: dict[str, float] | None = None


@dataclass
class Bars:
    """Horizontal bars on one scale, from 0 to `max_value` (default: the largest value, high or stack)."""

    heading: str
    bars: list[Bar]
    unit: str = ""
    max_value: float | None = None
    caption: str = ""


@dataclass
class Distribution:
    """Per series, a box (p25 to p75, whiskers p5 to p95, a line at p50) over the points themselves."""

    heading: str
    series: dict[str, list[float]]
    unit: str = ""
    caption: str = ""


@dataclass
class Pair:
    """Two texts to read side by side (two answers to one prompt)."""

    label: str
    left_title: str
    left: str
    right_title: str
    right: str


@dataclass
class SideBySide:
    heading: str
    pairs: list[Pair]
    caption: str = ""


@dataclass
class HeatMap:
    """A grid of values coloured from `low` to `high` (default: the smallest and largest); None is no value."""

    heading: str
    rows: list[str]
    columns: list[str]
    values: list[list[float | None]]
    unit: str = ""
    low: float | None = None
    high: float | None = None
    caption: str = ""

    def __post_init__(self) -> None:
        if len(self.values) != len(self.rows) or any(len(r) != len(self.columns) for r in self.values):
            raise ValueError(f"heat map {self.heading!r}: values must be {len(self.rows)} rows by {len(self.columns)}")


@dataclass
class Tile:
    """A headline figure shown large at the top of the HTML page; `alarm` marks it as bad news."""

    label: str
    value: str
    alarm: bool = False


Section = Text | Table | Bars | Distribution | SideBySide | HeatMap


@dataclass
class Report:
    """A titled list of sections, and `data`: the results every figure was computed from (results.json).

    `facts` (name, value) are listed under the title — when, what, against what; `tiles` are headline figures.
    """

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    facts: list[tuple[str, str]] = field(default_factory=list, kw_only=True)
    tiles: list[Tile] = field(default_factory=list, kw_only=True)


# --- numbers, the same in both renderings ---------------------------------------------------------------


def number(value: float) -> str:
    """A number as a reader wants it: integers whole, others to three significant digits."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}"


def cell(value: Cell) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return number(value)


def with_unit(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{number(value)} {unit}".rstrip()


def numeric_columns(table: Table) -> list[bool]:
    """Which columns hold only numbers (or nothing): those are right-aligned."""
    return [
        bool(table.rows) and all(not isinstance(row[i], str) for row in table.rows) for i in range(len(table.columns))
    ]


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value that at least p % of the values do not exceed."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


#: the five points a Distribution's box is drawn from
BOX_PERCENTILES = (5, 25, 50, 75, 95)


def box(values: Sequence[float]) -> tuple[float, float, float, float, float] | None:
    """p5, p25, p50, p75, p95 of the finite values; None when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    p5, p25, p50, p75, p95 = (percentile(finite, p) or 0.0 for p in BOX_PERCENTILES)
    return p5, p25, p50, p75, p95


def bar_extent(bar: Bar) -> float:
    """How far a bar reaches on its scale: its value, its interval's high end, or its stack."""
    stack = sum(v for v in (bar.parts or {}).values() if math.isfinite(v) and v > 0)
    return max(bar.value if math.isfinite(bar.value) else 0.0, bar.high or 0.0, stack)


def part_names(bars: Sequence[Bar]) -> list[str]:
    """The stacked parts' names, in the order they first appear."""
    names: dict[str, None] = {}
    for bar in bars:
        names.update(dict.fromkeys(bar.parts or {}))
    return list(names)
