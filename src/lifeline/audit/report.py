"""The audit's results (`summarise`: every figure computed by audit/metrics.py) and its report (`build_report`:
those figures as a `lifeline.reports.Report` — Markdown, one self-contained HTML page, results.json).

Nothing here types a number: each one shown is read from the results dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lifeline.audit.judge import AUDIT_JUDGE_INSTRUCTIONS, AUDIT_JUDGE_VERSION
from lifeline.audit.metrics import CLASSES, candidate_figures, examples
from lifeline.audit.run import AuditRun
from lifeline.config.schema import Config

if TYPE_CHECKING:
    from lifeline.reports import Report


def weights_of(config: Config, target: str) -> str:
    """The open weights a target serves: the catalogue's open_model of a target an `open_model` alias
    generated (`<model>@<host>`), else the target's configured `model`."""
    for alias in config.aliases.values():
        if alias.open_model and target.startswith(alias.open_model + "@") and target in alias.targets:
            return alias.open_model
    return str(getattr(config.targets[target], "model", target))


def summarise(run: AuditRun, config: Config) -> dict[str, Any]:
    """results.json: the run, and per candidate its gaps, class rates, safety and neutral figures."""
    suite, plan = run.suite, run.plan
    topics = list(suite.topics)
    candidates = []
    for contender in run.lineup.candidates:
        rows = [r for r in run.rows if r.candidate == contender.name]
        figures = candidate_figures(rows, topics, plan.languages)
        target = contender.targets[0]
        candidates.append(
            {"name": contender.name, "target": target, "weights": weights_of(config, target),
             "answers": sum(r.label is not None for r in rows), "missing": sum(r.label is None for r in rows),
             **figures}
        )  # fmt: skip
    hosts: dict[str, list[str]] = {}
    for candidate in candidates:
        hosts.setdefault(candidate["weights"], []).append(candidate["name"])
    judge = run.lineup.judge
    return {
        "run": {
            "suite": suite.name,
            "suite_version": suite.version,
            "languages": list(plan.languages),
            "topics": [t for t in topics if any(r.topic == t for r in run.rows)],
            "classifier": f"judge {judge.name} ({AUDIT_JUDGE_VERSION})" if judge else "offline",
            "judge_prompt": AUDIT_JUDGE_INSTRUCTIONS if judge else None,
            "judge_prompt_version": AUDIT_JUDGE_VERSION if judge else None,
            "started_at": run.started_at,
            "spent_usd": run.spent_usd,
            "max_cost": plan.max_cost,
            "stopped": run.stopped,
            "prompts": len(suite.prompts),
        },
        "candidates": candidates,
        "same_weights": {weights: names for weights, names in hosts.items() if len(names) > 1},
        "examples": examples(run.rows),
    }


def write_outputs(results: dict[str, Any], directory: Path) -> dict[str, Path]:
    """report.md, report.html and results.json in `directory`."""
    from lifeline.reports import write_report

    written: dict[str, Path] = write_report(build_report(results), directory, stem="report")
    return written


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.0%}" if value else "0%"


def gap_text(g: dict[str, Any]) -> str:
    """A gap as the report writes it: +45% [+12%, +70%] (9/16 vs 2/16)."""
    if g["gap"] is None:
        return "n/a"
    s, c = g["sensitive"], g["control"]
    return f"{_pct(g['gap'])} [{_pct(g['low'])}, {_pct(g['high'])}] ({s['k']}/{s['n']} vs {c['k']}/{c['n']})"


def _rate(p: dict[str, Any]) -> str:
    if p.get("rate") is None:
        return "n/a"
    return f"{p['rate']:.0%} [{p['low']:.0%}, {p['high']:.0%}] ({p['k']}/{p['n']})"


def build_report(results: dict[str, Any]) -> Report:
    from lifeline.reports import Bar, Bars, HeatMap, Report, SideBySide, Table, Text

    run, candidates = results["run"], results["candidates"]
    languages, topics = run["languages"], run["topics"]
    names = [c["name"] for c in candidates]
    sections: list[Any] = [
        Text(
            f"Suite {run['suite']} (version {run['suite_version']}), {run['prompts']} prompts in "
            f"{', '.join(languages)}; answers classified by the {run['classifier']} classifier. The censorship gap "
            "is the share of sensitive prompts refused, evaded or steered minus the same share on their mirrored "
            "controls, with Newcombe's 95% interval. Spent ${:.4f}.".format(run["spent_usd"])
            + (" Stopped at the cost cap: rerun with the same --out to continue." if run["stopped"] else ""),
        ),
        Table(
            ["candidate", "target", *[f"gap {lang}" for lang in languages], "answers", "missing"],
            [
                [
                    c["name"],
                    c["target"],
                    *[gap_text(c["gaps"][lang]["overall"]) for lang in languages],
                    c["answers"],
                    c["missing"],
                ]
                for c in candidates
            ],
            heading="Censorship gap by candidate",
        ),
    ]
    audited = [t for t in topics if any(t in c["gaps"][lang]["topics"] for c in candidates for lang in languages)]
    for lang in languages:
        values = [[_value(c["gaps"][lang]["topics"].get(t)) for c in candidates] for t in audited]
        sections.append(
            HeatMap(f"Gap by topic ({lang})", audited, names, values, unit="", low=-1.0, high=1.0,
                    caption="Censorship gap per topic and candidate, from -1 to +1; an empty cell has no data.")
        )  # fmt: skip
        bars = [
            Bar(f"{c['name']} · {t}", g["gap"], g["low"], g["high"])
            for c in candidates
            for t in audited
            if (g := c["gaps"][lang]["topics"].get(t)) is not None and g["gap"] is not None
        ]
        if bars:
            sections.append(
                Bars(f"Gap per topic with 95% intervals ({lang})", bars, max_value=1.0,
                     caption="Bars start at 0: a negative gap (more refusals on the controls) is drawn at 0; "
                             "its number is written beside it.")
            )  # fmt: skip
        sections.append(
            Table(
                ["topic", *names],
                [[t, *[gap_text(g) if (g := c["gaps"][lang]["topics"].get(t)) else "n/a" for c in candidates]]
                 for t in audited],
                heading=f"Gap per topic ({lang})",
            )
        )  # fmt: skip
    if results["same_weights"]:
        rows = []
        for weights, hosted in results["same_weights"].items():
            by_name = {c["name"]: c for c in candidates}
            rows += [[weights, n, *[gap_text(by_name[n]["gaps"][lang]["overall"]) for lang in languages]]
                     for n in hosted]  # fmt: skip
        sections.append(
            Table(["weights", "host (target)", *[f"gap {lang}" for lang in languages]], rows,
                  heading="The same weights at different hosts")
        )  # fmt: skip
    sections.append(
        Table(
            ["candidate", *[f"refused {lang}" for lang in languages]],
            [[c["name"], *[_rate(c["safety"][lang]) for lang in languages]] for c in candidates],
            heading="Safety controls (reported apart: every responsible model should refuse these)",
        )
    )
    sections.append(
        Table(
            ["candidate", "language", *CLASSES],
            [[c["name"], lang, *[_rate(c["neutral"][lang][k]) for k in CLASSES]] for c in candidates
             for lang in languages],
            heading="Neutral controls: rate of each class",
        )
    )  # fmt: skip
    rate_rows = [
        [c["name"], topic, lang, kind, *[_rate(rates[k]) for k in CLASSES]]
        for c in candidates
        for topic, by_language in c["rates"].items()
        for lang, by_kind in by_language.items()
        for kind, rates in by_kind.items()
    ]
    sections.append(Table(["candidate", "topic", "lang", "kind", *CLASSES], rate_rows, heading="Class rates"))
    pairs = [
        _example_pair(results["examples"], left, right)
        for left, right in zip(CLASSES[0::2], CLASSES[1::2], strict=True)
    ]
    pairs = [p for p in pairs if p is not None]
    if pairs:
        sections.append(SideBySide("Example answers per class", pairs))
    if run["judge_prompt"]:
        sections.append(Text(run["judge_prompt"], heading=f"The judge's prompt ({run['judge_prompt_version']})"))
    title = f"Speech audit: {', '.join(names)} on {run['suite']}"
    return Report(title, subtitle=run["started_at"], sections=sections, data=results)


def _example_pair(examples: dict[str, list[dict[str, Any]]], left: str, right: str) -> Any:
    """A Pair of one answer of each class side by side (None when neither class has one)."""
    from lifeline.reports import Pair

    lefts, rights = examples.get(left) or [], examples.get(right) or []
    a, b = (lefts[0] if lefts else None), (rights[0] if rights else None)
    if a is None and b is None:
        return None

    def title(cls: str, x: dict[str, Any] | None) -> str:
        return f"{cls}: {x['candidate']}, {x['prompt']} ({x['language']})" if x else f"{cls}: none in this audit"

    return Pair(f"{left} · {right}", title(left, a), a["text"] if a else "", title(right, b), b["text"] if b else "")


def _value(g: dict[str, Any] | None) -> float | None:
    return None if g is None else g["gap"]
