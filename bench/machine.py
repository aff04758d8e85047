"""What the figures were measured on, and how busy the machine already was.

The benchmark shares its 2 cores with whatever else runs (other test suites, the database
servers' own work). Each system's result therefore carries the CPU share that was busy during
one second just before it started, when no benchmark process ran: a high value marks figures
that are depressed by someone else's load, not by the system under test.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def describe() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from the first line of /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_busy(sample_s: float = 1.0) -> float | None:
    """Fraction (0-1) of all cores busy during ``sample_s``; None where /proc is missing."""
    try:
        busy0, total0 = _cpu_times()
        time.sleep(sample_s)
        busy1, total1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / (total1 - total0) if total1 > total0 else None


def wait_quiet(threshold: float, max_wait_s: float) -> float | None:
    """Sample once a second until under ``threshold`` busy or ``max_wait_s`` has passed;
    return the last sample (so a noisy start is reported, never hidden)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        busy = cpu_busy()
        if busy is None or busy < threshold or time.monotonic() >= deadline:
            return busy
