"""Charts as inline SVG, drawn by our own code: geometry here, markup in `_charts.html`.

Two charts of the last hour, one slot per minute: jobs finished (completed stacked under
failed) and the failure rate (failed / finished, a line broken where nothing finished). The
page gets them server-rendered; the live script swaps in new markup from the summary
endpoint, so there is one drawing code, not one in Python and one in JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import count

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 12, 28  # margins for the axis labels
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute's finished jobs."""

    minute: datetime
    completed: int
    failed: int

    @property
    def finished(self) -> int:
        return self.completed + self.failed


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    kind: str  # css class: completed | failed
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass
class Chart:
    title: str
    summary: str  # the accessible description: the numbers a screen reader should hear
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Rect] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # polyline point lists
    dots: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    baseline: float = TOP + PLOT_H


def last_hour(points: Sequence[Minute], end: datetime, minutes: int = 60) -> list[Minute]:
    """One entry per minute up to `end`'s minute, zero where nothing finished."""
    last = end.replace(second=0, microsecond=0)
    by_minute = {p.minute.replace(second=0, microsecond=0): p for p in points}
    slots = [last - timedelta(minutes=minutes - 1 - i) for i in range(minutes)]
    return [by_minute.get(m, Minute(m, 0, 0)) for m in slots]


def throughput_chart(series: Sequence[Minute]) -> Chart:
    total_c = sum(m.completed for m in series)
    total_f = sum(m.failed for m in series)
    chart = Chart(
        "Jobs finished per minute",
        f"{total_c} completed and {total_f} failed in the last {len(series)} minutes",
    )
    top = _nice_max(max((m.finished for m in series), default=0))
    slot = PLOT_W / max(1, len(series))
    for i, m in enumerate(series):
        x = LEFT + i * slot + slot * 0.12
        w = slot * 0.76
        label = m.minute.strftime("%H:%M")
        done_h = PLOT_H * m.completed / top
        fail_h = PLOT_H * m.failed / top
        base = TOP + PLOT_H
        if m.completed:
            title = f"{label}: {m.completed} completed"
            chart.bars.append(Rect(x, base - done_h, w, done_h, "completed", title))
        if m.failed:
            title = f"{label}: {m.failed} failed"
            chart.bars.append(Rect(x, base - done_h - fail_h, w, fail_h, "failed", title))
    chart.y_ticks = _y_ticks(top, str)
    chart.x_ticks = _x_ticks(series, slot)
    return chart


def failure_chart(series: Sequence[Minute]) -> Chart:
    finished = sum(m.finished for m in series)
    failed = sum(m.failed for m in series)
    rate = f"{100 * failed / finished:.1f} %" if finished else "no jobs finished"
    chart = Chart("Failure rate per minute", f"failure rate over the last hour: {rate}")
    slot = PLOT_W / max(1, len(series))
    segment: list[str] = []
    for i, m in enumerate(series):
        if not m.finished:
            _close(chart, segment)
            segment = []
            continue
        x = LEFT + i * slot + slot / 2
        y = TOP + PLOT_H * (1 - m.failed / m.finished)
        segment.append(f"{x:.1f},{y:.1f}")
        label = f"{m.minute:%H:%M}: {100 * m.failed / m.finished:.0f} % of {m.finished} failed"
        chart.dots.append(Tick(x, y, label))
    _close(chart, segment)
    chart.y_ticks = _y_ticks(100, lambda v: f"{v} %")
    chart.x_ticks = _x_ticks(series, slot)
    return chart


def _close(chart: Chart, segment: list[str]) -> None:
    if len(segment) > 1:
        chart.lines.append(" ".join(segment))


def _nice_max(value: int) -> int:
    """The smallest of 4, 8, 20, 40, 80, 200 ... (four round steps) at or above `value`."""
    wanted = max(value, 4)
    for magnitude in count():
        for factor in (1, 2, 5):
            top: int = 4 * factor * 10**magnitude
            if top >= wanted:
                return top
    raise AssertionError("unreachable")  # pragma: no cover


def _y_ticks(top: int, label: Callable[[int], str]) -> list[Tick]:
    return [Tick(LEFT - 6, TOP + PLOT_H * (1 - i / 4), label(round(top * i / 4))) for i in range(5)]


def _x_ticks(series: Sequence[Minute], slot: float) -> list[Tick]:
    every = max(1, len(series) // 4)
    ticks = []
    for i in range(0, len(series), every):
        ticks.append(Tick(LEFT + i * slot + slot / 2, HEIGHT - 6, f"{series[i].minute:%H:%M}"))
    return ticks
