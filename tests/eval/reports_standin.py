"""A stand-in for `lifeline.reports` (CONTRACTS.md section B) used by the eval's tests only while that
module is built in another branch: the same names and signatures, rendering plainly. Delete it when the
real module is merged (the `reports_module` fixture then uses the real one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson


@dataclass
class Text:
    text: str
    heading: str | None = None


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    heading: str | None = None


@dataclass
class Bar:
    label: str
    value: float
    low: float | None = None
    high: float | None = None
    parts: dict[str, float] | None = None


@dataclass
class Bars:
    heading: str
    bars: list[Bar]
    unit: str = ""
    max_value: float | None = None
    caption: str = ""


@dataclass
class Distribution:
    heading: str
    series: dict[str, list[float]]
    unit: str = ""
    caption: str = ""


@dataclass
class Pair:
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
    heading: str
    rows: list[str]
    columns: list[str]
    values: list[list[float | None]]
    unit: str = ""
    low: float | None = None
    high: float | None = None
    caption: str = ""


@dataclass
class Report:
    title: str
    subtitle: str = ""
    sections: list[Any] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def render_markdown(report: Report) -> str:
    lines = [f"# {report.title}", report.subtitle]
    for section in report.sections:
        lines.append(f"## {getattr(section, 'heading', '') or ''}")
        if isinstance(section, Table):
            lines.append(" | ".join(section.columns))
            lines.extend(" | ".join(str(c) for c in row) for row in section.rows)
        else:
            lines.append(repr(section))
    return "\n".join(lines) + "\n"


def render_html(report: Report) -> str:
    return f"<html><body><pre>{render_markdown(report)}</pre></body></html>"


def write_report(report: Report, directory: Path, stem: str = "report") -> dict[str, Path]:
    paths = {"markdown": directory / f"{stem}.md", "html": directory / f"{stem}.html"}
    paths["markdown"].write_text(render_markdown(report))
    paths["html"].write_text(render_html(report))
    paths["results"] = directory / "results.json"
    paths["results"].write_bytes(orjson.dumps(report.data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return paths
