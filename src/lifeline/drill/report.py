"""A drill's report: Markdown, a self-contained HTML page with SVG charts, and results.json.

The report is built once as a few titled sections (paragraphs and tables of plain text) and rendered to
Markdown and to HTML from the same sections, so the two never disagree. The HTML carries its CSS and its
charts inline — no scripts, fonts or images from anywhere — so it can be mailed or attached to an incident
as one file and still open offline.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lifeline.drill.runner import DrillResult, PassResult, RequestResult
from lifeline.drill.summary import Spread, Summary, summarise

#: bumped when results.json changes shape incompatibly
RESULTS_FORMAT = 1

PALETTE = ("#2e86ab", "#3b9c5a", "#7b5ea7", "#c17c00", "#1d7874", "#8a5a44", "#5c6b8a", "#a23b72")
ERROR_COLOUR = "#d1495b"
INCOMPLETE_COLOUR = "#e8871e"


# --- formatting ----------------------------------------------------------------------------------------


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def spread(s: Spread) -> str:
    if not s.count:
        return "-"
    return f"{seconds(s.p50)} / {seconds(s.p90)} / {seconds(s.p99)}"


# --- the sections, shared by both renderings -----------------------------------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    #: columns (by index) holding numbers: right-aligned
    numeric: set[int] = field(default_factory=set)


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    table: Table | None = None


@dataclass
class Report:
    title: str
    facts: list[tuple[str, str]]
    sections: list[Section]
    drill: Summary
    baseline: Summary | None


def build(result: DrillResult) -> Report:
    plan = result.plan
    drill = summarise(result.drill)
    baseline = summarise(result.baseline) if result.baseline is not None else None
    fault = plan.fault.kind + (f" after {plan.fault.after} content chunks" if plan.fault.kind == "stream_cut" else "")
    facts = [
        ("When", f"{result.started_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("Config", plan.config_file or "(given in code)"),
        ("Alias", f"{plan.alias}: {' → '.join(result.chain)}"),
        ("Cut", f"{', '.join(plan.cut)} ({fault})"),
        (
            "Traffic",
            f"{plan.requests} requests, {plan.concurrency} at a time, "
            f"{'streaming' if plan.stream else 'not streaming'}, max_tokens {plan.max_tokens}",
        ),
        ("Prompts", plan.prompts_file or "built-in"),
    ]
    if baseline is not None:
        facts.append(("Baseline", "the same traffic first, without the cut"))
    sections = [
        _continuity(drill, baseline),
        _served(drill, result.chain),
        _continuations(drill),
        _errors(drill),
    ]
    if drill.incomplete:
        sections.append(_incomplete(result.drill))
    sections.append(_circuits(result.circuits))
    title = f"Lifeline drill: {percent(drill.answered, drill.total)} served with {', '.join(plan.cut)} cut off"
    return Report(title, facts, sections, drill, baseline)


def _continuity(drill: Summary, baseline: Summary | None) -> Section:
    def column(s: Summary) -> list[str]:
        return [
            f"{s.answered} / {s.total} ({percent(s.answered, s.total)})",
            str(s.errors),
            str(s.incomplete),
            str(s.continued),
            str(s.failed_over),
            str(s.attempts),
            spread(s.latency),
            spread(s.ttft),
            str(s.completion_tokens),
            seconds(s.duration),
        ]

    labels = [
        "served",
        "errors",
        "incomplete answers (a bug)",
        "continued mid-stream",
        "failed over (more than one attempt)",
        "upstream attempts",
        "latency p50 / p90 / p99",
        "TTFT p50 / p90 / p99",
        "completion tokens",
        "duration",
    ]
    columns = [column(drill)] + ([column(baseline)] if baseline is not None else [])
    headers = ["measure", "drill"] + (["baseline (no cut)"] if baseline is not None else [])
    rows = [[label, *(c[i] for c in columns)] for i, label in enumerate(labels)]
    return Section("Continuity", table=Table(headers, rows, numeric={1, 2}))


def _served(s: Summary, chain: list[str]) -> Section:
    if not s.answered:
        return Section("Served by target", ["No request was answered."])
    seen = {*s.served_by, *s.finished_by}
    # in the alias's order, the way an operator reads the chain; anything else after
    targets = [t for t in chain if t in seen] + sorted(seen - set(chain))
    rows = [
        [t, str(s.served_by.get(t, 0)), percent(s.served_by.get(t, 0), s.total), str(s.finished_by.get(t, 0))]
        for t in targets
    ]
    notes = [
        "answered: requests whose answer this target began (x-lifeline-target); share: of every request sent; "
        "finished: answers whose end this target wrote (after a continuation, the target continued to)."
    ]
    return Section("Served by target", notes, Table(["target", "answered", "share", "finished"], rows, {1, 2, 3}))


def _continuations(s: Summary) -> Section:
    if not s.continuations:
        return Section("Continuations", ["No stream was continued."])
    rows = [[f"{src} → {dst}", str(n)] for (src, dst), n in s.continuations.items()]
    reasons = ", ".join(f"{reason} ({n})" for reason, n in s.continuation_reasons.items())
    text = f"{s.continued} answers were continued on another target mid-stream; why the streams broke: {reasons}."
    return Section("Continuations", [text], Table(["from → to", "count"], rows, {1}))


def _errors(s: Summary) -> Section:
    if not s.error_groups:
        return Section("Errors", ["None."])
    rows = [
        [
            g.code,
            str(g.count),
            ", ".join("none" if st is None else str(st) for st in g.statuses),
            _clip(g.example, 160),
        ]
        for g in s.error_groups
    ]
    return Section("Errors", [], Table(["code", "count", "HTTP status", "example message"], rows, {1}))


def _incomplete(run: PassResult) -> Section:
    broken = [r for r in run.results if r.outcome == "incomplete"]
    text = (
        f"{len(broken)} answers stopped without a finish reason or [DONE] and without an error. A client "
        "would take them for complete: this is a bug in the gateway, please report it."
    )
    rows = [[str(r.index), r.request_id or "-", r.target or "-", r.error_message or ""] for r in broken[:20]]
    return Section("Incomplete answers", [text], Table(["request", "x-request-id", "target", "what"], rows))


def _circuits(circuits: list[dict[str, Any]]) -> Section:
    rows = [
        [
            str(c.get("target")),
            str(c.get("state")),
            str(c.get("override") or "-"),
            str(c.get("consecutive_failures")),
            str(c.get("last_error") or "-"),
            str(c.get("times_opened")),
        ]
        for c in circuits
    ]
    notes = ["As the gateway saw its targets when the drill's traffic ended, before the cut was healed."]
    headers = ["target", "circuit", "override", "failures in a row", "last error", "times opened"]
    return Section("Circuits at the end", notes, Table(headers, rows, {3, 5}))


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Markdown -----------------------------------------------------------------------------------------


def markdown(result: DrillResult) -> str:
    report = build(result)
    lines = [f"# {report.title}", ""]
    lines += [f"- **{name}**: {_md(value)}" for name, value in report.facts]
    for section in report.sections:
        lines += ["", f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            lines += [_md(paragraph), ""]
        if section.table is not None:
            lines += _md_table(section.table)
    # A section's last paragraph and the next heading each bring a blank line; one is enough.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip() + "\n"


def _md(text: str) -> str:
    # Only what would break a table or start markup by accident; the text is otherwise plain.
    return text.replace("|", "\\|").replace("[DONE]", "`[DONE]`")


def _md_table(table: Table) -> list[str]:
    align = ["--:" if i in table.numeric else "---" for i in range(len(table.headers))]
    rows = [table.headers, align, *table.rows]
    return ["| " + " | ".join(_md(cell) if row is not align else cell for cell in row) + " |" for row in rows]


# --- HTML -----------------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1c2330;
       max-width: 980px; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d8dde6; padding-bottom: .2rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 1rem 0; }
dl.facts dt { font-weight: 600; color: #4a5568; }
dl.facts dd { margin: 0; }
.headline { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1.25rem 0; }
.tile { border: 1px solid #d8dde6; border-radius: 8px; padding: .6rem 1rem; min-width: 8.5rem; }
.tile b { display: block; font-size: 1.6rem; }
.tile.bad b { color: #d1495b; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border-bottom: 1px solid #e3e7ee; padding: .3rem .7rem; text-align: left; vertical-align: top; }
th { background: #f4f6fa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 1.5rem; }
figcaption { color: #4a5568; font-size: .9rem; }
.legend span { display: inline-block; margin-right: 1rem; font-size: .85rem; }
.legend i { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem; vertical-align: -1px; }
svg text { font: 11px system-ui, sans-serif; fill: #1c2330; }
"""


def html_page(result: DrillResult) -> str:
    report = build(result)
    drill = report.drill
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(report.title)}</h1>",
        '<dl class="facts">',
        *(f"<dt>{e(name)}</dt><dd>{e(value)}</dd>" for name, value in report.facts),
        "</dl>",
        '<div class="headline">',
        _tile("served", percent(drill.answered, drill.total), drill.answered < drill.total),
        _tile("errors", str(drill.errors), drill.errors > 0),
        _tile("incomplete (bug)", str(drill.incomplete), drill.incomplete > 0),
        _tile("continued", str(drill.continued), False),
        _tile("latency p50", seconds(drill.latency.p50), False),
        _tile("TTFT p50", seconds(drill.ttft.p50), False),
        "</div>",
    ]
    colours = target_colours(result)
    for section in report.sections:
        parts.append(f"<h2>{e(section.title)}</h2>")
        parts += [f"<p>{e(p)}</p>" for p in section.paragraphs]
        if section.table is not None:
            parts.append(_html_table(section.table))
        if section.title == "Continuity":
            parts += _figures(result.drill, colours)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _tile(label: str, value: str, bad: bool) -> str:
    return f'<div class="tile{" bad" if bad else ""}"><b>{html.escape(value)}</b>{html.escape(label)}</div>'


def _html_table(table: Table) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        cls = ' class="num"' if i in table.numeric else ""
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(table.headers))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figures(run: PassResult, colours: dict[str, str]) -> list[str]:
    legend = '<div class="legend">' + "".join(
        f'<span><i style="background:{c}"></i>{html.escape(name)}</span>' for name, c in colours.items()
    )
    legend += f'<span><i style="background:{ERROR_COLOUR}"></i>error</span>'
    legend += f'<span><i style="background:{INCOMPLETE_COLOUR}"></i>incomplete</span></div>'
    return [
        "<figure>",
        outcome_chart(run.results, colours),
        "<figcaption>Requests by outcome: answered, by the target that began the answer; failed, by error "
        "code.</figcaption></figure>",
        legend,
        "<figure>",
        latency_histogram(run.results, colours),
        "<figcaption>Latency of every request (to the end of the answer, or of the error), coloured by the "
        "target that finished the answer.</figcaption></figure>",
        "<figure>",
        timeline(run.results, colours),
        "<figcaption>Each request: when it was sent (across) and how long it took (up). A circuit opening "
        "shows as the latency dropping.</figcaption></figure>",
    ]


def target_colours(result: DrillResult) -> dict[str, str]:
    names = list(result.chain)
    for r in result.drill.results:
        for name in (r.target, r.finished_by):
            if name and name not in names:
                names.append(name)
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _colour(result: RequestResult, colours: dict[str, str]) -> str:
    if result.outcome == "error":
        return ERROR_COLOUR
    if result.outcome == "incomplete":
        return INCOMPLETE_COLOUR
    return colours.get(result.finished_by or "", PALETTE[-1])


# --- SVG charts (no script: <title> elements give the hover labels) ----------------------------------


def outcome_chart(results: Sequence[RequestResult], colours: dict[str, str]) -> str:
    bars: dict[str, tuple[int, str]] = {}
    for r in results:
        if r.outcome == "answered":
            label, colour = f"answered by {r.target or '?'}", colours.get(r.target or "", PALETTE[-1])
        elif r.outcome == "incomplete":
            label, colour = "incomplete", INCOMPLETE_COLOUR
        else:
            label, colour = f"error: {r.error_code or 'unknown'}", ERROR_COLOUR
        count = bars.get(label, (0, colour))[0]
        bars[label] = (count + 1, colour)
    rows = sorted(bars.items(), key=lambda item: (item[0].startswith(("error", "incomplete")), -item[1][0]))
    width, label_w, row_h, top = 720, 220, 28, 8
    bar_w = width - label_w - 110
    height = top * 2 + row_h * max(1, len(rows))
    most = max((n for n, _ in bars.values()), default=1)
    out = [_svg_open(width, height, "Requests by outcome")]
    for i, (label, (count, colour)) in enumerate(rows):
        y = top + i * row_h
        w = max(1.0, bar_w * count / most)
        share = percent(count, len(results))
        out.append(f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{html.escape(_clip(label, 34))}</text>')
        out.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}">'
            f"<title>{html.escape(label)}: {count} ({share})</title></rect>"
        )
        out.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 17}">{count} ({share})</text>')
    out.append("</svg>")
    return "".join(out)


def latency_histogram(results: Sequence[RequestResult], colours: dict[str, str]) -> str:
    width, height, left, bottom, top, right = 720, 240, 60, 34, 12, 16
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [_svg_open(width, height, "Latency histogram")]
    if not results:
        out.append(f'<text x="{left}" y="{top + 20}">no requests</text></svg>')
        return "".join(out)
    span = max(r.latency for r in results) or 1.0
    bins = min(24, max(6, math.ceil(math.sqrt(len(results)))))
    step = span / bins
    # one stack per bin, a layer per colour: the target that finished the answer, or the failure
    stacks: list[dict[str, int]] = [{} for _ in range(bins)]
    for r in results:
        slot = min(bins - 1, int(r.latency / step))
        colour = _colour(r, colours)
        stacks[slot][colour] = stacks[slot].get(colour, 0) + 1
    names = {c: name for name, c in colours.items()} | {ERROR_COLOUR: "error", INCOMPLETE_COLOUR: "incomplete"}
    order = [*colours.values(), ERROR_COLOUR, INCOMPLETE_COLOUR]
    tallest = max(sum(stack.values()) for stack in stacks)
    out.append(_axes(left, top, plot_w, plot_h))
    bar_w = plot_w / bins
    for i, stack in enumerate(stacks):
        x = left + i * bar_w
        base = float(top + plot_h)
        low, high = step * i, step * (i + 1)
        for colour in order:
            count = stack.get(colour, 0)
            if not count:
                continue
            h = plot_h * count / tallest
            base -= h
            out.append(
                f'<rect x="{x + 1:.1f}" y="{base:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{count} {html.escape(names.get(colour, ''))}, {seconds(low)} to {seconds(high)}</title></rect>"
            )
    out.append(_x_ticks(left, top + plot_h, plot_w, span))
    out.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{tallest}</text>')
    out.append(f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>')
    out.append(f'<text x="{left + plot_w}" y="{height - 2}" text-anchor="end">latency</text>')
    out.append("</svg>")
    return "".join(out)


def timeline(results: Sequence[RequestResult], colours: dict[str, str]) -> str:
    width, height, left, bottom, top, right = 720, 240, 60, 34, 12, 16
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [_svg_open(width, height, "Latency over the drill")]
    if not results:
        out.append(f'<text x="{left}" y="{top + 20}">no requests</text></svg>')
        return "".join(out)
    span_x = max(r.started for r in results) or 1.0
    span_y = max(r.latency for r in results) or 1.0
    out.append(_axes(left, top, plot_w, plot_h))
    for r in results:
        x = left + plot_w * r.started / span_x
        y = top + plot_h - plot_h * r.latency / span_y
        who = (r.finished_by or "?") if r.outcome == "answered" else (r.error_code or r.outcome)
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.2" fill="{_colour(r, colours)}" fill-opacity="0.85">'
            f"<title>request {r.index}: {html.escape(who)}, {seconds(r.latency)}</title></circle>"
        )
    out.append(_x_ticks(left, top + plot_h, plot_w, span_x))
    out.append(f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{seconds(span_y)}</text>')
    out.append(f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>')
    out.append(f'<text x="{left + plot_w}" y="{height - 2}" text-anchor="end">sent at</text>')
    out.append("</svg>")
    return "".join(out)


def _svg_open(width: int, height: int, label: str) -> str:
    # Inline SVG in HTML needs no namespace declaration; leaving it out keeps the page free of any URL.
    return (
        f'<svg viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img" '
        f'aria-label="{html.escape(label)}">'
    )


def _axes(left: int, top: int, plot_w: int, plot_h: int) -> str:
    bottom = top + plot_h
    return (
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="#8a94a6"/>'
        f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#8a94a6"/>'
    )


def _x_ticks(left: int, y: int, plot_w: int, span: float) -> str:
    ticks = []
    for i in range(5):
        x = left + plot_w * i / 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        ticks.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" stroke="#8a94a6"/>')
        ticks.append(f'<text x="{x:.1f}" y="{y + 16}" text-anchor="{anchor}">{seconds(span * i / 4)}</text>')
    return "".join(ticks)


# --- results.json and the files ------------------------------------------------------------------------


def results_json(result: DrillResult) -> dict[str, Any]:
    plan = result.plan

    def run(p: PassResult) -> dict[str, Any]:
        return {
            "summary": summarise(p).as_dict(),
            "requests": [r.as_dict() for r in p.results],
        }

    return {
        "format": RESULTS_FORMAT,
        "started_at": result.started_at.isoformat(),
        "plan": {
            "config_file": plan.config_file,
            "alias": plan.alias,
            "chain": result.chain,
            "cut": list(plan.cut),
            "fault": plan.fault.kind,
            "after": plan.fault.after if plan.fault.kind == "stream_cut" else None,
            "requests": plan.requests,
            "concurrency": plan.concurrency,
            "stream": plan.stream,
            "max_tokens": plan.max_tokens,
            "prompts_file": plan.prompts_file,
            "baseline": plan.baseline,
        },
        "drill": run(result.drill),
        "baseline": run(result.baseline) if result.baseline is not None else None,
        "circuits": result.circuits,
    }


@dataclass(frozen=True, slots=True)
class Written:
    markdown: Path
    html: Path
    results: Path


def write_reports(result: DrillResult, out: Path) -> Written:
    out.mkdir(parents=True, exist_ok=True)
    written = Written(out / "report.md", out / "report.html", out / "results.json")
    written.markdown.write_text(markdown(result), encoding="utf-8")
    written.html.write_text(html_page(result), encoding="utf-8")
    written.results.write_bytes(orjson.dumps(results_json(result), option=orjson.OPT_INDENT_2) + b"\n")
    return written
