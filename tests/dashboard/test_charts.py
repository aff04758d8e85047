"""Chart geometry: one slot per minute, round axes, a failure line broken where nothing
finished, and nothing drawn outside the plot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from conveyor.dashboard import charts
from conveyor.dashboard.charts import Minute

END = datetime(2026, 1, 1, 12, 30, 45, tzinfo=UTC)


def _minute(ago: int, completed: int, failed: int) -> Minute:
    return Minute(END.replace(second=0) - timedelta(minutes=ago), completed, failed)


def test_last_hour_has_one_slot_per_minute() -> None:
    series = charts.last_hour([_minute(0, 3, 1), _minute(59, 2, 0), _minute(61, 9, 9)], END)
    assert len(series) == 60
    assert series[-1] == _minute(0, 3, 1)
    assert series[0] == _minute(59, 2, 0)  # an hour ago is in; older is out
    assert sum(m.finished for m in series) == 6


def test_throughput_stacks_failed_on_completed_with_a_round_axis() -> None:
    series = charts.last_hour([_minute(0, 30, 3)], END)
    chart = charts.throughput_chart(series)
    assert [t.label for t in chart.y_ticks] == ["0", "10", "20", "30", "40"]
    completed, failed = chart.bars
    assert completed.kind == "completed" and failed.kind == "failed"
    assert abs(failed.y + failed.h - completed.y) < 1e-9  # stacked, touching
    assert completed.y + completed.h == chart.baseline
    assert chart.summary == "30 completed and 3 failed in the last 60 minutes"
    for bar in chart.bars:
        assert chart.left <= bar.x and bar.x + bar.w <= chart.plot_right


def test_failure_line_breaks_where_nothing_finished() -> None:
    points = [_minute(5, 1, 1), _minute(4, 3, 1), _minute(2, 4, 0), _minute(1, 1, 0)]
    chart = charts.failure_chart(charts.last_hour(points, END))
    assert len(chart.dots) == 4
    assert len(chart.lines) == 2  # minute 3 had no finished job: two segments
    assert chart.summary == "failure rate over the last hour: 18.2 %"
    assert charts.failure_chart(charts.last_hour([], END)).summary.endswith("no jobs finished")


def test_empty_hour_still_has_axes() -> None:
    chart = charts.throughput_chart(charts.last_hour([], END))
    assert chart.bars == [] and len(chart.y_ticks) == 5 and chart.x_ticks
