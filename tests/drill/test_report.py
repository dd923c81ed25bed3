"""The drill's reports: numbers from the results, Markdown, an HTML page that needs nothing from the
network, and results.json that holds every figure again."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson

from lifeline.drill import DrillPlan, PassResult, RequestResult, summarise
from lifeline.drill.report import html_page, markdown, write_reports
from lifeline.drill.runner import Continuation, DrillResult
from lifeline.drill.summary import percentile
from lifeline.providers.faults import Fault


def answered(i: int, target: str, latency: float, **extra: Any) -> RequestResult:
    fields: dict[str, Any] = {"attempts": 1, **extra}
    return RequestResult(
        index=i,
        started=i * 0.1,
        latency=latency,
        outcome="answered",
        status=200,
        target=target,
        ttft=latency / 4,
        finish_reason="stop",
        done=True,
        completion_tokens=10,
        **fields,
    )


def failed(i: int, code: str, status: int | None, latency: float = 0.5) -> RequestResult:
    return RequestResult(
        index=i, started=i * 0.1, latency=latency, outcome="error", status=status, error_code=code, error_message="no"
    )


def sample() -> DrillResult:
    seam = [Continuation("primary", "backup", 40, "unavailable")]
    results = [
        answered(0, "primary", 0.9, continued=seam, attempts=2),
        *(answered(i, "backup", 0.1 * i) for i in range(1, 8)),
        failed(8, "all_targets_failed", 502),
        RequestResult(
            index=9,
            started=0.9,
            latency=0.3,
            outcome="incomplete",
            status=200,
            target="backup",
            error_message="the stream ended without finish_reason and without an error",
        ),
    ]
    plan = DrillPlan(
        alias="chat",
        cut=("primary",),
        fault=Fault("stream_cut", 3),
        requests=10,
        concurrency=2,
        config_file="drill|config.yaml",
    )
    circuits = [
        {
            "target": "primary",
            "state": "open",
            "override": "cut:stream_cut",
            "consecutive_failures": 5,
            "last_error": "unavailable",
            "times_opened": 1,
        }
    ]
    started = dt.datetime(2026, 11, 5, 14, 30, tzinfo=dt.UTC)
    return DrillResult(plan, ["primary", "backup"], started, PassResult("drill", results, 2.5), None, circuits)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert [percentile(values, p) for p in (50, 90, 99, 100)] == [50.0, 90.0, 99.0, 100.0]
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_the_summary_counts_each_outcome_once() -> None:
    s = summarise(sample().drill)
    assert (s.total, s.answered, s.errors, s.incomplete) == (10, 8, 1, 1)
    assert s.share_served == 0.8
    assert s.served_by == {"backup": 7, "primary": 1}
    assert s.finished_by == {"backup": 8}
    assert s.continuations == {("primary", "backup"): 1} and s.continued == 1
    assert [(g.code, g.count, g.statuses) for g in s.error_groups] == [("all_targets_failed", 1, (502,))]
    # latency and TTFT are of answered requests only; the failure's wait is in latency_all
    assert s.latency.count == 8 and s.latency.max == 0.9
    assert s.latency_all.count == 10
    assert s.ttft.p50 == percentile([r.ttft for r in sample().drill.results if r.ttft is not None], 50)
    assert (s.attempts, s.failed_over, s.completion_tokens) == (9, 1, 80)


def test_markdown_reports_the_numbers_the_cut_and_the_bug() -> None:
    text = markdown(sample())
    assert text.startswith("# Lifeline drill: 80.0 % served with primary cut off\n")
    assert "- **Cut**: primary (stream_cut after 3 content chunks)" in text
    assert "- **When**: 2026-11-05 14:30:00 UTC" in text
    assert "- **Config**: drill\\|config.yaml" in text  # a pipe would break the tables
    assert "| served | 8 / 10 (80.0 %) |" in text
    assert "| primary → backup | 1 |" in text
    assert "| all_targets_failed | 1 | 502 | no |" in text
    assert "## Incomplete answers" in text and "bug" in text
    assert "\n\n\n" not in text


def test_the_html_is_self_contained_with_inline_svg_charts() -> None:
    page = html_page(sample())
    assert page.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "drill|config.yaml" in page
    svgs = re.findall(r"<svg.*?</svg>", page, re.DOTALL)
    assert len(svgs) == 3
    for svg in svgs:
        ET.fromstring(svg)  # well-formed
    assert "answered by backup" in svgs[0] and "error: all_targets_failed" in svgs[0]


def test_the_files_are_written_and_results_json_holds_every_request(tmp_path: Path) -> None:
    written = write_reports(sample(), tmp_path / "out")
    assert written.markdown.read_text() == markdown(sample())
    assert "<svg" in written.html.read_text()
    data = orjson.loads(written.results.read_bytes())
    assert data["plan"]["cut"] == ["primary"] and data["plan"]["fault"] == "stream_cut" and data["plan"]["after"] == 3
    assert data["baseline"] is None
    assert data["drill"]["summary"]["share_served"] == 0.8
    assert len(data["drill"]["requests"]) == 10
    first = data["drill"]["requests"][0]
    assert first["continued"] == [{"from": "primary", "to": "backup", "after_chars": 40, "reason": "unavailable"}]
    assert first["finished_by"] == "backup"
