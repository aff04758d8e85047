"""Charts as inline SVG, drawn by our own code: geometry here, markup in `_charts.html`.

Two charts of the last hour, one slot per minute (`JobService.throughput`, zero-filled):
jobs finished (completed stacked under failed) with a line of jobs submitted, and the
failure rate (failed / finished, a line broken where nothing finished). The
page gets them server-rendered; the live script swaps in new markup from the summary
endpoint, so there is one drawing code, not one in Python and one in JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import count

from conveyor.services.jobs import ThroughputMinute

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 12, 28  # margins for the axis labels
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


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
    line_kind: str = "rate"  # css class of the lines: rate | submitted
    dots: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    baseline: float = TOP + PLOT_H


def throughput_chart(series: Sequence[ThroughputMinute]) -> Chart:
    total_c = sum(m.completed for m in series)
    total_f = sum(m.failed for m in series)
    total_e = sum(m.enqueued for m in series)
    chart = Chart(
        "Jobs per minute",
        f"{total_e} submitted, {total_c} completed and {total_f} failed "
        f"in the last {len(series)} minutes",
    )
    top = _nice_max(max((max(m.completed + m.failed, m.enqueued) for m in series), default=0))
    slot = PLOT_W / max(1, len(series))
    base = TOP + PLOT_H
    submitted: list[str] = []
    for i, m in enumerate(series):
        x = LEFT + i * slot + slot * 0.12
        label = f"{m.minute:%H:%M}"
        done_h = PLOT_H * m.completed / top
        fail_h = PLOT_H * m.failed / top
        if m.completed:
            title = f"{label}: {m.completed} completed"
            chart.bars.append(Rect(x, base - done_h, slot * 0.76, done_h, "completed", title))
        if m.failed:
            title = f"{label}: {m.failed} failed"
            chart.bars.append(Rect(x, base - done_h - fail_h, slot * 0.76, fail_h, "failed", title))
        submitted.append(f"{LEFT + i * slot + slot / 2:.1f},{base - PLOT_H * m.enqueued / top:.1f}")
    if total_e:
        chart.lines.append(" ".join(submitted))
        chart.line_kind = "submitted"
    chart.y_ticks = _y_ticks(top, str)
    chart.x_ticks = _x_ticks(series, slot)
    return chart


def failure_chart(series: Sequence[ThroughputMinute]) -> Chart:
    finished = sum(m.completed + m.failed for m in series)
    failed = sum(m.failed for m in series)
    rate = f"{100 * failed / finished:.1f} %" if finished else "no jobs finished"
    chart = Chart("Failure rate per minute", f"failure rate over the last hour: {rate}")
    slot = PLOT_W / max(1, len(series))
    segment: list[str] = []
    for i, m in enumerate(series):
        if m.failure_rate is None:
            _close(chart, segment)
            segment = []
            continue
        x = LEFT + i * slot + slot / 2
        y = TOP + PLOT_H * (1 - m.failure_rate)
        segment.append(f"{x:.1f},{y:.1f}")
        label = f"{m.minute:%H:%M}: {100 * m.failure_rate:.0f} % of {m.completed + m.failed} failed"
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


def _x_ticks(series: Sequence[ThroughputMinute], slot: float) -> list[Tick]:
    every = max(1, len(series) // 4)
    ticks = []
    for i in range(0, len(series), every):
        ticks.append(Tick(LEFT + i * slot + slot / 2, HEIGHT - 6, f"{series[i].minute:%H:%M}"))
    return ticks
