"""The shared report's renderings, read as text: Markdown, escaping, the SVG marks and the three files."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from lifeline.reports import (
    Bar,
    Bars,
    Distribution,
    HeatMap,
    Pair,
    Report,
    SideBySide,
    Table,
    Text,
    render_html,
    render_markdown,
    write_report,
)
from lifeline.reports.sections import percentile
from tests.reports.samples import HOSTILE, every_section, results


class Elements(HTMLParser):
    """The tags and attributes an HTML parser (as a browser would) finds in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(page)
    return parser.tags


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(svg) for svg in re.findall(r"<svg.*?</svg>", page, re.DOTALL)]


def outside_fences(markdown: str) -> str:
    return re.sub(r"^(`{3,})text\n.*?^\1$", "", markdown, flags=re.DOTALL | re.MULTILINE)


def test_markdown_has_a_heading_and_a_table_for_every_section() -> None:
    text = render_markdown(every_section())
    headings = re.findall(r"^## (.*)$", text, re.MULTILINE)
    assert [h.split(" \\<")[0] for h in headings] == [
        "Text",
        "Table",
        "Win rate",
        "Outcomes",
        "Latency",
        "Answers",
        "Refusal rate",
    ]
    assert "| candidate | median latency (s) | note |\n|---|--:|---|" in text  # a numeric column aligns right
    assert "| qwen-local | 0.6 | 0.5 to 0.7 |" in text  # the interval
    assert "|  | value (items) | win | tie | loss |" in text  # a column per stacked part
    assert "| empty | 0 | - | - | - | - | - |" in text
    assert "| zh | - | 0.9 |" in text  # heat map: no value is "-"
    assert "\n\n\n" not in text and text.endswith("\n")


def test_distribution_rows_are_nearest_rank_percentiles_of_the_data() -> None:
    data = results()
    text = render_markdown(every_section(data))
    for name, values in data["latency_seconds"].items():
        expected = [percentile(values, p) for p in (5, 25, 50, 75, 95)]
        row = f"| {name} | {len(values)} | " + " | ".join(f"{v:.3g}" for v in expected if v is not None) + " |"
        assert row in text
    # a change in the data is a change in the report: nothing is typed in
    data["latency_seconds"]["openai"] = [5.0, 6.0]
    assert "| openai | 2 | 5 | 5 | 5 | 6 | 6 |" in render_markdown(every_section(data))


def test_markdown_escapes_markup_from_data() -> None:
    text = outside_fences(render_markdown(every_section()))
    assert not re.search(r"(?<!\\)[<>]", text)  # every angle bracket is escaped: no raw HTML
    assert "\\<script\\>" in text
    # a pipe in a cell does not make a new column
    row = next(line for line in text.splitlines() if line.startswith("| openai | 0.32 |"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 4
    assert render_markdown(Report("t", sections=[Text("# not a heading\n1. not a list\n- nor this")])).count("\\") == 3
    assert "\\~\\~struck\\~\\~ \\_emphasis\\_ snake_case" in render_markdown(Report("~~struck~~ _emphasis_ snake_case"))


def test_side_by_side_fences_outlast_the_backticks_inside() -> None:
    text = render_markdown(every_section())
    assert "````text\nForty-two.\n```\ncode\n```\n````" in text
    assert f"```text\n{HOSTILE}\n```" in text  # inside a fence, the answer is shown as it is


def test_html_shows_markup_from_data_as_text() -> None:
    page = render_html(every_section())
    tags = elements(page)
    assert not [t for t, _ in tags if t in ("script", "img", "iframe", "object", "link", "a")]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in page
    csp = next(attrs for t, attrs in tags if t == "meta" and attrs.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in (csp["content"] or "")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "@import" not in page and "url(" not in page


def test_each_chart_is_well_formed_svg_with_a_title_a_description_and_its_numbers() -> None:
    page = render_html(every_section())
    charts = svgs(page)
    assert len(charts) == 4  # two Bars, a Distribution, a HeatMap
    for svg in charts:
        assert svg.get("role") == "img" and svg.get("aria-label")
        assert svg[0].tag == "title" and svg[1].tag == "desc" and (svg[1].text or "").strip()
    assert page.count("<summary>The numbers</summary>") == 4


def _rects_with_title(svg: ET.Element) -> dict[str, float]:
    return {
        (r.findtext("title") or ""): float(r.get("width", "0"))
        for r in svg.iter("rect")
        if r.findtext("title") is not None
    }


def test_bar_lengths_are_proportional_to_their_values() -> None:
    report = Report("bars", sections=[Bars("b", [Bar("one", 1.0), Bar("three", 3.0), Bar("half", 0.5)], unit="x")])
    (svg,) = svgs(render_html(report))
    widths = _rects_with_title(svg)
    assert widths["three: 3 x"] == pytest.approx(3 * widths["one: 1 x"], rel=0.01)
    assert widths["half: 0.5 x"] == pytest.approx(widths["one: 1 x"] / 2, rel=0.01)
    texts = [t.text for t in svg.iter("text")]
    assert "3 x" in texts and "0.5 x" in texts  # each value is written beside its bar, not only drawn


def test_stacked_parts_and_whiskers() -> None:
    bars = [Bar("a", 10.0, parts={"win": 6.0, "tie": 3.0, "loss": 1.0}), Bar("b", 4.0, low=3.0, high=8.0)]
    page = render_html(Report("stack", sections=[Bars("s", bars, max_value=10.0)]))
    (svg,) = svgs(page)
    widths = _rects_with_title(svg)
    assert widths["a: win 6"] == pytest.approx(6 * widths["a: loss 1"], rel=0.01)
    assert widths["a: win 6"] + widths["a: tie 3"] + widths["a: loss 1"] == pytest.approx(
        widths["b: 4 [3 to 8]"] * 2.5, rel=0.01
    )
    assert "win 6 · tie 3 · loss 1" in [t.text for t in svg.iter("text")]
    assert [t for t in svg.iter("g") if t.get("class") == "whisker"]
    legend = re.search(r'<div class="legend">(.*?)</div>', page)
    assert legend is not None and all(name in legend.group(1) for name in ("win", "tie", "loss"))


def test_every_heat_map_cell_says_its_value() -> None:
    report = every_section()
    page = render_html(report)
    svg = svgs(page)[-1]
    cells = [g for g in svg.iter("g") if g.find("rect") is not None and g.get("class") != "legend"]
    assert len(cells) == 4
    said = {(g.findtext("title") or "", g.findtext("text")) for g in cells}
    assert ("zh, tiananmen-1989: 0.9 share", "0.9") in said
    assert ("zh, taiwan-status: no value", "n/a") in said
    fills = {g.findtext("text"): rect.get("fill") for g in cells if (rect := g.find("rect")) is not None}
    assert fills["0.9"] != fills["0.1"]


def test_a_heat_map_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="2 rows by 1"):
        HeatMap("h", ["a", "b"], ["x"], [[1.0]])
    with pytest.raises(ValueError, match="row 0 has 1 cells for 2 columns"):
        Table(["a", "b"], [["only one"]])


def test_write_report_writes_three_files(tmp_path: Path) -> None:
    report = every_section()
    report.data["zeta"], report.data["alpha"] = 1, 2
    paths = write_report(report, tmp_path / "new" / "dir", stem="eval")
    assert {k: p.name for k, p in paths.items()} == {
        "markdown": "eval.md",
        "html": "eval.html",
        "results": "results.json",
    }
    assert paths["markdown"].read_text(encoding="utf-8") == render_markdown(report)
    assert paths["html"].read_text(encoding="utf-8") == render_html(report)
    raw = paths["results"].read_text(encoding="utf-8")
    assert orjson.loads(raw) == report.data
    keys = re.findall(r'^  "(\w+)":', raw, re.MULTILINE)
    assert keys == sorted(keys) and keys[0] == "alpha"  # sorted, indented by two
    assert raw.endswith("}\n")


def test_an_empty_report_renders() -> None:
    report = Report("nothing", sections=[Distribution("d", {}), Bars("b", []), SideBySide("s", [])])
    assert render_markdown(report).startswith("# nothing\n")
    assert len(svgs(render_html(report))) == 2
    pair = Pair("p", "l", "", "r", "")
    assert "<pre" in render_html(Report("x", sections=[SideBySide("s", [pair])]))


@pytest.mark.parametrize(
    ("hi", "expected"),
    [(7.0, [0, 2, 4, 6, 8]), (0.9, [0, 0.25, 0.5, 0.75, 1.0]), (2.2, [0, 1, 2, 3]), (100.0, [0, 25, 50, 75, 100])],
)
def test_axes_run_in_round_steps_past_the_largest_value(hi: float, expected: list[float]) -> None:
    from lifeline.reports.charts import nice_axis

    lo, top, ticks = nice_axis(0.0, hi)
    assert (lo, top, ticks) == (0, expected[-1], expected)
    assert nice_axis(0.0, 0.6, given=1.0)[2] == [0, 0.25, 0.5, 0.75, 1.0]  # a given maximum is kept exactly
