"""Small charts drawn on the server as SVG shapes: no chart library, no script, readable on a phone.

Each function turns overview rows into a :class:`Chart` of plain shapes (rectangles, a polyline,
labels); one template macro draws any chart. Colours come from CSS classes (``o-succeeded``...),
so the charts share the state badges' palette. View boxes are about the size a chart is shown at,
so labels keep their size: the overview draws each chart twice, for a laptop and for a phone
(:data:`PHONE_WIDTH`), and CSS shows the one that fits.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from web.dashboard.filters import duration, money
from web.dashboard.queries import RunRow

# Stacking order, bottom up: the outcomes people look for first sit on the axis.
OUTCOMES = (
    "succeeded",
    "failed",
    "timed_out",
    "budget_exceeded",
    "cancelled",
    "requeued",
    "waiting",
    "running",
)


# The width of a chart on a 390-px phone, in view-box units (about its CSS pixels there).
PHONE_WIDTH = 340


@dataclass(frozen=True)
class Rect:
    """A bar (or bar segment) with its tooltip."""

    x: float
    y: float
    w: float
    h: float
    css: str
    title: str


@dataclass(frozen=True)
class Label:
    """A text label."""

    x: float
    y: float
    text: str
    anchor: str = "middle"
    css: str = "axis"


@dataclass
class Chart:
    """Shapes in a ``width`` by ``height`` view box."""

    width: int
    height: int
    rects: list[Rect] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    grid: list[float] = field(default_factory=list)  # y of horizontal grid lines
    line: str = ""  # polyline points
    dots: list[tuple[float, float, str]] = field(default_factory=list)
    empty: bool = False


def _days(today: date, days: int) -> list[date]:
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def _date_label(x: float, y: float, day: date, width: int) -> Label:
    """A date under the axis; the last one ends at the edge instead of being cut in half."""
    if x + 22 > width:
        return Label(width - 1, y, f"{day:%b} {day.day}", "end")
    return Label(x, y, f"{day:%b} {day.day}")


def _label_every(days: int, width: int) -> int:
    """Label every n-th day so that date labels ("Nov 19") never overlap at this width."""
    return max(1, math.ceil(days / max(3, min(7, width // 75))))


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def runs_per_day(rows: Sequence[RunRow], today: date, days: int = 14, width: int = 1100) -> Chart:
    """Stacked bars: runs started each day, split by outcome."""
    height, left, bottom, top = (220 if width > PHONE_WIDTH else 180), 30, 22, 10
    chart = Chart(width, height, empty=not rows)
    per_day: dict[date, Counter[str]] = defaultdict(Counter)
    for row in rows:
        per_day[row.started_at.date()][row.outcome] += 1
    axis = _days(today, days)
    top_value = _nice_max(max((sum(per_day[d].values()) for d in axis), default=0))
    plot_h, slot = height - bottom - top, (width - left) / days
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        chart.grid.append(y)
        chart.labels.append(Label(left - 6, y + 4, f"{top_value * fraction:g}", "end"))
    every = _label_every(days, width)
    for i, day in enumerate(axis):
        x = left + i * slot + slot * 0.15
        base: float = top + plot_h
        for outcome in sorted(per_day[day], key=lambda o: OUTCOMES.index(o) if o in OUTCOMES else 99):
            count = per_day[day][outcome]
            h = plot_h * count / top_value
            base -= h
            title = f"{day:%b %d}: {count} {outcome.replace('_', ' ')}"
            chart.rects.append(Rect(x, base, slot * 0.7, h, f"o-{outcome}", title))
        if (days - 1 - i) % every == 0:
            chart.labels.append(_date_label(x + slot * 0.35, height - 6, day, width))
    return chart


def median_duration(
    rows: Sequence[RunRow], today: date, days: int = 14, width: int = 540
) -> tuple[float | None, Chart]:
    """The median duration of finished runs, and a line of each day's median."""
    height, left, bottom, top = 180, 52, 22, 10
    finished = [(r.started_at.date(), d) for r in rows if (d := r.duration_s) is not None]
    overall = statistics.median(d for _, d in finished) if finished else None
    chart = Chart(width, height, empty=not finished)
    per_day: dict[date, list[float]] = defaultdict(list)
    for day, seconds in finished:
        per_day[day].append(seconds)
    axis = _days(today, days)
    medians = {d: statistics.median(per_day[d]) for d in axis if per_day[d]}
    top_value = _nice_max(max(medians.values(), default=0.0))
    plot_h, slot = height - bottom - top, (width - left) / days
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - fraction)
        chart.grid.append(y)
        chart.labels.append(Label(left - 6, y + 4, duration(top_value * fraction), "end"))
    points = []
    every = _label_every(days, width)
    for i, day in enumerate(axis):
        x = left + i * slot + slot / 2
        if day in medians:
            y = top + plot_h * (1 - medians[day] / top_value)
            points.append(f"{x:.1f},{y:.1f}")
            chart.dots.append((x, y, f"{day:%b %d}: median {duration(medians[day])}"))
        if (days - 1 - i) % every == 0:
            chart.labels.append(_date_label(x, height - 6, day, width))
    chart.line = " ".join(points)
    return overall, chart


def cost_per_repo(rows: Sequence[RunRow], limit: int = 8, width: int = 540) -> Chart:
    """Horizontal bars: what the runs of each repository cost, most expensive first."""
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        totals[row.repo] += row.cost_usd
    ranked = [
        (repo, cost) for repo, cost in sorted(totals.items(), key=lambda kv: -kv[1])[:limit] if cost > 0
    ]
    row_h = 26
    label_w, name_chars = (190, 26) if width > PHONE_WIDTH else (120, 15)
    chart = Chart(width, max(row_h * len(ranked), row_h) + 4, empty=not ranked)
    top_value = max((c for _, c in ranked), default=0.0) or 1.0
    bar_max = width - label_w - 70
    for i, (repo, cost) in enumerate(ranked):
        y = i * row_h + 4
        w = max(2.0, bar_max * cost / top_value)
        name = repo if len(repo) <= name_chars else "…" + repo[-(name_chars - 1) :]
        chart.labels.append(Label(label_w - 8, y + 15, name, "end", "repo"))
        chart.rects.append(Rect(label_w, y + 3, w, row_h - 8, "cost", f"{repo}: {money(cost)}"))
        chart.labels.append(Label(label_w + w + 6, y + 15, money(cost), "start", "value"))
    return chart
