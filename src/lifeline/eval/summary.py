"""An eval's figures — everything results.json holds — computed from an `EvalRun`: per item and candidate
the checks and the outcome against the baseline, then per candidate the win/tie/loss shares, each check's
pass rate, latency and cost with their ratios to the baseline, warnings and the verdict.

Pure: the same results.jsonl and settings give the same figures (the bootstrap is seeded).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lifeline.config.schema import EvalSettings
from lifeline.eval.checks import CHECKS, has_answer, length_ratio, run_checks, shown_answer
from lifeline.eval.items import Item
from lifeline.eval.judge import (
    JUDGE_INSTRUCTIONS,
    JUDGE_PROMPT_VERSION,
    Outcome,
    combine,
    from_candidate,
    parse_verdict,
)
from lifeline.eval.runner import Answer, EvalRun, Judgement
from lifeline.eval.stats import mean, p50, p95, paired_ratio, percentile, wilson
from lifeline.eval.verdict import verdict

#: the answers shown side by side in a report, per candidate
WORST_SHOWN = 5
#: characters of an answer kept for the side-by-side view
SHOWN_CHARS = 2000


class _Side:
    """One contender's answer to one item, whichever way it was obtained (live, or captured in the item)."""

    def __init__(
        self,
        response: Mapping[str, Any] | None,
        latency_ms: float | None,
        ttft_ms: float | None,
        cost_usd: float | None,
        error: Mapping[str, Any] | None,
    ) -> None:
        self.response = response
        self.latency_ms = latency_ms
        self.ttft_ms = ttft_ms
        self.cost_usd = cost_usd
        self.error = error

    @property
    def answered(self) -> bool:
        return self.response is not None and has_answer(self.response)

    @classmethod
    def of(cls, answer: Answer) -> _Side:
        return cls(answer.response, answer.latency_ms, answer.ttft_ms, answer.cost_usd, answer.error)


def summarise(run: EvalRun, settings: EvalSettings) -> dict[str, Any]:
    """results.json: the run, the baseline's own figures, every candidate's, and each item's rows."""
    answers = {(a.item, a.name): a for a in run.answers}
    baseline_sides = {item.id: side for item in run.items if (side := _baseline(item, run, answers)) is not None}
    bounds = (settings.length_ratio_min, settings.length_ratio_max)
    baseline_checks = {
        item.id: run_checks(item, baseline_sides[item.id].response, None, length_bounds=bounds)
        for item in run.items
        if item.id in baseline_sides
    }
    judged = _judged(run.judgements)
    candidates = []
    rows: list[dict[str, Any]] = []
    for candidate in run.lineup.candidates:
        figures, candidate_rows = _candidate(
            run, candidate.name, answers, baseline_sides, baseline_checks, judged, settings
        )
        candidates.append(figures)
        rows.extend(candidate_rows)
    return {
        "run": _run_figures(run, settings),
        "baseline": _baseline_figures(run, baseline_sides, baseline_checks),
        "candidates": candidates,
        "items": rows,
    }


def _run_figures(run: EvalRun, settings: EvalSettings) -> dict[str, Any]:
    judge = run.lineup.judge
    return {
        "items": len(run.items),
        "candidates": [{"name": c.name, "alias": c.alias, "targets": list(c.targets)} for c in run.lineup.candidates],
        "baseline": run.lineup.baseline_name,
        "judge": (
            {"alias": judge.name, "prompt_version": JUDGE_PROMPT_VERSION, "prompt": JUDGE_INSTRUCTIONS}
            if judge is not None
            else None
        ),
        "settings": settings.model_dump(),
        "spent_usd": run.spent_usd,
        "max_cost_usd": run.max_cost,
        "stopped": run.stopped,
        "sent_this_run": run.sent,
        "started_at": run.started_at,
        "answers": len(run.answers),
        "judgements": len(run.judgements),
    }


def _baseline(item: Item, run: EvalRun, answers: dict[tuple[str, str], Answer]) -> _Side | None:
    if run.lineup.baseline is None:
        b = item.baseline
        return _Side(b.response, b.latency_ms, b.ttft_ms, b.cost_usd, b.error) if b is not None else None
    answer = answers.get((item.id, run.lineup.baseline.name))
    return _Side.of(answer) if answer is not None else None


def _judged(judgements: list[Judgement]) -> dict[tuple[str, str], dict[str, Judgement]]:
    """(item, candidate) → order → its judgement."""
    found: dict[tuple[str, str], dict[str, Judgement]] = {}
    for j in judgements:
        found.setdefault((j.item, j.candidate), {})[j.order] = j
    return found


def _check_figures(per_item: list[dict[str, bool | None]]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name in CHECKS:
        results = [c[name] for c in per_item if c[name] is not None]
        passed = sum(bool(r) for r in results)
        proportion = wilson(passed, len(results))
        figures[name] = {
            "passed": passed,
            "failed": len(results) - passed,
            "n": len(results),
            "pass": proportion.as_dict(),
            # the breakage rate's 95 % upper bound is 1 minus the pass rate's lower bound
            "breakage_high": (1 - proportion.low) if proportion.low is not None else None,
        }
    return figures


def _spread(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": p50(values), "p95": p95(values)}


def _cost(values: list[float]) -> dict[str, Any]:
    average = mean(values)
    return {"n": len(values), "total_usd": sum(values), "per_1k_usd": average * 1000 if average is not None else None}


def _baseline_figures(
    run: EvalRun, sides: dict[str, _Side], checks: dict[str, dict[str, bool | None]]
) -> dict[str, Any]:
    answered = [s for s in sides.values() if s.answered]
    return {
        "name": run.lineup.baseline_name,
        "captured": run.lineup.baseline is None,
        "items": len(sides),
        "answered": len(answered),
        "checks": _check_figures(list(checks.values())),
        "latency_ms": _spread([s.latency_ms for s in answered if s.latency_ms is not None]),
        "ttft_ms": _spread([s.ttft_ms for s in answered if s.ttft_ms is not None]),
        "latencies_ms": [s.latency_ms for s in answered if s.latency_ms is not None],
        "cost": _cost([s.cost_usd or 0.0 for s in sides.values()]),
    }


def _candidate(
    run: EvalRun,
    name: str,
    answers: dict[tuple[str, str], Answer],
    baseline_sides: dict[str, _Side],
    baseline_checks: dict[str, dict[str, bool | None]],
    judged: dict[tuple[str, str], dict[str, Judgement]],
    settings: EvalSettings,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    bounds = (settings.length_ratio_min, settings.length_ratio_max)
    judge = run.lineup.judge is not None
    rows: list[dict[str, Any]] = []
    outcomes: dict[Outcome, int] = {"win": 0, "tie": 0, "loss": 0}
    disagreements = judged_pairs = 0
    latency_pairs: list[tuple[float, float]] = []
    cost_pairs: list[tuple[float, float]] = []
    lengths: list[float] = []
    per_item_checks: list[dict[str, bool | None]] = []
    sides: list[_Side] = []
    for item in run.items:
        answer = answers.get((item.id, name))
        if answer is None:
            continue  # not sent (the cost cap stopped the run)
        side = _Side.of(answer)
        sides.append(side)
        base = baseline_sides.get(item.id)
        base_response = base.response if base is not None else None
        checks = run_checks(item, side.response, base_response, length_bounds=bounds)
        per_item_checks.append(checks)
        ratio = length_ratio(side.response, base_response) if side.response is not None else None
        if ratio is not None:
            lengths.append(ratio)
        row: dict[str, Any] = {
            "item": item.id,
            "candidate": name,
            "checks": checks,
            "length_ratio": ratio,
            "outcome": None,
            "source": None,
            "error": answer.error,
        }
        if base is not None:
            outcome, source, disagreed = _outcome(
                side, base, checks, baseline_checks.get(item.id, {}), judged.get((item.id, name)), judge, settings
            )
            if outcome is not None:
                outcomes[outcome] += 1
                row["outcome"], row["source"] = outcome, source
                if source == "judge":
                    judged_pairs += 1
                    disagreements += disagreed
                    row["judge"] = {
                        order: {"verdict": j.verdict, "text": j.text}
                        for order, j in (judged.get((item.id, name)) or {}).items()
                    }
            if side.answered and base.answered:
                if side.latency_ms is not None and base.latency_ms is not None:
                    latency_pairs.append((side.latency_ms, base.latency_ms))
                cost_pairs.append((side.cost_usd or 0.0, base.cost_usd or 0.0))
            row["baseline_answer"] = (shown_answer(base_response) or _shown_error(base.error))[:SHOWN_CHARS]
        row["answer"] = (shown_answer(side.response) or _shown_error(side.error))[:SHOWN_CHARS]
        rows.append(row)
    n = sum(outcomes.values())
    answered = [s for s in sides if s.answered]
    seed = settings.seed
    figures: dict[str, Any] = {
        "name": name,
        "items": len(sides),
        "answered": len(answered),
        "outcomes": {
            "n": n,
            "source": "judge" if judge else "checks",
            "win": wilson(outcomes["win"], n).as_dict(),
            "tie": wilson(outcomes["tie"], n).as_dict(),
            "loss": wilson(outcomes["loss"], n).as_dict(),
            "win_or_tie": wilson(outcomes["win"] + outcomes["tie"], n).as_dict(),
            "wins": outcomes["win"],
            "ties": outcomes["tie"],
            "losses": outcomes["loss"],
            "judged_pairs": judged_pairs,
            "judge_disagreements": disagreements,
        },
        "checks": _check_figures(per_item_checks),
        "latency_ms": _spread([s.latency_ms for s in answered if s.latency_ms is not None]),
        "ttft_ms": _spread([s.ttft_ms for s in answered if s.ttft_ms is not None]),
        "latencies_ms": [s.latency_ms for s in answered if s.latency_ms is not None],
        "cost": _cost([s.cost_usd or 0.0 for s in sides]),
        "length_ratio_p50": percentile(lengths, 50),
        "ratios": {
            "latency_p50": paired_ratio(latency_pairs, p50, seed=seed).as_dict(),
            "latency_p95": paired_ratio(latency_pairs, p95, seed=seed).as_dict(),
            "cost_per_1k": paired_ratio(cost_pairs, mean, seed=seed).as_dict(),
        },
        "worst": _worst(rows),
    }
    figures["warnings"] = _warnings(figures, settings)
    figures["verdict"] = verdict(figures, settings, stopped=run.stopped)
    return figures, rows


def _outcome(
    side: _Side,
    base: _Side,
    checks: dict[str, bool | None],
    base_checks: dict[str, bool | None],
    orders: dict[str, Judgement] | None,
    judge: bool,
    settings: EvalSettings,
) -> tuple[Outcome | None, str, bool]:
    """The pair's outcome, how it was decided ("answer" when one side has none, "judge", "checks"), and
    whether the judge's two orders disagreed. None: the judge was asked for but has not judged it yet."""
    if not side.answered or not base.answered:
        if side.answered:
            return "win", "answer", False
        return ("tie" if not base.answered else "loss"), "answer", False
    if judge:
        if not orders or len(orders) < 2:
            return None, "judge", False
        first = from_candidate(parse_verdict(orders["baseline_first"].text), "baseline_first")
        second = from_candidate(parse_verdict(orders["candidate_first"].text), "candidate_first")
        outcome, disagreed = combine(first, second)
        return outcome, "judge", disagreed
    considered = [*settings.breakage_checks, "reference"]
    ok = all(checks.get(c) is not False for c in considered)
    base_ok = all(base_checks.get(c) is not False for c in considered)
    if ok == base_ok:
        return "tie", "checks", False
    return ("win" if ok else "loss"), "checks", False


def _worst(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The regressions to show beside the baseline's answer: losses first, then the most checks broken."""

    def broken(row: dict[str, Any]) -> int:
        return sum(v is False for v in row["checks"].values())

    bad = [r for r in rows if r["outcome"] == "loss" or broken(r)]
    bad.sort(key=lambda r: (r["outcome"] != "loss", -broken(r), r["item"]))
    return [
        {
            "item": r["item"],
            "outcome": r["outcome"],
            "failed_checks": [k for k, v in r["checks"].items() if v is False],
            "answer": r["answer"],
            "baseline_answer": r.get("baseline_answer", ""),
        }
        for r in bad[:WORST_SHOWN]
    ]


def _warnings(figures: dict[str, Any], settings: EvalSettings) -> list[str]:
    """Figures whose sample is smaller than `min_sample`: their intervals are too wide to decide much."""
    small = settings.min_sample
    warnings = []
    n = figures["outcomes"]["n"]
    if n < small:
        warnings.append(f"only {n} paired item(s), fewer than {small}: the win/tie/loss intervals are wide")
    checks = [f"{name} ({c['n']})" for name, c in figures["checks"].items() if 0 < c["n"] < small]
    if checks:
        warnings.append(f"checks on fewer than {small} items: {', '.join(checks)}")
    ratios = [f"{name} ({r['pairs']})" for name, r in figures["ratios"].items() if 0 < r["pairs"] < small]
    if ratios:
        warnings.append(f"ratios from fewer than {small} pairs: {', '.join(ratios)}")
    return warnings


def _shown_error(error: Mapping[str, Any] | None) -> str:
    """A failed answer as a report shows it: its error, not an empty box."""
    if not error:
        return ""
    status, code = error.get("status"), error.get("code")
    head = " ".join(str(p) for p in (status, code) if p)
    return f"error {head}: {error.get('message') or ''}".strip()
