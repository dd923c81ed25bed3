"""The report pages in a real headless Chromium: the charts draw, nothing runs, nothing is fetched, and the
page fits a phone in dark mode. Each test saves a screenshot under its tmp_path (an artefact to look at)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lifeline.drill.report import write_reports
from lifeline.reports import write_report
from tests.drill.test_report import sample
from tests.fixtures.browser import BrowserPage
from tests.reports.samples import HOSTILE, every_section

#: a chart's boxes, and its marks (bars, boxes, points, cells) that have a size on the page
CHART_BOXES = """
() => [...document.querySelectorAll('svg')].map(svg => {
  const box = svg.getBoundingClientRect();
  const marks = [...svg.querySelectorAll('rect, circle')].filter(m => {
    const b = m.getBoundingClientRect(); return b.width > 0 && b.height > 0; });
  return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height, marks: marks.length};
})
"""


def _charts(seen: BrowserPage) -> list[dict[str, Any]]:
    charts: list[dict[str, Any]] = seen.page.evaluate(CHART_BOXES)
    return charts


def test_every_section_renders_in_chromium(browser_page: BrowserPage, tmp_path: Path) -> None:
    paths = write_report(every_section(), tmp_path / "report")
    browser_page.open(paths["html"])
    browser_page.page.screenshot(path=str(tmp_path / "every-section.png"), full_page=True)

    charts = _charts(browser_page)
    assert [c["label"] for c in charts] == ["Win rate", "Outcomes " + HOSTILE, "Latency", "Refusal rate " + HOSTILE]
    for chart in charts:
        assert chart["width"] > 200 and chart["height"] > 40, chart
        assert chart["marks"] > 0, chart
    # the injected markup stayed text: no script ran (it would retitle the page), no element was made of it
    page = browser_page.page
    assert page.title() == "Every section " + HOSTILE
    assert page.evaluate("document.querySelectorAll('script, img, a, iframe').length") == 0
    assert HOSTILE in page.inner_text("h1")
    assert browser_page.console_errors == [] and browser_page.errors == []
    assert browser_page.network == []
    # a long answer scrolls inside its box instead of stretching the page
    scrolls = page.evaluate("[...document.querySelectorAll('.side pre')].some(p => p.scrollHeight > p.clientHeight)")
    assert scrolls


def test_the_report_fits_a_phone_in_dark_mode(phone_page: BrowserPage, tmp_path: Path) -> None:
    paths = write_report(every_section(), tmp_path / "report")
    phone_page.open(paths["html"])
    phone_page.page.screenshot(path=str(tmp_path / "phone-dark.png"), full_page=True)
    page = phone_page.page
    # no sideways scrolling of the page itself: wide charts and tables scroll in their own boxes
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    text = page.evaluate("getComputedStyle(document.body).color")
    assert background == "rgb(20, 24, 31)" and text == "rgb(230, 233, 239)"
    # the two answers of a pair stack on a narrow screen
    left, right = page.evaluate(
        "[...document.querySelector('.sides').children].map(s => s.getBoundingClientRect().top)"
    )
    assert right > left
    assert phone_page.console_errors == [] and phone_page.network == []


def test_the_drill_report_renders_in_chromium(browser_page: BrowserPage, tmp_path: Path) -> None:
    written = write_reports(sample(), tmp_path / "drill")
    browser_page.open(written.html)
    browser_page.page.screenshot(path=str(tmp_path / "drill.png"), full_page=True)
    charts = _charts(browser_page)
    assert [c["label"] for c in charts] == ["Requests by outcome", "Latency by target", "Latency over the drill"]
    for chart in charts:
        assert chart["width"] > 200 and chart["height"] > 40 and chart["marks"] > 0, chart
    assert browser_page.page.title().startswith("Lifeline drill: 80.0 % served")
    assert browser_page.console_errors == [] and browser_page.errors == [] and browser_page.network == []
