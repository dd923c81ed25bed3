"""The eval's report through the shared report module's API (CONTRACTS.md B): every number shown is one of
results.json's, the win/tie/loss bars stack to the whole, the worst regressions sit beside the baseline's
answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifeline.eval import EvalPlan, ResultsFile, items_from, run_eval, summarise
from lifeline.eval.report import build_report, write_outputs
from lifeline.testing import FaultWall
from tests.eval.conftest import ITEMS, eval_config


def test_the_report_shows_the_computed_figures(wall: FaultWall, tmp_path: Path) -> None:
    cfg = eval_config(wall)
    done = run_eval(cfg, EvalPlan(("jsonbreak", "notools"), "good", judge="judge", concurrency=1),
                    items_from(ITEMS, "t"), ResultsFile(tmp_path / "results.jsonl"))  # fmt: skip
    figures = summarise(done, cfg.eval)
    report = build_report(figures)
    assert report.data is figures
    headings = [getattr(s, "heading", None) for s in report.sections]
    for heading in ("Verdict", "Win / tie / loss against the baseline", "Checks", "Latency",
                    "Cost per 1,000 requests", "Latency and cost", "Worst regressions", "Judge prompt"):  # fmt: skip
        assert heading in headings
    bars = next(s for s in report.sections if getattr(s, "heading", None) == "Win / tie / loss against the baseline")
    for bar, candidate in zip(bars.bars, figures["candidates"], strict=True):
        assert bar.label == candidate["name"]
        assert sum(bar.parts.values()) == pytest.approx(1.0)
        assert (bar.low, bar.high) == (
            candidate["outcomes"]["win_or_tie"]["low"],
            candidate["outcomes"]["win_or_tie"]["high"],
        )
    side = next(s for s in report.sections if getattr(s, "heading", None) == "Worst regressions")
    broken = next(p for p in side.pairs if p.label.startswith("jsonbreak · object"))
    assert broken.left == '{"b": 2}' and broken.right == '{"b": 2'
    assert "failed: json" in broken.label
    verdicts = next(s for s in report.sections if getattr(s, "heading", None) == "Verdict")
    assert [row[0] for row in verdicts.rows] == ["jsonbreak", "notools"]
    # what blocks a switch and what to check first stay in their own columns, as results.json keeps them
    assert verdicts.columns == ["candidate", "verdict", "why not ready", "caveats"]
    for row, candidate in zip(verdicts.rows, figures["candidates"], strict=True):
        assert row[2] == ("; ".join(candidate["verdict"]["reasons"]) or "-")
        assert row[3] == ("; ".join(candidate["verdict"]["caveats"]) or "-")
    assert "pairwise-v1" in report.subtitle

    written = write_outputs(figures, tmp_path)
    assert set(written.values()) >= {tmp_path / "report.md", tmp_path / "report.html", tmp_path / "results.json"}
    markdown = (tmp_path / "report.md").read_text()
    wot = figures["candidates"][0]["outcomes"]["win_or_tie"]
    # Markdown escapes the brackets (they could open a link)
    assert f"{wot['rate']:.1%} \\[{wot['low']:.1%}, {wot['high']:.1%}\\] ({wot['k']}/{wot['n']})" in markdown
