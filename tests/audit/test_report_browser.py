"""The audit's HTML report in a real headless Chromium: its heat map of the gap draws (one cell per topic and
candidate), nothing runs and nothing is fetched. A screenshot is saved under tmp_path."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lifeline.audit.report import summarise, write_outputs
from lifeline.audit.run import AuditPlan, run_audit
from lifeline.audit.suite import load_suite
from lifeline.eval.runner import ResultsFile
from lifeline.testing import FaultWall
from tests.audit.conftest import audit_config
from tests.fixtures.browser import BrowserPage


def test_the_html_report_shows_its_heat_map(wall: FaultWall, tmp_path: Path, browser_page: BrowserPage) -> None:
    cfg = audit_config(wall)
    suite = load_suite("speech-cn").subset(topics=["tiananmen-1989", "taiwan-status", "tibet"], per_topic=1)
    plan = AuditPlan(("censor", "steer", "open"), ("en", "zh"))
    with ThreadPoolExecutor(1) as pool:  # the browser's sync API holds an event loop in this thread
        run = pool.submit(run_audit, cfg, plan, suite, ResultsFile(tmp_path / "results.jsonl")).result()
    paths = write_outputs(summarise(run, cfg), tmp_path / "report")
    browser_page.open(paths["html"])
    browser_page.page.screenshot(path=str(tmp_path / "audit-report.png"), full_page=True)
    page = browser_page.page
    maps = page.evaluate(
        """() => [...document.querySelectorAll('svg')]
             .filter(svg => (svg.getAttribute('aria-label') || '').startsWith('Gap by topic'))
             .map(svg => { const box = svg.getBoundingClientRect();
                           const cells = [...svg.querySelectorAll('rect')].filter(r => {
                             const b = r.getBoundingClientRect(); return b.width > 0 && b.height > 0; });
                           return {label: svg.getAttribute('aria-label'), width: box.width, cells: cells.length}; })"""
    )
    assert [m["label"] for m in maps] == ["Gap by topic (en)", "Gap by topic (zh)"], maps
    for heat_map in maps:
        assert heat_map["width"] > 200 and heat_map["cells"] >= 9, heat_map  # 3 topics x 3 candidates
    assert "Example answers per class" in page.inner_text("body")
    assert page.evaluate("document.querySelectorAll('script, img, a, iframe').length") == 0
    assert browser_page.console_errors == [] and browser_page.errors == [] and browser_page.network == []
