"""The verdict rules, and docs/eval.md's worked example recomputed by the code (the doc's numbers are the
code's: this test fails when they drift apart)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lifeline.config.schema import EvalSettings
from lifeline.eval import EvalRun, items_from, summarise
from lifeline.eval.runner import Answer, Contender, Judgement, Lineup
from lifeline.eval.verdict import items_needed, verdict

DOC = Path(__file__).parents[2] / "docs" / "eval.md"
ITEMS = 200


def said(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


def worked_example() -> dict[str, Any]:
    """200 captured requests asking for JSON; two hosts of the same open model judged against them.
    host-a: 58 wins, 118 ties, 24 losses, every JSON answer whole, 1.8 times slower at p95.
    host-b: the same verdicts, but 3 of its 200 JSON answers do not parse."""
    records = [
        {
            "id": f"r{i:03}",
            "request": {"messages": [{"role": "user", "content": f"q{i}"}], "response_format": {"type": "json_object"}},
            "baseline": {"response": said('{"ok": true}'), "latency_ms": 400.0 + i, "cost_usd": 0.002},
        }
        for i in range(ITEMS)
    ]
    items = items_from(records, "worked example")
    answers, judgements = [], []
    for name in ("host-a", "host-b"):
        for i, item in enumerate(items):
            text = '{"ok": true' if name == "host-b" and i < 3 else '{"ok": true}'
            latency = (400.0 + i) * (1.8 if i >= 100 else 1.0)
            answers.append(Answer(item.id, "candidate", name, name, 200, said(text), None, latency, None, 0.0005))
            outcome = "win" if i % 100 < 29 else "loss" if i % 100 >= 88 else "tie"
            first, second = {"win": ("B", "A"), "loss": ("A", "B"), "tie": ("TIE", "TIE")}[outcome]
            for order, choice in (("baseline_first", first), ("candidate_first", second)):
                judgements.append(
                    Judgement(item.id, name, "captured", order, "judge", "pairwise-v1", choice, f"VERDICT: {choice}")
                )
    lineup = Lineup(
        (Contender("host-a", "eval:host-a", ("host-a",)), Contender("host-b", "eval:host-b", ("host-b",))),
        None,
        Contender("judge", "judge", ("gpt",)),
    )
    run = EvalRun(items, lineup, answers, judgements, spent_usd=0.0, max_cost=None)
    return summarise(run, EvalSettings())


def test_the_worked_example_gives_the_verdicts_the_doc_shows() -> None:
    figures = worked_example()
    a, b = figures["candidates"]
    assert (a["outcomes"]["wins"], a["outcomes"]["ties"], a["outcomes"]["losses"]) == (58, 118, 24)
    assert a["verdict"]["status"] == "ready_with_caveats"
    assert b["verdict"]["status"] == "not_ready"
    assert b["checks"]["json"]["failed"] == 3
    doc = DOC.read_text()
    example = doc[doc.index("### Worked example") :]
    wot = a["outcomes"]["win_or_tie"]
    shown = [
        f"{wot['k']} of {wot['n']}",
        f"[{wot['low']:.3f}, {wot['high']:.3f}]",
        f"{a['checks']['json']['breakage_high']:.1%}",
        f"{b['checks']['json']['breakage_high']:.1%}",
        f"{a['ratios']['latency_p95']['value']:.2f}",
        f"{a['ratios']['latency_p95']['low']:.2f}",
        f"{a['ratios']['latency_p95']['high']:.2f}",
        f"{a['ratios']['cost_per_1k']['value']:.2f}",
        str(items_needed(0.02)),
    ]
    missing = [s for s in shown if s not in example]
    assert not missing, f"docs/eval.md's worked example lacks {missing}; the code computes {shown}"
    for line in a["verdict"]["caveats"] + b["verdict"]["reasons"]:
        assert line in example, line


def test_ready_needs_non_inferiority_and_no_breakage() -> None:
    figures = worked_example()
    lenient = summarise_with(figures, max_latency_ratio=2.0)
    assert lenient["verdict"]["status"] == "ready", lenient["verdict"]


def summarise_with(figures: dict[str, Any], **settings: Any) -> dict[str, Any]:
    a = figures["candidates"][0]
    return {"verdict": verdict(a, EvalSettings(**settings, min_sample=1), stopped=None)}


def test_a_stricter_non_inferiority_bound_turns_the_verdict() -> None:
    a = worked_example()["candidates"][0]
    strict = verdict(a, EvalSettings(min_win_or_tie=0.85, max_latency_ratio=2.0), stopped=None)
    assert strict["status"] == "not_ready"
    assert re.search(
        r"non-inferiority not shown: won or tied 176 of 200 \(88\.0%\), 95% lower bound 0\.8\d\d", strict["reasons"][0]
    )


def test_a_cost_cap_stop_is_a_caveat() -> None:
    a = worked_example()["candidates"][0]
    stopped = verdict(a, EvalSettings(max_latency_ratio=2.0), stopped="cost_cap")
    assert stopped["status"] == "ready_with_caveats"
    assert "the cost cap stopped the run: not every item was sent" in stopped["caveats"]


@pytest.mark.parametrize(("bound", "needed"), [(0.02, 189), (0.05, 73)])
def test_items_needed_to_show_a_breakage_bound(bound: float, needed: int) -> None:
    assert items_needed(bound) == needed
