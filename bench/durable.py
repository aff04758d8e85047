"""Durable completion during a drain: the system's own store, sampled every 0.1 s.

A job has *executed* when its record line is written (peers/record.py, the handler's last act);
it is *durably complete* when the system's store says so (Conveyor's row committed
``completed``, Procrastinate's ``succeeded``, a broker's message acknowledged, Huey's result
stored, RQ's finished registry), read by ``bench.peers.client probe`` in a subprocess of the
system's venv (peers/probe.py). From the samples and the records:

* **durable rate** = jobs / (first start -> the first sample that saw every job done). A
  system that drops a message before running it (Celery's early ack) is done no earlier than
  its last execution, so that moment is the later of the two.
* **unrecorded peak** = max over samples of (executed - done): the jobs a crash at that
  moment would run again. A sample's count reads a snapshot taken at some moment between the
  time before the read and the time after it, so it is bounded on both sides: executed by the
  time *before* (surely executed at the snapshot; the lower bound, a peak certainly reached)
  and executed by the time *after* (the upper bound). Between them lies what the probe cannot
  tell apart: executions ending while the count ran (at 14,000 jobs/s a 5 ms count is 70 jobs).
* **acked unrun peak** = max of (done - executed): jobs the store had already let go of but
  that had not run yet (a crash then loses them; only early-ack systems have any).
"""

from __future__ import annotations

import bisect
import json
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.procs import BenchError, stop, tail


@dataclass(frozen=True)
class DurableFigures:
    samples: int
    interval_s: float
    all_durable: bool  # the probe saw every job done before the phase ended
    seconds: float | None  # first start -> last completion durable
    jobs_per_s: float | None
    unrecorded_peak: int  # lower bound: certainly reached at some sample's snapshot
    unrecorded_peak_at_s: float | None  # since the first start
    acked_unrun_peak: int
    done_at_end: int = 0  # durably done in the last sample
    # not all durable: n / (first start -> last sample) bounds the durable rate from above
    below_jobs_per_s: float | None = None
    # every sample: (seconds since the first start, executed by then, durably done)
    series: tuple[tuple[float, int, int], ...] = ()
    # upper bound: executions ended by the time each count returned, minus its count
    unrecorded_peak_high: int = 0
    # the longest count (before -> after), seconds: how wide the bounds can be
    longest_read_s: float = 0.0


class Probe:
    """``probe`` running in a subprocess; its JSON lines collected by a thread."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.samples: list[tuple[float, float, int]] = []  # (before, after, done)
        self.finished = threading.Event()
        self._first = threading.Event()
        with log.open("ab") as err:
            self._proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read, daemon=True, name="durable-probe")
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if "t" in line:
                after = float(line["t"])
                before = float(line.get("t0", after))
                self.samples.append((before, after, int(line["done"])))
                self._first.set()
        self.finished.set()

    def wait_first(self, timeout_s: float) -> None:
        """Until the first sample is in (the probe is reading), or raise."""
        deadline = time.monotonic() + timeout_s
        while not self._first.wait(0.05):
            if self.finished.is_set() or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"durable probe gave no sample; its log:\n{tail(self.log)}")

    def wait_done(self, timeout_s: float) -> bool:
        """Until the probe ended by itself (every job done, or its own timeout)."""
        return self.finished.wait(max(0.0, timeout_s))

    def stop(self) -> None:
        """Stop the probe and what it started (``rabbitmqctl``): its whole process group."""
        stop(self._proc, grace_s=5)
        self._reader.join(timeout=5)


def figures(
    samples: Sequence[tuple[float, float, int]],
    first_ends: Sequence[float],
    first_start: float | None,
    n: int,
    interval_s: float,
) -> DurableFigures:
    """Combine probe samples with the executions' end times (the first run of each job).

    A sample is ``(before, after, done)``: its count's snapshot lies between the two times,
    so the unrecorded jobs at that snapshot were at least executed(before) - done and at most
    executed(after) - done (see the module docstring). The acked-unrun figure takes the
    side that cannot overstate it, executed(after)."""
    ends = sorted(first_ends)
    unrecorded, unrecorded_at, unrun, high, longest = 0, None, 0, 0, 0.0
    done_at: float | None = None
    series = []
    for before, at, done in samples:
        surely = bisect.bisect_right(ends, before)
        executed = bisect.bisect_right(ends, at)
        longest = max(longest, at - before)
        if first_start is not None:
            series.append((round(at - first_start, 3), executed, done))
        if surely - done > unrecorded:
            unrecorded, unrecorded_at = surely - done, before
        high = max(high, executed - done)
        unrun = max(unrun, done - executed)
        if done >= n and done_at is None:
            done_at = at
    all_durable = done_at is not None and len(ends) >= n
    seconds, below = None, None
    if all_durable and done_at is not None and first_start is not None:
        seconds = max(done_at, ends[-1]) - first_start
    elif samples and first_start is not None and samples[-1][1] > first_start:
        below = n / (samples[-1][1] - first_start)
    return DurableFigures(
        samples=len(samples),
        interval_s=interval_s,
        all_durable=all_durable,
        seconds=seconds,
        jobs_per_s=n / seconds if seconds else None,
        unrecorded_peak=unrecorded,
        unrecorded_peak_at_s=(
            unrecorded_at - first_start if unrecorded_at and first_start is not None else None
        ),
        acked_unrun_peak=unrun,
        done_at_end=samples[-1][2] if samples else 0,
        below_jobs_per_s=below,
        series=tuple(series),
        unrecorded_peak_high=high,
        longest_read_s=round(longest, 4),
    )


def unrecorded_range(durability: DurableFigures | None) -> str:
    """``low-high`` (the two bounds of the peak, see the module docstring), one number if equal."""
    if durability is None:
        return "-"
    low, high = durability.unrecorded_peak, max(durability.unrecorded_peak_high, 0)
    return f"{low:,}" if high <= low else f"{low:,}-{high:,}"
