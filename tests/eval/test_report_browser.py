"""The eval's HTML report in a real headless Chromium: its charts draw (win/tie/loss with interval whiskers,
latency, cost), the worst regressions sit beside the baseline's answer, and the page runs nothing and asks the
network for nothing. The screenshot is saved beside the report (an artefact to look at)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lifeline.eval import EvalPlan, ResultsFile, items_from, run_eval, summarise
from lifeline.eval.report import write_outputs
from lifeline.testing import FaultWall
from tests.eval.conftest import ITEMS, eval_config
from tests.fixtures.browser import BrowserPage
from tests.reports.test_browser import CHART_BOXES


@pytest.fixture(scope="module")
def eval_report(wall_server: FaultWall, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A small real eval, run before the module's browser starts (Playwright holds an event loop)."""
    wall_server.reset()
    out = tmp_path_factory.mktemp("eval-report")
    cfg = eval_config(wall_server)
    done = run_eval(cfg, EvalPlan(("jsonbreak", "notools"), "good", judge="judge", concurrency=1),
                    items_from(ITEMS, "t"), ResultsFile(out / "results.jsonl"))  # fmt: skip
    figures = summarise(done, cfg.eval)
    written = write_outputs(figures, out)
    return written["html"], figures


def test_the_eval_report_renders_its_charts_in_chromium(
    eval_report: tuple[Path, dict[str, Any]], browser_page: BrowserPage
) -> None:
    html, figures = eval_report
    browser_page.open(html)
    browser_page.page.screenshot(path=str(html.with_suffix(".png")), full_page=True)
    charts: list[dict[str, Any]] = browser_page.page.evaluate(CHART_BOXES)
    labels = [c["label"] for c in charts]
    assert "Win / tie / loss against the baseline" in labels
    assert "Latency" in labels
    for chart in charts:
        assert chart["width"] > 200 and chart["height"] > 40 and chart["marks"] > 0, chart
    text = browser_page.page.inner_text("body")
    for candidate in figures["candidates"]:
        assert candidate["name"] in text and candidate["verdict"]["status"].replace("_", " ") in text
    assert "Worst regressions" in text
    assert browser_page.console_errors == [] and browser_page.errors == [] and browser_page.network == []
