"""Opt-in long run (``python -m bench.run --soak 1000000``): worker memory over many jobs.

Conveyor on PostgreSQL, the drain's settings (2 workers, concurrency 64): the queue is
pre-filled with ``n`` jobs (batches of 500, in client calls of 100,000), then the workers run
them all while the harness samples, once a second, the resident set size (``VmRSS``) of every
worker process and how many jobs have executed (newlines in the record files). Reported: RSS
at the start (the first sample with 1 % of the jobs run: warmed up), middle (half run) and
end (all run), per worker process and summed, plus the largest sum seen.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.conveyor_systems import ConveyorSystem
from bench.procs import BenchError

CHUNK = 100_000
SAMPLE_S = 1.0


@dataclass
class SoakFigures:
    n: int
    executed: int = 0
    seconds: float = 0.0
    jobs_per_s: float = 0.0
    rss_mib: dict[str, list[float]] = field(default_factory=dict)  # start/middle/end, per pid
    rss_total_mib: dict[str, float] = field(default_factory=dict)
    rss_total_max_mib: float = 0.0
    timed_out: bool = False
    error: str | None = None


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class LineCounter:
    """Executed jobs so far: newlines appended to the run directory's record files."""

    def __init__(self, path: Path) -> None:
        self.path, self.count, self._offsets = path, 0, dict[Path, int]()

    def poll(self) -> int:
        for file in self.path.glob("worker-*.log"):
            with file.open("rb") as handle:
                handle.seek(self._offsets.get(file, 0))
                data = handle.read()
            self._offsets[file] = self._offsets.get(file, 0) + len(data)
            self.count += data.count(b"\n")
        return self.count


def soak(n: int, work: Path, source: Path | None = None) -> SoakFigures:
    system = ConveyorSystem("postgres", source=source)
    figures = SoakFigures(n=n)
    timeout_s = max(300.0, n / 500)
    try:
        system.setup()
        for first in range(0, n, CHUNK):
            system.enqueue(min(CHUNK, n - first), "batch", start=first, batch_size=500)
            print(f"bench: soak: {min(first + CHUNK, n):,} queued", file=sys.stderr, flush=True)
        system.settle()
        run_dir = work / "soak"
        run_dir.mkdir(parents=True, exist_ok=True)
        counter = LineCounter(run_dir)
        system.start_workers(run_dir, 2)
        started = time.monotonic()
        marks = {"start": max(1, n // 100), "middle": n // 2, "end": n}  # start: warmed up
        while True:
            time.sleep(SAMPLE_S)
            system.check_workers()
            executed = counter.poll()
            rss = {str(pid): _rss_mib(pid) for pid in system.worker_pids()}
            sizes = {pid: value for pid, value in rss.items() if value is not None}
            total = sum(sizes.values())
            figures.rss_total_max_mib = max(figures.rss_total_max_mib, total)
            for mark, threshold in marks.items():
                if executed >= threshold and mark not in figures.rss_total_mib:
                    figures.rss_total_mib[mark] = round(total, 1)
                    for pid, value in sizes.items():
                        figures.rss_mib.setdefault(pid, []).append(round(value, 1))
                    print(
                        f"bench: soak: {mark}: {executed:,} run, worker RSS {total:.1f} MiB",
                        file=sys.stderr,
                        flush=True,
                    )
            figures.executed = executed
            figures.seconds = time.monotonic() - started
            if executed >= n:
                break
            if figures.seconds > timeout_s:
                figures.timed_out = True
                break
        figures.jobs_per_s = figures.executed / figures.seconds if figures.seconds else 0.0
    except BenchError as exc:
        figures.error = str(exc)
    finally:
        system.teardown()
    return figures
