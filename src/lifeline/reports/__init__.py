"""One report builder for the offline jobs (drill, eval, audit): a `Report` of sections, rendered as
Markdown and as one self-contained HTML page with inline SVG charts, and written with results.json.

    report = Report("Eval: qwen-local against openai", sections=[Bars(...), Table(...)], data=results)
    write_report(report, Path("out"))   # out/report.md, out/report.html, out/results.json

sections.py holds the parts; markdown.py and html.py (with charts.py for the SVG and tables.py for each
chart's numbers) render them; files.py writes them. Numbers are never typed into a report: the sections are
built from `data`, the computed results, which results.json keeps beside the pages.
"""

from lifeline.reports.files import write_report
from lifeline.reports.html import render_html
from lifeline.reports.markdown import render_markdown
from lifeline.reports.sections import (
    Bar,
    Bars,
    Distribution,
    HeatMap,
    Pair,
    Report,
    Section,
    SideBySide,
    Table,
    Text,
    Tile,
)

__all__ = [
    "Bar",
    "Bars",
    "Distribution",
    "HeatMap",
    "Pair",
    "Report",
    "Section",
    "SideBySide",
    "Table",
    "Text",
    "Tile",
    "render_html",
    "render_markdown",
    "write_report",
]
