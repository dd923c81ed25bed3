"""Each chart's numbers as a table: the Markdown shows it in place of the chart, the HTML under it.

One function per chart kind, so the figures a reader sees in the Markdown, in the HTML table and in the
chart's labels are the same computation.
"""

from __future__ import annotations

from lifeline.reports.sections import Bars, Cell, Distribution, HeatMap, Table, box, number, part_names


def bars_table(section: Bars) -> Table:
    parts = part_names(section.bars)
    intervals = any(b.low is not None or b.high is not None for b in section.bars)
    value = f"value ({section.unit})" if section.unit else "value"
    columns = ["", value, *(["interval"] if intervals else []), *parts]
    rows: list[list[Cell]] = []
    for bar in section.bars:
        row: list[Cell] = [bar.label, bar.value]
        if intervals:
            row.append(interval(bar.low, bar.high))
        row += [(bar.parts or {}).get(name) for name in parts]
        rows.append(row)
    return Table(columns, rows, section.caption)


def interval(low: float | None, high: float | None) -> str:
    if low is None and high is None:
        return "-"
    return f"{number(low) if low is not None else '…'} to {number(high) if high is not None else '…'}"


def distribution_table(section: Distribution) -> Table:
    unit = f" ({section.unit})" if section.unit else ""
    columns = ["", "n", *(f"p{p}{unit}" for p in (5, 25, 50, 75, 95))]
    rows: list[list[Cell]] = []
    for name, values in section.series.items():
        five = box(values)
        rows.append([name, len(values), *(five if five is not None else (None,) * 5)])
    return Table(columns, rows, section.caption)


def heat_map_table(section: HeatMap) -> Table:
    columns = [f"({section.unit})" if section.unit else "", *section.columns]
    rows: list[list[Cell]] = [[name, *values] for name, values in zip(section.rows, section.values, strict=True)]
    return Table(columns, rows, section.caption)
