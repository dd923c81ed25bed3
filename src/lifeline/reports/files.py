"""Writing a report: `{stem}.md`, `{stem}.html` and results.json (the data every figure was computed from)."""

from __future__ import annotations

from pathlib import Path

import orjson

from lifeline.reports.html import render_html
from lifeline.reports.markdown import render_markdown
from lifeline.reports.sections import Report


def write_report(report: Report, directory: Path, stem: str = "report") -> dict[str, Path]:
    """Write the three files into `directory` (created if missing); their paths by kind:
    ``{"markdown": …/{stem}.md, "html": …/{stem}.html, "results": …/results.json}``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": directory / f"{stem}.md",
        "html": directory / f"{stem}.html",
        "results": directory / "results.json",
    }
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    paths["results"].write_bytes(orjson.dumps(report.data, option=options) + b"\n")
    return paths
