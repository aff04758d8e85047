"""Chart geometry: one slot per minute, round axes, a failure line broken where nothing
finished, and nothing drawn outside the plot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.dashboard import charts
from conveyor.services.jobs import ThroughputMinute

START = datetime(2026, 1, 1, 11, 31, tzinfo=UTC)


def _hour(points: dict[int, tuple[int, int, int]]) -> list[ThroughputMinute]:
    """Sixty minutes; `points` maps a minute's index to (enqueued, completed, failed)."""
    return [
        ThroughputMinute(START + timedelta(minutes=i), *points.get(i, (0, 0, 0))) for i in range(60)
    ]


def test_throughput_stacks_failed_on_completed_with_a_round_axis() -> None:
    chart = charts.throughput_chart(_hour({59: (12, 30, 3)}))
    assert [t.label for t in chart.y_ticks] == ["0", "10", "20", "30", "40"]
    completed, failed = chart.bars
    assert completed.kind == "completed" and failed.kind == "failed"
    assert abs(failed.y + failed.h - completed.y) < 1e-9  # stacked, touching
    assert completed.y + completed.h == chart.baseline
    assert chart.summary == "12 submitted, 30 completed and 3 failed in the last 60 minutes"
    assert len(chart.lines) == 1 and chart.line_kind == "submitted"
    for bar in chart.bars:
        assert chart.left <= bar.x and bar.x + bar.w <= chart.plot_right


def test_the_axis_covers_submissions_too() -> None:
    chart = charts.throughput_chart(_hour({0: (90, 1, 0)}))
    assert chart.y_ticks[-1].label == "200"


def test_failure_line_breaks_where_nothing_finished() -> None:
    chart = charts.failure_chart(_hour({1: (0, 1, 1), 2: (0, 3, 1), 4: (0, 4, 0), 5: (0, 1, 0)}))
    assert len(chart.dots) == 4
    assert len(chart.lines) == 2  # minute 3 had no finished job: two segments
    assert chart.summary == "failure rate over the last hour: 18.2 %"
    assert charts.failure_chart(_hour({})).summary.endswith("no jobs finished")


def test_empty_hour_still_has_axes() -> None:
    chart = charts.throughput_chart(_hour({}))
    assert chart.bars == [] and chart.lines == [] and len(chart.y_ticks) == 5 and chart.x_ticks
