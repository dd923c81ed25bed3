"""A report as Markdown: headings, paragraphs and pipe tables; each chart becomes the table of its numbers.

Text from data is escaped so that it reads as itself: nothing in an answer can open a link, a code span, an
emphasis or raw HTML (`<script>` shows as text), or break out of a table cell. The texts of a side-by-side
pair go in fenced blocks, longer than any run of backticks inside them.
"""

from __future__ import annotations

import re

from lifeline.reports.sections import (
    Bars,
    Distribution,
    HeatMap,
    Report,
    Section,
    SideBySide,
    Table,
    Text,
    cell,
    numeric_columns,
)
from lifeline.reports.tables import bars_table, distribution_table, heat_map_table

_INLINE = re.compile(r"[\\`*~\[\]<>|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|&(?=#?[A-Za-z0-9]+;)")
_LINE_START = re.compile(r"^(\s*)([#>+=~-]|\d+[.)](?=\s|$))", re.MULTILINE)


def escape(text: str, block: bool = False) -> str:
    """Plain text as Markdown that renders as exactly that text; `block`: text that starts lines (a paragraph),
    where a leading "#", "-" or "1." would otherwise make a heading or a list."""
    text = _INLINE.sub(lambda m: "\\" + m.group(0), text)
    return _LINE_START.sub(_escape_marker, text) if block else text


def _escape_marker(match: re.Match[str]) -> str:
    # a heading, quote, list or setext marker at the start of a line: "1." becomes "1\.", "#" becomes "\#"
    indent, marker = match.group(1), match.group(2)
    if marker[0].isdigit():
        return f"{indent}{marker[:-1]}\\{marker[-1]}"
    return f"{indent}\\{marker}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_markdown(report: Report) -> str:
    lines = [f"# {escape(_one_line(report.title))}", ""]
    if report.subtitle:
        lines += [escape(report.subtitle, block=True), ""]
    if report.facts:
        lines += [f"- **{escape(_one_line(name))}**: {escape(_one_line(value))}" for name, value in report.facts]
        lines.append("")
    for section in report.sections:
        lines += _section(section)
    # Blank lines between blocks, never more than one.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _section(section: Section) -> list[str]:
    match section:
        case Text():
            return [*_heading(section.heading), *escape(section.text, block=True).splitlines(), ""]
        case Table():
            return [*_heading(section.heading), *_table(section)]
        case Bars():
            return [*_heading(section.heading), *_table(bars_table(section))]
        case Distribution():
            return [*_heading(section.heading), *_table(distribution_table(section))]
        case HeatMap():
            return [*_heading(section.heading), *_table(heat_map_table(section))]
        case SideBySide():
            return [*_heading(section.heading), *_side_by_side(section)]


def _heading(heading: str | None) -> list[str]:
    return [f"## {escape(_one_line(heading))}", ""] if heading else []


def _table(table: Table) -> list[str]:
    numeric = numeric_columns(table)
    out = ["| " + " | ".join(escape(_one_line(c)) for c in table.columns) + " |"]
    out.append("|" + "|".join("--:" if n else "---" for n in numeric) + "|")
    out += ["| " + " | ".join(escape(_one_line(cell(v))) for v in row) + " |" for row in table.rows]
    out.append("")
    if table.caption:
        out += [f"*{escape(_one_line(table.caption))}*", ""]
    return out


def _side_by_side(section: SideBySide) -> list[str]:
    out: list[str] = []
    for pair in section.pairs:
        out += [f"### {escape(_one_line(pair.label))}", ""]
        for title, text in ((pair.left_title, pair.left), (pair.right_title, pair.right)):
            out += [f"**{escape(_one_line(title))}**", "", *_fenced(text), ""]
    if section.caption:
        out += [f"*{escape(_one_line(section.caption))}*", ""]
    return out


def _fenced(text: str) -> list[str]:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", *text.splitlines(), fence]
