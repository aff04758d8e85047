"""The three measurements, identical for every system.

* **enqueue** (workers stopped): ``single_n`` jobs one call each; then, as the drain's
  pre-fill, ``drain_n`` jobs in batches of ``batch_size``. Rate = jobs / client-side seconds.
* **drain**: with the queue pre-filled, start the workers and wait until every job has a
  record *and* the system's store holds every job as durably done (bench/durable.py: sampled
  every 0.1 s during the drain); executed rate = completed / (last end - first start), so
  worker boot is not counted; durable rate = jobs / (first start -> last completion durable).
  Lost = indices never recorded, duplicated = executions beyond the first. After a timeout
  the unrecorded jobs are reported as ``not_run`` and ``lost`` is unknown (None).
* **latency**: workers started and warmed up (a few jobs run, then a pause so they are idle),
  then ``latency_n`` jobs one at a time ``gap_ms`` apart; latency = start - enqueue time of
  each job's first execution; p50 and p99 by the nearest-rank method.

Each phase stops its workers in a ``finally``; the caller's ``teardown`` stops them again.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import durable, machine
from bench.durable import DurableFigures
from bench.procs import BenchError
from bench.rundir import RunDir
from bench.systems import PROBE_INTERVAL_S, EnqueueTiming, System

WARMUP_START = 1_000_000  # warm-up job indices, outside every measured range
DUPLICATE_GRACE_S = 0.5  # after the last job, how long late duplicates may still land
IDLE_PAUSE_S = 1.0
PROBE_START_TIMEOUT_S = 20.0  # the probe's first read (rabbitmqctl boots an Erlang VM)


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to do."""

    single_n: int = 2_000
    batch_size: int = 500
    drain_n: int | None = None  # None: each system's own size (System.drain_n)
    drain_timeout_s: float = 90.0
    latency_n: int = 200
    gap_ms: float = 20.0
    warmup_n: int = 10
    ready_timeout_s: float = 60.0
    latency_timeout_s: float = 30.0
    n_processes: int = 2
    quiet_threshold: float = 0.25  # before each system, wait for others' CPU use below this
    quiet_wait_s: float = 20.0  # ... but no longer than this

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            single_n=300,
            drain_n=2_000,
            drain_timeout_s=45.0,
            latency_n=50,
            warmup_n=5,
            quiet_wait_s=5.0,
        )


@dataclass(frozen=True)
class EnqueueFigures:
    n: int
    seconds: float
    jobs_per_s: float

    @classmethod
    def of(cls, timing: EnqueueTiming) -> EnqueueFigures:
        return cls(timing.n, timing.seconds, timing.n / timing.seconds if timing.seconds else 0.0)


@dataclass(frozen=True)
class DrainFigures:
    n: int
    completed: int
    not_run: int  # no record when the phase ended
    lost: int | None  # = not_run, or None after a timeout (late or lost: cannot tell)
    duplicated: int
    seconds: float  # first start to last end
    jobs_per_s: float  # executed rate
    timed_out: bool
    durable: DurableFigures | None = None


@dataclass(frozen=True)
class LatencyFigures:
    n: int
    gap_ms: float
    completed: int
    not_run: int
    lost: int | None
    duplicated: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    timed_out: bool
    # From the enqueue's return (Conveyor: its commit) to the job's start: the wake-up
    # path alone, without the enqueue's own durable write (which p50_ms includes).
    accepted_p50_ms: float | None = None
    accepted_p99_ms: float | None = None


@dataclass
class SystemResult:
    name: str
    label: str
    settings: dict[str, Any]
    versions: dict[str, Any] = field(default_factory=dict)
    enqueue_single: EnqueueFigures | None = None
    enqueue_batch: EnqueueFigures | None = None
    drain: DrainFigures | None = None
    latency: LatencyFigures | None = None
    error: str | None = None
    elapsed_s: float = 0.0
    cpu_busy_before: float | None = None  # share of the cores others used just before


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _say(system: System, message: str) -> None:
    print(f"bench: {system.name}: {message}", file=sys.stderr, flush=True)


def enqueue_single(system: System, plan: Plan) -> EnqueueFigures:
    figures = EnqueueFigures.of(system.enqueue(plan.single_n, "single"))
    _say(system, f"enqueue single: {figures.n} jobs, {figures.jobs_per_s:,.0f}/s")
    return figures


def drain(system: System, plan: Plan, run_dir: Path) -> tuple[EnqueueFigures, DrainFigures]:
    """Pre-fill in batches (timed: the batch enqueue rate), then drain with the workers."""
    n = plan.drain_n or system.drain_n
    batch = EnqueueFigures.of(system.enqueue(n, "batch", batch_size=plan.batch_size))
    _say(system, f"enqueue batch: {n} jobs, {batch.jobs_per_s:,.0f}/s; draining ...")
    system.settle()
    records = RunDir(run_dir)
    expected = range(n)
    probe = system.probe(n, plan.drain_timeout_s + 10, run_dir.parent / "probe-stderr.txt")
    try:
        probe.wait_first(PROBE_START_TIMEOUT_S)
        deadline = time.monotonic() + plan.drain_timeout_s
        system.start_workers(run_dir, plan.n_processes)
        try:
            done = records.wait_for(expected, plan.drain_timeout_s, system.check_workers)
            probe.wait_done(deadline - time.monotonic())
            time.sleep(DUPLICATE_GRACE_S)
        finally:
            system.stop_workers()
    finally:
        probe.stop()
    records.poll()
    tally = records.account(expected)
    runs = [e for e in records.executions if e.index in expected]
    first_start = min(e.start for e in runs) if runs else None
    span = (max(e.end for e in runs) - min(e.start for e in runs)) if runs else 0.0
    first_ends = [e.end for e in records.first_runs(expected).values()]
    durability = durable.figures(probe.samples, first_ends, first_start, n, PROBE_INTERVAL_S)
    figures = DrainFigures(
        n=n,
        completed=tally.completed,
        not_run=tally.lost,
        lost=None if not done else tally.lost,
        duplicated=tally.duplicated,
        seconds=span,
        jobs_per_s=tally.completed / span if span > 0 else 0.0,
        timed_out=not done or not durability.all_durable,
        durable=durability,
    )
    bound = durability.below_jobs_per_s or 0.0
    durable_text = (
        f"{durability.jobs_per_s:,.0f} jobs/s"
        if durability.jobs_per_s
        else f"{durability.done_at_end:,} of {n} by the end (< {bound:,.0f} jobs/s)"
    )
    _say(
        system,
        f"drain: executed {figures.jobs_per_s:,.0f} jobs/s, durable {durable_text}, "
        f"unrecorded peak {durability.unrecorded_peak}-{durability.unrecorded_peak_high}"
        f" (longest count {durability.longest_read_s * 1000:.1f} ms)"
        f", not run {tally.lost}, dup {tally.duplicated}"
        + (" (TIMED OUT)" if figures.timed_out else ""),
    )
    return batch, figures


def latency(system: System, plan: Plan, run_dir: Path) -> LatencyFigures:
    """Idle workers, one job at a time: how long from enqueue to start, and from the
    enqueue's return (the job accepted) to start."""
    records = RunDir(run_dir)
    expected = range(plan.latency_n)
    warmup = range(WARMUP_START, WARMUP_START + plan.warmup_n)
    system.start_workers(run_dir, plan.n_processes)
    try:
        system.trickle(plan.warmup_n, 50.0, start=WARMUP_START)
        if not records.wait_for(warmup, plan.ready_timeout_s, system.check_workers):
            raise BenchError(f"{system.name}: warm-up jobs not run within {plan.ready_timeout_s}s")
        time.sleep(IDLE_PAUSE_S)
        sent = system.trickle(plan.latency_n, plan.gap_ms, start=0)
        done = records.wait_for(expected, plan.latency_timeout_s, system.check_workers)
        time.sleep(DUPLICATE_GRACE_S)
    finally:
        system.stop_workers()
    records.poll()
    tally = records.account(expected)
    first = records.first_runs(expected)
    values = sorted((run.start - sent.enqueued_at[i]) * 1000 for i, run in first.items())
    woken = sorted((run.start - sent.accepted_at[i]) * 1000 for i, run in first.items())
    figures = LatencyFigures(
        n=plan.latency_n,
        gap_ms=plan.gap_ms,
        completed=tally.completed,
        not_run=tally.lost,
        lost=None if not done else tally.lost,
        duplicated=tally.duplicated,
        p50_ms=percentile(values, 50) if values else None,
        p99_ms=percentile(values, 99) if values else None,
        max_ms=values[-1] if values else None,
        timed_out=not done,
        accepted_p50_ms=percentile(woken, 50) if woken else None,
        accepted_p99_ms=percentile(woken, 99) if woken else None,
    )
    _say(
        system,
        f"latency: p50 {figures.p50_ms or 0:.1f} ms, p99 {figures.p99_ms or 0:.1f} ms; from "
        f"the enqueue's return p50 {figures.accepted_p50_ms or 0:.1f} ms, p99 "
        f"{figures.accepted_p99_ms or 0:.1f} ms",
    )
    return figures


def measure(system: System, plan: Plan, work_dir: Path) -> SystemResult:
    """All measurements for one system; an error is recorded and the system torn down."""
    result = SystemResult(system.name, system.label, system.settings(plan.n_processes))
    result.cpu_busy_before = machine.wait_quiet(plan.quiet_threshold, plan.quiet_wait_s)
    started = time.monotonic()
    try:
        _say(system, "setup")
        system.setup()
        result.versions = system.versions()
        result.enqueue_single = enqueue_single(system, plan)
        system.purge()
        if getattr(system, "measures_drain", True):
            result.enqueue_batch, result.drain = drain(system, plan, work_dir / "drain")
            system.purge()
        result.latency = latency(system, plan, work_dir / "latency")
    except BenchError as exc:
        result.error = str(exc)
        _say(system, f"FAILED: {exc}")
    finally:
        system.teardown()
        result.elapsed_s = time.monotonic() - started
    return result
