"""The soak's measurements: resident memory per process, latency percentiles, slopes.

RSS is read from ``/proc/<pid>/status`` (``VmRSS``), summed over every process of the
`conveyor` process's session: the suite starts each in a session of its own, so a worker's
process-pool children count with their worker (a leak in a child shows as its worker's
growth, and a recycled child does not vanish from the figures).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

PROC = Path("/proc")


def _session_of(pid: str) -> int | None:
    """Field 6 of ``/proc/<pid>/stat`` (after the parenthesised command, which may hold
    spaces)."""
    try:
        text = (PROC / pid / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[3]) if len(fields) > 3 else None


def rss_kib(pid: int) -> int:
    """One process's VmRSS in KiB (0 once it is gone)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def session_rss_mib(leaders: Sequence[int]) -> dict[int, tuple[float, int]]:
    """For each session leader: (RSS of every process in its session in MiB, processes)."""
    wanted = set(leaders)
    totals = {pid: [0, 0] for pid in leaders}
    for entry in os.listdir(PROC):
        if not entry.isdigit():
            continue
        sid = _session_of(entry)
        if sid in wanted:
            totals[sid][0] += rss_kib(int(entry))
            totals[sid][1] += 1
    return {pid: (kib / 1024.0, count) for pid, (kib, count) in totals.items()}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank `q`-th percentile (0 < q <= 100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, in value per hour; None for < 3."""
    if len(points) < 3:
        return None
    n = float(len(points))
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600.0


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def series_count(exposition: str) -> int:
    """Samples in a Prometheus text exposition (lines that are not comments or blank): a
    label set that grows without bound shows here."""
    return sum(1 for line in exposition.splitlines() if line and not line.startswith("#"))
