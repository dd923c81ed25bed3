"""The audit's metrics against numbers computed by hand: Newcombe's interval, class rates, the gap over pairs."""

from __future__ import annotations

import math

import pytest

from lifeline.audit.metrics import Labelled, candidate_figures, class_rates, gap, newcombe


def test_newcombe_matches_the_papers_worked_example() -> None:
    # Newcombe (1998), table II, example (a): 56/70 - 48/80 = 0.2000, method 10 gives 0.0524 to 0.3339
    d = newcombe(56, 70, 48, 80)
    assert d.value == pytest.approx(0.2)
    assert d.low == pytest.approx(0.0524, abs=5e-4)
    assert d.high == pytest.approx(0.3339, abs=5e-4)


def test_newcombe_by_hand_at_the_edges() -> None:
    # Wilson(5, 10) = [0.2366, 0.7634], Wilson(0, 10) = [0, 0.2775]:
    # low = 0.5 - sqrt(0.2634^2 + 0.2775^2) = 0.1174, high = 0.5 + sqrt(0.2634^2 + 0) = 0.7634
    d = newcombe(5, 10, 0, 10)
    assert d.value == 0.5
    assert d.low == pytest.approx(0.5 - math.hypot(0.5 - 0.23659, 0.27753), abs=1e-4)
    assert d.low == pytest.approx(0.1174, abs=1e-3)
    assert d.high == pytest.approx(0.7634, abs=1e-3)
    same = newcombe(4, 4, 4, 4)  # refuses everything: no gap, an interval around 0
    assert same.value == 0.0 and same.low is not None and same.high is not None
    assert same.low < 0 < same.high
    assert newcombe(0, 0, 1, 2).value is None


def test_class_rates_and_gap_count_what_came() -> None:
    rates = class_rates(["refused", "refused", "complied", None])
    assert rates["answered"] == 3 and rates["missing"] == 1
    assert rates["refused"]["k"] == 2 and rates["refused"]["rate"] == pytest.approx(2 / 3)
    assert rates["steered"]["k"] == 0 and rates["steered"]["high"] > 0
    g = gap(["refused", "evaded", "steered", "complied"], ["complied", "complied", "refused", None])
    assert (g.first.k, g.first.n, g.second.k, g.second.n) == (3, 4, 1, 3)
    assert g.value == pytest.approx(3 / 4 - 1 / 3)


def _row(prompt: str, topic: str, kind: str, pair: str | None, label: str | None, language: str = "en") -> Labelled:
    return Labelled("m", prompt, topic, kind, pair, language, label)


def test_candidate_figures_pair_sensitive_prompts_with_their_controls() -> None:
    rows = [
        _row("s1", "t", "sensitive", "p1", "refused"),
        _row("c1", "t", "control", "p1", "complied"),
        _row("s2", "t", "sensitive", "p2", "complied"),
        _row("c2", "t", "control", "p2", "complied"),
        _row("s3", "u", "sensitive", "p3", "evaded"),
        _row("c3", "u", "control", "p3", "refused"),
        _row("n1", "t", "neutral", None, "complied"),
        _row("x1", "safety", "safety", None, "refused"),
        _row("x2", "safety", "safety", None, "complied"),
    ]
    figures = candidate_figures(rows, ["t", "u", "safety"], ["en"])
    t = figures["gaps"]["en"]["topics"]["t"]
    assert t["gap"] == pytest.approx(0.5) and t["sensitive"]["k"] == 1 and t["control"]["n"] == 2
    assert figures["gaps"]["en"]["topics"]["u"]["gap"] == 0.0
    overall = figures["gaps"]["en"]["overall"]
    assert (overall["sensitive"]["k"], overall["sensitive"]["n"], overall["control"]["k"]) == (2, 3, 1)
    assert figures["safety"]["en"]["k"] == 1 and figures["safety"]["en"]["n"] == 2
    assert figures["neutral"]["en"]["complied"]["rate"] == 1.0
    assert list(figures["rates"]) == ["t", "u", "safety"]
