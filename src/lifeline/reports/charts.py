"""The charts, as inline SVG: horizontal bars, distributions (box and points) and heat maps.

No script and no URL: hover labels are SVG <title> elements, and every mark that carries a number also says
it in text — a value beside each bar, a figure in each cell — so colour is never the only way to read it.
Each chart opens with a <title> and a <desc> for screen readers; its numbers also follow it as a table.
Colours are fixed hex values chosen to hold at least 3:1 against both the light and the dark page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

from lifeline.reports.sections import Bar, Bars, Distribution, HeatMap, bar_extent, box, number, part_names, with_unit

#: series colours, in order (also the stacked parts')
PALETTE = ("#2e86ab", "#3b9c5a", "#7b5ea7", "#c17c00", "#1d7874", "#a23b72", "#5c6b8a", "#8a5a44")
#: the stacked parts whose meaning has a colour of its own
PART_COLOURS = {"win": "#3b9c5a", "tie": "#8a94a6", "loss": "#d1495b"}
#: a Distribution draws at most this many points per series (an even sample of the sorted values)
MAX_POINTS = 400

WIDTH = 720
LABEL_W = 200
ROW_H = 28


def part_colours(names: list[str]) -> dict[str, str]:
    spare = iter(c for c in PALETTE if c not in PART_COLOURS.values())
    return {name: PART_COLOURS.get(name.lower()) or next(spare, PALETTE[-1]) for name in names}


def _open(width: float, height: float, title: str, desc: str) -> str:
    # Inline SVG in HTML needs no namespace declaration; leaving it out keeps the page free of any URL.
    return (
        f'<svg viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'style="max-width:{width:.0f}px" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>"
    )


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(x: float, y: float, text: str, limit: int, anchor: str = "end") -> str:
    """A row or column label, shortened to fit; the whole text in its <title>."""
    short = _clip(text, limit)
    tip = f"<title>{escape(text)}</title>" if short != " ".join(text.split()) else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{tip}{escape(short)}</text>'


def nice_axis(lo: float, hi: float, given: float | None = None) -> tuple[float, float, list[float]]:
    """An axis from `lo` to at least `hi` in round steps (1, 2, 2.5 or 5 times a power of ten), or to exactly
    `given` in quarters; its ends and its ticks."""
    if given is not None and given > lo:
        return lo, given, [lo + (given - lo) * i / 4 for i in range(5)]
    span = hi - lo if hi > lo else 1.0
    raw = span / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    start = math.floor(lo / step + 1e-9) * step
    ticks = [round(start + k * step, 12) for k in range(math.ceil((hi - start) / step - 1e-9) + 1)]
    if len(ticks) < 2:
        ticks.append(round(start + step, 12))
    return ticks[0], ticks[-1], ticks


def _ticks(left: float, y: float, plot_w: float, ticks: list[float], unit: str, top: float) -> str:
    """Grid lines and tick labels along the bottom; the unit once, under the axis's end."""
    lo, hi = ticks[0], ticks[-1]
    out = []
    for i, tick in enumerate(ticks):
        x = left + plot_w * (tick - lo) / (hi - lo)
        anchor = "start" if i == 0 else "end" if i == len(ticks) - 1 else "middle"
        out.append(f'<line class="grid" x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{y + 4:.1f}"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 16:.1f}" text-anchor="{anchor}">{number(tick)}</text>')
    if unit:
        out.append(
            f'<text class="unit" x="{left + plot_w:.1f}" y="{y + 30:.1f}" text-anchor="end">{escape(unit)}</text>'
        )
    return "".join(out)


# --- bars -------------------------------------------------------------------------------------------------


def bars_svg(section: Bars) -> str:
    parts = part_names(section.bars)
    colours = part_colours(parts)
    _, scale, ticks = nice_axis(0.0, max((bar_extent(b) for b in section.bars), default=0.0), section.max_value)
    plot_w = WIDTH - LABEL_W - 190
    top, bottom = 8, 38
    height = top + bottom + ROW_H * max(1, len(section.bars))
    desc = section.caption or f"{len(section.bars)} bars, on a scale from 0 to {with_unit(scale, section.unit)}."
    out = [_open(WIDTH, height, section.heading, desc)]
    axis_y = top + ROW_H * max(1, len(section.bars))
    for i, bar in enumerate(section.bars):
        out.append(_bar_row(bar, top + i * ROW_H, plot_w, scale, section.unit, colours))
    out.append(f'<line class="axis" x1="{LABEL_W}" y1="{top}" x2="{LABEL_W}" y2="{axis_y}"/>')
    out.append(_ticks(LABEL_W, axis_y, plot_w, ticks, section.unit, top))
    out.append("</svg>")
    return "".join(out)


def _x(value: float, plot_w: float, scale: float) -> float:
    if not math.isfinite(value):
        return float(LABEL_W)
    return LABEL_W + plot_w * min(max(value, 0.0), scale) / scale


def _bar_row(bar: Bar, y: float, plot_w: float, scale: float, unit: str, colours: dict[str, str]) -> str:
    out = [_label(LABEL_W - 8, y + 18, bar.label, 30)]
    said = with_unit(bar.value, unit)
    if bar.low is not None or bar.high is not None:
        low = bar.low if bar.low is not None else bar.value
        high = bar.high if bar.high is not None else bar.value
        said += f" [{number(low)} to {number(high)}]"
    if bar.parts:
        x = float(LABEL_W)
        for name, value in bar.parts.items():
            w = _x(value, plot_w, scale) - LABEL_W
            if w <= 0:
                continue
            out.append(
                f'<rect x="{x:.1f}" y="{y + 5}" width="{w:.1f}" height="{ROW_H - 10}" fill="{colours[name]}">'
                f"<title>{escape(bar.label)}: {escape(name)} {escape(with_unit(value, unit))}</title></rect>"
            )
            x += w
        said = " · ".join(f"{name} {number(v)}" for name, v in bar.parts.items())
        end = x
    else:
        end = _x(bar.value, plot_w, scale)
        out.append(
            f'<rect x="{LABEL_W}" y="{y + 5}" width="{max(1.0, end - LABEL_W):.1f}" height="{ROW_H - 10}" '
            f'fill="{PALETTE[0]}"><title>{escape(bar.label)}: {escape(said)}</title></rect>'
        )
    if bar.low is not None or bar.high is not None:
        x1 = _x(bar.low if bar.low is not None else bar.value, plot_w, scale)
        x2 = _x(bar.high if bar.high is not None else bar.value, plot_w, scale)
        mid = y + ROW_H / 2
        out.append(
            f'<g class="whisker"><title>{escape(bar.label)}: interval {escape(said)}</title>'
            f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}"/>'
            f'<line x1="{x1:.1f}" y1="{mid - 6:.1f}" x2="{x1:.1f}" y2="{mid + 6:.1f}"/>'
            f'<line x1="{x2:.1f}" y1="{mid - 6:.1f}" x2="{x2:.1f}" y2="{mid + 6:.1f}"/></g>'
        )
        end = max(end, x2)
    out.append(f'<text x="{end + 6:.1f}" y="{y + 18}">{escape(_clip(said, 34))}</text>')
    return "".join(out)


# --- distributions ----------------------------------------------------------------------------------------


def distribution_svg(section: Distribution) -> str:
    finite = [v for values in section.series.values() for v in values if math.isfinite(v)]
    lo = min(finite, default=0.0)
    hi = max(finite, default=1.0)
    # measures that cannot go below zero start at zero: no exaggerated spread
    lo, hi, ticks = nice_axis(min(lo, 0.0), hi)
    row_h, top, bottom = 44, 8, 38
    plot_w = WIDTH - LABEL_W - 24
    rows = max(1, len(section.series))
    height = top + bottom + row_h * rows
    desc = section.caption or (
        "Per series: the box spans the 25th to 75th percentile, the line inside is the median, the whiskers "
        "reach the 5th and 95th percentiles; each dot is one value."
    )
    out = [_open(WIDTH, height, section.heading, desc)]

    def x(value: float) -> float:
        return LABEL_W + plot_w * (value - lo) / (hi - lo)

    for i, (name, values) in enumerate(section.series.items()):
        y = top + i * row_h
        mid = y + row_h / 2
        out.append(_label(LABEL_W - 8, mid + 4, name, 30))
        five = box(values)
        if five is None:
            out.append(f'<text x="{LABEL_W + 6}" y="{mid + 4:.1f}">no values</text>')
            continue
        p5, p25, p50, p75, p95 = five
        colour = PALETTE[i % len(PALETTE)]
        tip = (
            f"{escape(name)}: n {len(values)}, p5 {escape(with_unit(p5, section.unit))}, p25 {number(p25)}, "
            f"median {number(p50)}, p75 {number(p75)}, p95 {number(p95)}"
        )
        out.append(
            f'<g class="box"><title>{tip}</title>'
            f'<line x1="{x(p5):.1f}" y1="{mid:.1f}" x2="{x(p95):.1f}" y2="{mid:.1f}"/>'
            f'<line x1="{x(p5):.1f}" y1="{mid - 7:.1f}" x2="{x(p5):.1f}" y2="{mid + 7:.1f}"/>'
            f'<line x1="{x(p95):.1f}" y1="{mid - 7:.1f}" x2="{x(p95):.1f}" y2="{mid + 7:.1f}"/>'
            f'<rect x="{x(p25):.1f}" y="{mid - 11:.1f}" width="{max(1.0, x(p75) - x(p25)):.1f}" height="22" '
            f'fill="{colour}" fill-opacity="0.25" stroke="{colour}"/>'
            f'<line class="median" x1="{x(p50):.1f}" y1="{mid - 11:.1f}" x2="{x(p50):.1f}" y2="{mid + 11:.1f}"/></g>'
        )
        out += _points(values, x, mid, colour)
    axis_y = top + row_h * rows
    out.append(_ticks(LABEL_W, axis_y, plot_w, ticks, section.unit, top))
    out.append("</svg>")
    return "".join(out)


def _points(values: list[float], x: Callable[[float], float], mid: float, colour: str) -> list[str]:
    ordered = sorted(v for v in values if math.isfinite(v))
    if len(ordered) > MAX_POINTS:
        step = (len(ordered) - 1) / (MAX_POINTS - 1)
        ordered = [ordered[round(i * step)] for i in range(MAX_POINTS)]
    out = []
    for i, value in enumerate(ordered):
        # a fixed spread up and down the row (no randomness: the same data draws the same chart)
        dy = ((i * 7) % 15 - 7) * 1.3
        out.append(
            f'<circle cx="{x(value):.1f}" cy="{mid + dy:.1f}" r="2.2" fill="{colour}" fill-opacity="0.7">'
            f"<title>{number(value)}</title></circle>"
        )
    return out


# --- heat maps --------------------------------------------------------------------------------------------

#: the colour scale's two ends (light to dark blue) and the text colour that reads on each half
_LIGHT, _DARK = (0xEE, 0xF4, 0xFB), (0x08, 0x30, 0x6B)


def heat_colour(t: float) -> tuple[str, str]:
    """The fill for a position 0..1 on the scale, and the text colour that reads on it."""
    t = min(1.0, max(0.0, t))
    r, g, b = (round(a + (z - a) * t) for a, z in zip(_LIGHT, _DARK, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}", "#ffffff" if t > 0.5 else "#1c2330"


def heat_map_svg(section: HeatMap) -> str:
    finite = [v for row in section.values for v in row if v is not None and math.isfinite(v)]
    low = section.low if section.low is not None else min(finite, default=0.0)
    high = section.high if section.high is not None else max(finite, default=1.0)
    span = (high - low) or 1.0
    cell_w, cell_h, head_h, label_w = 64, 30, 70, 170
    width = label_w + max(5 * 64, cell_w * len(section.columns)) + 10
    legend_y = head_h + cell_h * len(section.rows) + 16
    height = legend_y + 40
    desc = section.caption or (
        f"{len(section.rows)} rows by {len(section.columns)} columns; darker is higher, from "
        f"{with_unit(low, section.unit)} to {with_unit(high, section.unit)}; each cell shows its value."
    )
    out = [_open(width, height, section.heading, desc)]
    for j, column in enumerate(section.columns):
        x = label_w + cell_w * j + cell_w / 2
        out.append(f'<g transform="rotate(-35 {x:.1f} {head_h - 8})">{_label(x, head_h - 8, column, 18, "start")}</g>')
    for i, (row, values) in enumerate(zip(section.rows, section.values, strict=True)):
        y = head_h + cell_h * i
        out.append(_label(label_w - 8, y + cell_h / 2 + 4, row, 24))
        for j, value in enumerate(values):
            x = label_w + cell_w * j
            where = f"{escape(row)}, {escape(section.columns[j])}"
            if value is None or not math.isfinite(value):
                out.append(
                    f'<g class="empty"><title>{where}: no value</title><rect x="{x + 1}" y="{y + 1}" '
                    f'width="{cell_w - 2}" height="{cell_h - 2}"/>'
                    f'<text x="{x + cell_w / 2}" y="{y + cell_h / 2 + 4}" text-anchor="middle">n/a</text></g>'
                )
                continue
            fill, ink = heat_colour((value - low) / span)
            out.append(
                f"<g><title>{where}: {escape(with_unit(value, section.unit))}</title>"
                f'<rect x="{x + 1}" y="{y + 1}" width="{cell_w - 2}" height="{cell_h - 2}" fill="{fill}"/>'
                f'<text x="{x + cell_w / 2}" y="{y + cell_h / 2 + 4}" text-anchor="middle" style="fill:{ink}">'
                f"{escape(number(value))}</text></g>"
            )
    out.append(_heat_legend(label_w, legend_y, low, high, section.unit))
    out.append("</svg>")
    return "".join(out)


def _heat_legend(left: int, y: int, low: float, high: float, unit: str) -> str:
    steps = 5
    out = [
        f'<g class="legend"><title>Colour scale: {escape(with_unit(low, unit))} (light) to '
        f"{escape(with_unit(high, unit))} (dark)</title>"
    ]
    out.append(f'<text x="{left - 8}" y="{y + 13}" text-anchor="end">scale</text>')
    for k in range(steps):
        t = k / (steps - 1)
        fill, _ = heat_colour(t)
        x = left + k * 64
        out.append(f'<rect x="{x}" y="{y}" width="62" height="16" fill="{fill}" class="swatch"/>')
        said = escape(with_unit(low + (high - low) * t, unit))
        out.append(f'<text x="{x + 31}" y="{y + 30}" text-anchor="middle">{said}</text>')
    out.append("</g>")
    return "".join(out)
