"""A drill's report: Markdown, a self-contained HTML page with SVG charts, and results.json.

The numbers come from drill/summary.py; this module lays them out as sections of the shared report
(lifeline.reports), which renders the Markdown and the HTML from the same sections — so the two never
disagree — and writes results.json, from which every figure can be computed again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifeline.drill.runner import DrillResult, PassResult, RequestResult
from lifeline.drill.summary import Spread, Summary, percentile, summarise
from lifeline.reports import Bar, Bars, Distribution, HeatMap, Report, Section, Table, Text, Tile, write_report
from lifeline.reports import render_html as _render_html
from lifeline.reports import render_markdown as _render_markdown
from lifeline.reports.sections import Cell

#: bumped when results.json changes shape incompatibly
RESULTS_FORMAT = 1

#: the latency heat map's columns: the drill's sending time cut into this many equal windows
TIME_WINDOWS = 8


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


# --- the report's sections ------------------------------------------------------------------------------


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
    tiles = [
        Tile("served", percent(drill.answered, drill.total), drill.answered < drill.total),
        Tile("errors", str(drill.errors), drill.errors > 0),
        Tile("incomplete (bug)", str(drill.incomplete), drill.incomplete > 0),
        Tile("continued", str(drill.continued)),
        Tile("latency p50", seconds(drill.latency.p50)),
        Tile("TTFT p50", seconds(drill.ttft.p50)),
    ]
    sections: list[Section] = [
        _continuity(drill, baseline),
        _outcomes(result.drill.results),
        _latency(result.drill.results),
        _latency_over_time(result.drill.results),
        *_served(drill, result.chain),
        *_continuations(drill),
        *_errors(drill),
    ]
    if drill.incomplete:
        sections += _incomplete(result.drill)
    sections += _circuits(result.circuits)
    title = f"Lifeline drill: {percent(drill.answered, drill.total)} served with {', '.join(plan.cut)} cut off"
    return Report(title, sections=sections, data=results_json(result), facts=facts, tiles=tiles)


def _continuity(drill: Summary, baseline: Summary | None) -> Table:
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
    rows: list[list[Cell]] = [[label, *(c[i] for c in columns)] for i, label in enumerate(labels)]
    return Table(headers, rows, heading="Continuity")


def _outcome(r: RequestResult) -> str:
    """What became of a request, as the charts group it."""
    if r.outcome == "answered":
        return f"answered by {r.target or '?'}"
    if r.outcome == "incomplete":
        return "incomplete"
    return f"error: {r.error_code or 'unknown'}"


def _finish(r: RequestResult) -> str:
    """Who finished the answer, or how the request failed."""
    if r.outcome == "answered":
        return f"finished by {r.finished_by or '?'}"
    return _outcome(r)


def _groups(results: list[RequestResult], key: Callable[[RequestResult], str]) -> dict[str, list[RequestResult]]:
    """Requests grouped by `key`: answers first, then failures; the largest group first in each."""
    groups: dict[str, list[RequestResult]] = {}
    for r in results:
        groups.setdefault(key(r), []).append(r)
    return dict(sorted(groups.items(), key=lambda item: (item[1][0].outcome != "answered", -len(item[1]))))


def _outcomes(results: list[RequestResult]) -> Bars:
    groups = _groups(results, _outcome)
    bars = [Bar(label, float(len(members))) for label, members in groups.items()]
    caption = (
        f"Requests by outcome, of {len(results)}: answered, by the target that began the answer; failed, by error code."
    )
    return Bars("Requests by outcome", bars, caption=caption)


def _latency(results: list[RequestResult]) -> Distribution:
    series = {label: [r.latency for r in members] for label, members in _groups(results, _finish).items()}
    caption = (
        "Latency of every request (to the end of the answer, or of the error), by the target that finished the "
        "answer: the box spans p25 to p75, the whiskers p5 to p95, each dot is a request."
    )
    return Distribution("Latency by target", series, unit="s", caption=caption)


def _latency_over_time(results: list[RequestResult]) -> HeatMap:
    windows = max(1, min(TIME_WINDOWS, len(results)))
    span = max((r.started for r in results), default=0.0) or 1.0
    step = span / windows
    groups = _groups(results, _finish)
    values: list[list[float | None]] = []
    for members in groups.values():
        cells: list[list[float]] = [[] for _ in range(windows)]
        for r in members:
            cells[min(windows - 1, int(r.started / step))].append(r.latency)
        values.append([percentile(c, 50) for c in cells])
    columns = [f"from {seconds(step * i)}" for i in range(windows)]
    caption = (
        "Median latency (seconds) of the requests sent in each window of the drill (columns: from when, after "
        "the first request), by the target that finished the answer or by the failure; n/a where no such request "
        "was sent. A circuit opening shows as the latency dropping."
    )
    return HeatMap("Latency over the drill", list(groups), columns, values, unit="s", caption=caption)


def _served(s: Summary, chain: list[str]) -> list[Section]:
    if not s.answered:
        return [Text("No request was answered.", heading="Served by target")]
    seen = {*s.served_by, *s.finished_by}
    # in the alias's order, the way an operator reads the chain; anything else after
    targets = [t for t in chain if t in seen] + sorted(seen - set(chain))
    rows: list[list[Cell]] = [
        [t, s.served_by.get(t, 0), percent(s.served_by.get(t, 0), s.total), s.finished_by.get(t, 0)] for t in targets
    ]
    note = (
        "answered: requests whose answer this target began (x-lifeline-target); share: of every request sent; "
        "finished: answers whose end this target wrote (after a continuation, the target continued to)."
    )
    return [Text(note, heading="Served by target"), Table(["target", "answered", "share", "finished"], rows)]


def _continuations(s: Summary) -> list[Section]:
    if not s.continuations:
        return [Text("No stream was continued.", heading="Continuations")]
    rows: list[list[Cell]] = [[f"{src} → {dst}", n] for (src, dst), n in s.continuations.items()]
    reasons = ", ".join(f"{reason} ({n})" for reason, n in s.continuation_reasons.items())
    text = f"{s.continued} answers were continued on another target mid-stream; why the streams broke: {reasons}."
    return [Text(text, heading="Continuations"), Table(["from → to", "count"], rows)]


def _errors(s: Summary) -> list[Section]:
    if not s.error_groups:
        return [Text("None.", heading="Errors")]
    rows: list[list[Cell]] = [
        [
            g.code,
            g.count,
            ", ".join("none" if st is None else str(st) for st in g.statuses),
            _clip(g.example, 160),
        ]
        for g in s.error_groups
    ]
    return [Table(["code", "count", "HTTP status", "example message"], rows, heading="Errors")]


def _incomplete(run: PassResult) -> list[Section]:
    broken = [r for r in run.results if r.outcome == "incomplete"]
    text = (
        f"{len(broken)} answers stopped without a finish reason or [DONE] and without an error. A client "
        "would take them for complete: this is a bug in the gateway, please report it."
    )
    rows: list[list[Cell]] = [
        [r.index, r.request_id or "-", r.target or "-", r.error_message or ""] for r in broken[:20]
    ]
    return [Text(text, heading="Incomplete answers"), Table(["request", "x-request-id", "target", "what"], rows)]


def _circuits(circuits: list[dict[str, Any]]) -> list[Section]:
    def number_or_text(value: Any) -> Cell:
        return value if isinstance(value, int | float) and not isinstance(value, bool) else str(value)

    rows: list[list[Cell]] = [
        [
            str(c.get("target")),
            str(c.get("state")),
            str(c.get("override") or "-"),
            number_or_text(c.get("consecutive_failures")),
            str(c.get("last_error") or "-"),
            number_or_text(c.get("times_opened")),
        ]
        for c in circuits
    ]
    note = "As the gateway saw its targets when the drill's traffic ended, before the cut was healed."
    headers = ["target", "circuit", "override", "failures in a row", "last error", "times opened"]
    return [Text(note, heading="Circuits at the end"), Table(headers, rows)]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown(result: DrillResult) -> str:
    return _render_markdown(build(result))


def html_page(result: DrillResult) -> str:
    return _render_html(build(result))


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
    paths = write_report(build(result), out)
    return Written(paths["markdown"], paths["html"], paths["results"])
