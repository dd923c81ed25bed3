"""The eval's report: results.json's figures as a `lifeline.reports.Report` (the report module the drill
shares), which renders it as Markdown and as one self-contained HTML page. Every number shown is taken
from the figures `summary.summarise` computed; nothing here computes or types one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from lifeline.eval.checks import CHECKS

if TYPE_CHECKING:
    from lifeline.reports import Report

VERDICT_WORDS = {"ready": "ready", "ready_with_caveats": "ready with caveats", "not_ready": "not ready"}


def write_results(results: dict[str, Any], directory: Path) -> Path:
    """results.json (sorted keys, indent 2: the report module's format), written before the report so that
    the figures are there even if rendering fails."""
    path = directory / "results.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return path


def write_outputs(results: dict[str, Any], directory: Path) -> dict[str, Path]:
    """results.json, report.md and report.html in `directory`."""
    from lifeline.reports import write_report

    write_results(results, directory)
    written: dict[str, Path] = write_report(build_report(results), directory, stem="report")
    return written


def _interval(p: dict[str, Any]) -> str:
    if p.get("rate") is None:
        return "n/a"
    return f"{p['rate']:.1%} [{p['low']:.1%}, {p['high']:.1%}] ({p['k']}/{p['n']})"


def _ratio(r: dict[str, Any]) -> str:
    if r.get("value") is None:
        return "n/a"
    if r.get("low") is None:
        return f"{r['value']:.2f}"
    return f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}] ({r['pairs']} pairs)"


def _num(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.1f}{unit}"


def build_report(results: dict[str, Any]) -> Report:
    """The Report of an eval's results (lifeline.reports.Report)."""
    from lifeline.reports import Bar, Bars, Distribution, Pair, Report, SideBySide, Table, Text

    run, baseline, candidates = results["run"], results["baseline"], results["candidates"]
    names = [c["name"] for c in candidates]
    judge = run.get("judge")
    judged = f"judge {judge['alias']} ({judge['prompt_version']})" if judge else "no judge: outcomes by checks"
    subtitle = f"{run['items']} items · baseline {baseline['name']} · {judged} · spent ${run['spent_usd']:.4f}"
    if run.get("stopped") == "cost_cap":
        subtitle += " · stopped by the cost cap"
    sections: list[Any] = []
    # What blocks a switch apart from what to check first: a reader acts on the first column, not the second.
    verdict_rows = [
        [
            c["name"],
            VERDICT_WORDS[c["verdict"]["status"]],
            "; ".join(c["verdict"]["reasons"]) or "-",
            "; ".join(c["verdict"]["caveats"]) or "-",
        ]
        for c in candidates
    ]
    sections.append(Table(["candidate", "verdict", "why not ready", "caveats"], verdict_rows, heading="Verdict"))
    sections.append(
        Bars(
            "Win / tie / loss against the baseline",
            [
                Bar(
                    c["name"],
                    c["outcomes"]["win_or_tie"]["rate"] or 0.0,
                    c["outcomes"]["win_or_tie"]["low"],
                    c["outcomes"]["win_or_tie"]["high"],
                    parts={k: c["outcomes"][k]["rate"] or 0.0 for k in ("win", "tie", "loss")},
                )
                for c in candidates
            ],
            unit="share",
            max_value=1.0,
            caption="Stacked: win, tie, loss. Whiskers: the 95% Wilson interval of win-or-tie.",
        )
    )
    outcome_rows = [
        [
            c["name"],
            _interval(c["outcomes"]["win"]),
            _interval(c["outcomes"]["tie"]),
            _interval(c["outcomes"]["loss"]),
            _interval(c["outcomes"]["win_or_tie"]),
            c["outcomes"]["judge_disagreements"],
        ]
        for c in candidates
    ]
    sections.append(
        Table(
            ["candidate", "win", "tie", "loss", "win or tie", "judge disagreements"], outcome_rows, heading="Outcomes"
        )
    )
    check_rows = []
    for check in CHECKS:
        row: list[str | int | float | None] = [check, _interval(baseline["checks"][check]["pass"])]
        row += [_interval(c["checks"][check]["pass"]) for c in candidates]
        if any(isinstance(v, str) and v != "n/a" for v in row[1:]):
            check_rows.append(row)
    sections.append(
        Table(
            ["check", f"{baseline['name']} (baseline)", *names],
            check_rows,
            caption="Pass rate [95% Wilson interval] (passed/applicable).",
            heading="Checks",
        )
    )
    series = {f"{baseline['name']} (baseline)": baseline["latencies_ms"]} | {
        c["name"]: c["latencies_ms"] for c in candidates
    }
    sections.append(Distribution("Latency", {k: v for k, v in series.items() if v}, unit="ms"))
    sections.append(
        Bars(
            "Cost per 1,000 requests",
            [Bar(f"{baseline['name']} (baseline)", baseline["cost"]["per_1k_usd"] or 0.0)]
            + [Bar(c["name"], c["cost"]["per_1k_usd"] or 0.0) for c in candidates],
            unit="USD",
        )
    )
    ratio_rows = [
        [
            c["name"],
            _num(c["latency_ms"]["p50"], " ms"),
            _num(c["latency_ms"]["p95"], " ms"),
            _ratio(c["ratios"]["latency_p50"]),
            _ratio(c["ratios"]["latency_p95"]),
            _ratio(c["ratios"]["cost_per_1k"]),
        ]
        for c in candidates
    ]
    sections.append(
        Table(
            ["candidate", "latency p50", "latency p95", "p50 ratio", "p95 ratio", "cost ratio"],
            ratio_rows,
            caption="Ratios to the baseline, with 95% paired bootstrap intervals.",
            heading="Latency and cost",
        )
    )
    pairs = [
        Pair(
            f"{c['name']} · {w['item']} · {w['outcome'] or 'not compared'}"
            + (f" · failed: {', '.join(w['failed_checks'])}" if w["failed_checks"] else ""),
            f"{baseline['name']} (baseline)",
            w["baseline_answer"],
            c["name"],
            w["answer"],
        )
        for c in candidates
        for w in c["worst"]
    ]
    if pairs:
        sections.append(SideBySide("Worst regressions", pairs))
    warnings = [f"{c['name']}: {w}" for c in candidates for w in c["warnings"]]
    if warnings:
        sections.append(Text("\n".join(warnings), heading="Warnings"))
    if judge:
        sections.append(Text(f"Version {judge['prompt_version']}.\n\n{judge['prompt']}", heading="Judge prompt"))
    return Report(title=f"Eval: {', '.join(names)} against {baseline['name']}", subtitle=subtitle,
                  sections=sections, data=results)  # fmt: skip
