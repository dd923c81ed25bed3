"""The verdict on one candidate — ready, ready with caveats, not ready — from its figures and the eval's
thresholds (`eval:` in the config, or the command's flags). The rules, in docs/eval.md "Verdict rules":

Not ready, for each of these reasons:
- non-inferiority is not shown: the 95 % lower bound of the share of items won or tied is below
  `min_win_or_tie`;
- a breakage check (`breakage_checks`) may fail more often than `max_breakage`: its failure rate's 95 %
  upper bound is above it;
- no item was answered at all.
Ready with caveats, listing each: a breakage check failed on some items (within the bound); another check
(length, reference) failed on some; p95 latency or cost per 1k requests above `max_latency_ratio` or
`max_cost_ratio` times the baseline's; the judge's two orders disagreed on more than
`max_judge_disagreement` of the pairs; the cost cap stopped the run; a warning about a small sample.
Ready otherwise.
"""

from __future__ import annotations

from typing import Any

from lifeline.config.schema import EvalSettings
from lifeline.eval.stats import wilson

READY = "ready"
CAVEATS = "ready_with_caveats"
NOT_READY = "not_ready"


def verdict(figures: dict[str, Any], settings: EvalSettings, *, stopped: str | None = None) -> dict[str, Any]:
    reasons: list[str] = []
    caveats: list[str] = []
    outcomes = figures["outcomes"]
    win_or_tie = outcomes["win_or_tie"]
    if figures["answered"] == 0:
        reasons.append("no item was answered")
    if win_or_tie["n"] == 0:
        reasons.append("no item could be compared with the baseline")
    elif win_or_tie["low"] < settings.min_win_or_tie:
        reasons.append(
            f"non-inferiority not shown: won or tied {win_or_tie['k']} of {win_or_tie['n']} "
            f"({win_or_tie['rate']:.1%}), 95% lower bound {win_or_tie['low']:.3f} < {settings.min_win_or_tie:g}"
        )
    unproven: list[str] = []
    for name, check in figures["checks"].items():
        if check["n"] == 0:
            continue
        breakage = f"{check['failed']} of {check['n']} failed"
        if name in settings.breakage_checks:
            if check["breakage_high"] > settings.max_breakage and not check["failed"]:
                unproven.append(f"{name} ({check['n']})")
            elif check["breakage_high"] > settings.max_breakage:
                reasons.append(
                    f"check {name}: breakage could be {check['breakage_high']:.1%} at the 95% upper bound "
                    f"({breakage}); at most {settings.max_breakage:.1%} allowed"
                )
            elif check["failed"]:
                caveats.append(f"check {name}: {breakage} (upper bound {check['breakage_high']:.1%})")
        elif check["failed"]:
            caveats.append(f"check {name}: {breakage}")
    if unproven:
        reasons.append(
            f"too few items to show breakage at most {settings.max_breakage:.1%}: no failure, but "
            f"{', '.join(unproven)} item(s) checked, and {items_needed(settings.max_breakage)} without a failure "
            "are needed for the 95% upper bound to reach it"
        )
    ratios = figures["ratios"]
    latency = ratios["latency_p95"]["value"]
    if latency is not None and latency > settings.max_latency_ratio:
        caveats.append(f"p95 latency {latency:.2f} times the baseline's (limit {settings.max_latency_ratio:g})")
    cost = ratios["cost_per_1k"]["value"]
    if cost is not None and cost > settings.max_cost_ratio:
        caveats.append(f"cost per 1k requests {cost:.2f} times the baseline's (limit {settings.max_cost_ratio:g})")
    judged = outcomes["judged_pairs"]
    if judged and outcomes["judge_disagreements"] / judged > settings.max_judge_disagreement:
        caveats.append(
            f"the judge's two orders disagreed on {outcomes['judge_disagreements']} of {judged} pairs "
            "(counted as ties): an order-biased judge"
        )
    if stopped == "cost_cap":
        caveats.append("the cost cap stopped the run: not every item was sent")
    caveats.extend(figures.get("warnings", ()))
    status = NOT_READY if reasons else CAVEATS if caveats else READY
    return {"status": status, "reasons": reasons, "caveats": caveats}


def items_needed(max_breakage: float) -> int:
    """The fewest items, all passing, whose breakage upper bound is at most `max_breakage` (189 for 2 %)."""
    if max_breakage <= 0:
        return 0
    n = 1
    while 1 - (wilson(n, n).low or 0.0) > max_breakage:
        n += 1
    return n
