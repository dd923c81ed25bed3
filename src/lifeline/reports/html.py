"""A report as one self-contained HTML page: inline CSS and SVG, no script, nothing from the network.

Everything from data is escaped, and the page's Content-Security-Policy forbids scripts and every fetch, so
an answer holding `<script>` or an image URL stays text even where an escape were missed. The page follows
the reader's light or dark setting, fits a phone (wide tables and charts scroll sideways, side-by-side texts
stack), and every chart is followed by its numbers as a table.
"""

from __future__ import annotations

from html import escape

from lifeline.reports.charts import bars_svg, distribution_svg, heat_map_svg, part_colours
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
    part_names,
)
from lifeline.reports.tables import bars_table, distribution_table, heat_map_table

#: no script, no fetch of any kind; only the page's own <style> and inline style attributes
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_CSS = """
:root { color-scheme: light dark; --fg: #1c2330; --muted: #4a5568; --bg: #ffffff; --line: #d8dde6;
        --head: #f4f6fa; --axis: #6b7587; --bad: #b3263a; --empty: #f0f2f5; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e9ef; --muted: #aab3c2; --bg: #14181f; --line: #39414f; --head: #1f2530;
          --axis: #8a94a6; --bad: #ff7b8a; --empty: #232a35; }
}
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); max-width: 980px; margin: 2rem auto; padding: 0 1rem; }
h1, h2, h3, h4, p, dd, td, caption, figcaption, .tile { overflow-wrap: anywhere; }
main, figure, .chart, .scroll { max-width: 100%; min-width: 0; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.25rem 0 .4rem; }
h4 { font-size: .9rem; margin: 0 0 .3rem; color: var(--muted); }
.subtitle { color: var(--muted); margin-top: 0; }
.text { white-space: pre-line; overflow-wrap: anywhere; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 1rem 0; }
dl.facts dt { font-weight: 600; color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.tiles { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1.25rem 0; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: .6rem 1rem; min-width: 8.5rem; }
.tile b { display: block; font-size: 1.6rem; }
.tile.alarm { border-color: var(--bad); }
.tile.alarm b { color: var(--bad); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: .9rem; padding-top: .3rem; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .7rem; text-align: left; vertical-align: top; }
th { background: var(--head); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 1.5rem; }
figcaption { color: var(--muted); font-size: .9rem; }
.chart { overflow-x: auto; }
.chart svg { display: block; width: 100%; height: auto; min-width: 480px; }
svg text { font: 11px system-ui, sans-serif; fill: var(--fg); }
svg .axis, svg .whisker line, svg .box line { stroke: var(--axis); stroke-width: 1.2; }
svg .box .median { stroke: var(--fg); stroke-width: 2.5; }
svg .whisker line { stroke: var(--fg); stroke-width: 1.5; }
svg .grid { stroke: var(--line); }
svg .empty rect { fill: var(--empty); stroke: var(--line); stroke-dasharray: 3 2; }
svg .swatch { stroke: var(--line); }
.legend { margin: .3rem 0; }
.legend span { display: inline-block; margin-right: 1rem; font-size: .85rem; }
.legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px;
            border: 1px solid var(--line); }
details { margin: .3rem 0 1rem; }
summary { cursor: pointer; color: var(--muted); font-size: .9rem; }
.pair { border-top: 1px solid var(--line); }
.sides { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.side pre { white-space: pre-wrap; overflow-wrap: anywhere; max-height: 24rem; overflow: auto; margin: 0;
            padding: .6rem .8rem; border: 1px solid var(--line); border-radius: 6px; background: var(--head);
            font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
footer { margin-top: 2.5rem; color: var(--muted); font-size: .85rem; border-top: 1px solid var(--line); }
@media (max-width: 640px) {
  body { margin: 1rem auto; font-size: 14px; }
  .sides { grid-template-columns: 1fr; }
  dl.facts { grid-template-columns: 1fr; }
  dl.facts dd { margin-bottom: .4rem; }
}
"""

FOOTER = "Every figure on this page is computed from results.json, written beside it."


def render_html(report: Report) -> str:
    e = escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        f"<title>{e(report.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{e(report.title)}</h1>",
    ]
    if report.subtitle:
        parts.append(f'<p class="subtitle">{e(report.subtitle)}</p>')
    if report.facts:
        parts.append('<dl class="facts">')
        parts += [f"<dt>{e(name)}</dt><dd>{e(value)}</dd>" for name, value in report.facts]
        parts.append("</dl>")
    if report.tiles:
        parts.append('<div class="tiles">')
        parts += [
            f'<div class="tile{" alarm" if t.alarm else ""}"><b>{e(t.value)}</b>{e(t.label)}</div>'
            for t in report.tiles
        ]
        parts.append("</div>")
    parts += [_section(section) for section in report.sections]
    parts.append(f"</main><footer><p>{e(FOOTER)}</p></footer></body></html>")
    return "\n".join(parts) + "\n"


def _heading(heading: str | None) -> str:
    return f"<h2>{escape(heading)}</h2>" if heading else ""


def _section(section: Section) -> str:
    match section:
        case Text():
            paragraphs = [p for p in section.text.split("\n\n") if p.strip()]
            return _heading(section.heading) + "".join(f'<p class="text">{escape(p)}</p>' for p in paragraphs)
        case Table():
            return _heading(section.heading) + table_html(section)
        case Bars():
            names = part_names(section.bars)
            colours = part_colours(names)
            legend = "".join(f'<span><i style="background:{colours[n]}"></i>{escape(n)}</span>' for n in names)
            return _figure(section.heading, bars_svg(section), section.caption, bars_table(section), legend)
        case Distribution():
            return _figure(section.heading, distribution_svg(section), section.caption, distribution_table(section))
        case HeatMap():
            return _figure(section.heading, heat_map_svg(section), section.caption, heat_map_table(section))
        case SideBySide():
            return _heading(section.heading) + _side_by_side(section)


def _figure(heading: str, svg: str, caption: str, numbers: Table, legend: str = "") -> str:
    out = [_heading(heading), "<figure>"]
    if legend:
        out.append(f'<div class="legend">{legend}</div>')
    out.append(f'<div class="chart">{svg}</div>')
    if caption:
        out.append(f"<figcaption>{escape(caption)}</figcaption>")
    numbers = Table(numbers.columns, numbers.rows)  # the caption is the figure's already
    out.append(f"<details><summary>The numbers</summary>{table_html(numbers)}</details></figure>")
    return "".join(out)


def table_html(table: Table) -> str:
    numeric = numeric_columns(table)

    def cls(i: int) -> str:
        return ' class="num"' if numeric[i] else ""

    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    head = "".join(f'<th scope="col"{cls(i)}>{escape(c)}</th>' for i, c in enumerate(table.columns))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{escape(cell(v))}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in table.rows
    )
    return f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _side_by_side(section: SideBySide) -> str:
    out = []
    for pair in section.pairs:
        sides = "".join(
            f'<div class="side"><h4>{escape(title)}</h4><pre tabindex="0">{escape(text)}</pre></div>'
            for title, text in ((pair.left_title, pair.left), (pair.right_title, pair.right))
        )
        out.append(f'<article class="pair"><h3>{escape(pair.label)}</h3><div class="sides">{sides}</div></article>')
    if section.caption:
        out.append(f'<p class="subtitle">{escape(section.caption)}</p>')
    return "".join(out)
