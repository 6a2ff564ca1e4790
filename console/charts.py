"""Server-rendered SVG charts of the KPI dashboard, drawn from numbers only.

Every chart is an inline ``<svg role="img">`` with a ``<title>`` and a
``<desc>`` (named by ``aria-labelledby``), colours as SVG presentation
attributes (``fill="…"``: the content security policy forbids ``style``
attributes) and a ``<title>`` per bar or point as its tooltip. Values are
coerced to ``float`` and every text label is escaped here, so the result is
returned as ``Markup`` and templates insert it as is. Templates add a data
table under each chart (a ``<details>`` with the numbers) for screen readers
and copying.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

WIDTH = 720
HEIGHT = 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 30, 30
MAX_X_LABELS = 10
BAR_ROW = 26
CHART_ID = re.compile(r"[a-z][a-z0-9-]{0,40}")
COLOR = re.compile(r"#[0-9a-fA-F]{6}")
AXIS = "#8a96a6"
GRID = "#e3e8ee"
INK = "#364152"


@dataclass(frozen=True)
class Series:
    """One data series: a key into the values, its label and colour (``#rrggbb``)."""

    key: str
    label: str
    color: str


def percent(value: float) -> str:
    """``0.425`` -> ``42.5%``."""
    return f"{value * 100:.1f}%"


def count(value: float) -> str:
    """``12.0`` -> ``12``."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _num(value: object) -> float | None:
    if value is None:
        return None
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def _fmt(value: float) -> str:
    return f"{value:.1f}"


def _check(chart_id: str, series: Sequence[Series] = ()) -> None:
    if not CHART_ID.fullmatch(chart_id):
        raise ValueError(f"bad chart id {chart_id!r}")
    for item in series:
        if not COLOR.fullmatch(item.color):
            raise ValueError(f"bad colour {item.color!r}")


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2, 2.5, 5 × 10^n)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _open(chart_id: str, title: str, desc: str, height: int) -> list[str]:
    return [
        f'<svg class="chart" id="{chart_id}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'viewBox="0 0 {WIDTH} {height}" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-title">{escape(title)}</title>',
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>',
    ]


def _y_axis(top_value: float, fmt: Callable[[float], str], height: int) -> list[str]:
    parts = []
    bottom = height - BOTTOM
    for i in range(5):
        value = top_value * i / 4
        y = bottom - (bottom - TOP) * i / 4
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_fmt(y)}" y2="{_fmt(y)}" '
            f'stroke="{GRID}" stroke-width="1"/>'
        )
        parts.append(
            f'<text class="chart-tick" x="{LEFT - 6}" y="{_fmt(y + 4)}" '
            f'text-anchor="end" fill="{AXIS}" font-size="11">'
            f"{escape(fmt(value))}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" '
        f'stroke="{AXIS}" stroke-width="1"/>'
    )
    return parts


def _x_labels(labels: Sequence[str], centers: Sequence[float], height: int) -> list:
    every = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    return [
        f'<text class="chart-tick" x="{_fmt(x)}" y="{height - BOTTOM + 16}" '
        f'text-anchor="middle" fill="{AXIS}" font-size="11">{escape(label)}</text>'
        for i, (label, x) in enumerate(zip(labels, centers, strict=True))
        if i % every == 0
    ]


def _legend(series: Sequence[Series]) -> list[str]:
    parts, x = [], LEFT
    for item in series:
        parts.append(
            f'<rect x="{x}" y="8" width="12" height="12" rx="2" fill="{item.color}"/>'
        )
        parts.append(
            f'<text class="chart-legend" x="{x + 17}" y="18" fill="{INK}" '
            f'font-size="12">{escape(item.label)}</text>'
        )
        x += 30 + 7 * len(item.label)
    return parts


def _empty(parts: list[str], height: int) -> Markup:
    parts.append(
        f'<text x="{WIDTH / 2}" y="{height / 2}" text-anchor="middle" '
        f'fill="{AXIS}" font-size="13">No data in this period</text></svg>'
    )
    return Markup("".join(parts))


def _slots(n: int) -> tuple[float, list[float]]:
    width = (WIDTH - LEFT - RIGHT) / max(n, 1)
    return width, [LEFT + width * (i + 0.5) for i in range(n)]


def stacked_bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    values: Mapping[str, Sequence[float]],
    *,
    desc: str = "",
) -> Markup:
    """Vertical bars per label, each stacked by series (``values[key][i]``)."""
    _check(chart_id, series)
    height = HEIGHT
    parts = _open(chart_id, title, desc or title, height)
    columns = [
        [_num(values[item.key][i]) or 0.0 for item in series]
        for i in range(len(labels))
    ]
    totals = [sum(column) for column in columns]
    if not labels or not any(totals):
        return _empty(parts, height)
    top_value = _nice_max(max(totals))
    parts += _legend(series) + _y_axis(top_value, count, height)
    slot, centers = _slots(len(labels))
    bar = max(1.0, min(slot * 0.7, 40.0))
    scale = (height - BOTTOM - TOP) / top_value
    for label, x, column in zip(labels, centers, columns, strict=True):
        y = height - BOTTOM
        for item, value in zip(series, column, strict=True):
            if value <= 0:
                continue
            h = value * scale
            y -= h
            parts.append(
                f'<rect x="{_fmt(x - bar / 2)}" y="{_fmt(y)}" width="{_fmt(bar)}" '
                f'height="{_fmt(h)}" fill="{item.color}"><title>'
                f"{escape(label)}: {escape(item.label)} {count(value)}</title></rect>"
            )
    parts += _x_labels(labels, centers, height)
    parts.append("</svg>")
    return Markup("".join(parts))


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    color: str = "#1f5fbf",
    fmt: Callable[[float], str] = percent,
    top_value: float | None = 1.0,
    desc: str = "",
) -> Markup:
    """A line over the labels; None values leave a gap (no data that day)."""
    _check(chart_id, [Series("line", "line", color)])
    height = HEIGHT
    parts = _open(chart_id, title, desc or title, height)
    numbers = [_num(v) for v in values]
    known = [v for v in numbers if v is not None]
    if not labels or not known:
        return _empty(parts, height)
    top = top_value if top_value else _nice_max(max(known))
    parts += _y_axis(top, fmt, height)
    _, centers = _slots(len(labels))
    scale = (height - BOTTOM - TOP) / top
    segment: list[str] = []
    segments: list[list[str]] = []
    for x, value in zip(centers, numbers, strict=True):
        if value is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        segment.append(f"{_fmt(x)},{_fmt(height - BOTTOM - value * scale)}")
    if segment:
        segments.append(segment)
    for points in segments:
        if len(points) > 1:
            parts.append(
                f'<polyline points="{" ".join(points)}" fill="none" '
                f'stroke="{color}" stroke-width="2"/>'
            )
    for label, x, value in zip(labels, centers, numbers, strict=True):
        if value is None:
            continue
        parts.append(
            f'<circle cx="{_fmt(x)}" cy="{_fmt(height - BOTTOM - value * scale)}" '
            f'r="3" fill="{color}"><title>{escape(label)}: {escape(fmt(value))}'
            "</title></circle>"
        )
    parts += _x_labels(labels, centers, height)
    parts.append("</svg>")
    return Markup("".join(parts))


def grouped_bars(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    values: Mapping[str, Sequence[float | None]],
    *,
    fmt: Callable[[float], str] = percent,
    top_value: float | None = 1.0,
    desc: str = "",
) -> Markup:
    """Side-by-side bars per label, one per series (None: no bar)."""
    _check(chart_id, series)
    height = HEIGHT
    parts = _open(chart_id, title, desc or title, height)
    grid = [[_num(values[item.key][i]) for item in series] for i in range(len(labels))]
    known = [v for row in grid for v in row if v is not None]
    if not labels or not known:
        return _empty(parts, height)
    top = top_value if top_value else _nice_max(max(known))
    parts += _legend(series) + _y_axis(top, fmt, height)
    slot, centers = _slots(len(labels))
    bar = max(1.0, min(slot * 0.8 / len(series), 36.0))
    scale = (height - BOTTOM - TOP) / top
    for label, x, row in zip(labels, centers, grid, strict=True):
        start = x - bar * len(series) / 2
        for j, (item, value) in enumerate(zip(series, row, strict=True)):
            if value is None:
                continue
            h = min(value, top) * scale
            parts.append(
                f'<rect x="{_fmt(start + j * bar)}" y="{_fmt(height - BOTTOM - h)}" '
                f'width="{_fmt(bar - 2)}" height="{_fmt(h)}" fill="{item.color}">'
                f"<title>{escape(label)}: {escape(item.label)} "
                f"{escape(fmt(value))}</title></rect>"
            )
    parts += _x_labels(labels, centers, height)
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_list(
    chart_id: str,
    title: str,
    items: Sequence[tuple[str, float]],
    *,
    color: str = "#1f5fbf",
    fmt: Callable[[float], str] = count,
    desc: str = "",
) -> Markup:
    """Horizontal bars, one row per ``(label, value)`` in the given order."""
    _check(chart_id, [Series("bar", "bar", color)])
    label_width = 180
    height = max(60, TOP + BAR_ROW * len(items) + 10)
    parts = _open(chart_id, title, desc or title, height)
    rows = [(label, _num(value) or 0.0) for label, value in items]
    if not rows or not any(value for _, value in rows):
        return _empty(parts, height)
    top = max(value for _, value in rows)
    span = WIDTH - label_width - RIGHT - 50
    for i, (label, value) in enumerate(rows):
        y = TOP - 20 + i * BAR_ROW
        w = span * value / top if top else 0
        parts.append(
            f'<text class="chart-label" x="{label_width - 8}" y="{y + 15}" '
            f'text-anchor="end" fill="{INK}" font-size="12">{escape(label)}</text>'
        )
        parts.append(
            f'<rect x="{label_width}" y="{y + 3}" width="{_fmt(max(w, 1))}" '
            f'height="{BAR_ROW - 8}" rx="2" fill="{color}"><title>{escape(label)}: '
            f"{escape(fmt(value))}</title></rect>"
        )
        parts.append(
            f'<text class="chart-value" x="{_fmt(label_width + w + 6)}" '
            f'y="{y + 15}" fill="{INK}" font-size="12">{escape(fmt(value))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


OUTCOME_SERIES = (
    Series("self_served", "self-served", "#1e7b45"),
    Series("escalated", "escalated", "#1f5fbf"),
    Series("abandoned", "abandoned", "#a25b00"),
    Series("other", "open / no outcome", "#9aa5b4"),
)
RATE_SERIES = (
    Series("containment_rate", "containment", "#1e7b45"),
    Series("escalation_rate", "escalation", "#1f5fbf"),
    Series("abandonment_rate", "abandonment", "#a25b00"),
)


def kpi_charts(report: Any) -> dict[str, Markup]:
    """The dashboard's four charts of a ``reports.KpiReport``."""
    days = [day.strftime("%m-%d") for day, _ in report.by_day]
    figures = [f for _, f in report.by_day]
    outcomes: dict[str, list[float]] = {
        "self_served": [f.self_served for f in figures],
        "escalated": [f.escalated for f in figures],
        "abandoned": [f.abandoned for f in figures],
        "other": [
            max(f.conversations - f.self_served - f.escalated - f.abandoned, 0)
            for f in figures
        ],
    }
    channels = list(report.by_channel)
    rates = {
        item.key: [getattr(report.by_channel[c], item.key) for c in channels]
        for item in RATE_SERIES
    }
    return {
        "days": stacked_bars(
            "chart-days",
            "Conversations per day by outcome",
            days,
            OUTCOME_SERIES,
            outcomes,
            desc="Stacked bars: self-served, escalated, abandoned and open "
            "conversations started each day.",
        ),
        "containment": line_chart(
            "chart-containment",
            "Containment rate per day",
            days,
            [f.containment_rate for f in figures],
            color="#1e7b45",
            desc="Share of the day's eligible conversations that were contained; "
            "gaps are days without eligible conversations.",
        ),
        "channels": grouped_bars(
            "chart-channels",
            "Rates by channel",
            channels,
            RATE_SERIES,
            rates,
            desc="Containment, escalation and abandonment rate per channel.",
        ),
        "reasons": bar_list(
            "chart-reasons",
            "Escalation reasons",
            [(reason.replace("_", " "), n) for reason, n in report.escalation_reasons],
            desc="Number of escalations per reason, most frequent first.",
        ),
    }
