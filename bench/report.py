"""Print the results as a table and write them to ``bench/results/latest.json``.

The JSON holds every figure plus what is needed to judge it later: the machine (cores,
Python), the settings and package/server versions of each system, the plan and a timestamp.
It is written to a ``.tmp`` file and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import machine
from bench.durable import unrecorded_range
from bench.http_submit import HttpFigures
from bench.measure import Plan, SystemResult

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


COLUMNS = (
    ("system", "left"),
    ("enqueue\nsingle/s", "right"),
    ("enqueue\nbatch/s", "right"),
    ("drain durable\njobs/s", "right"),
    ("drain executed\njobs/s", "right"),
    ("unrecorded\npeak", "right"),
    ("drain\nN", "right"),
    ("lost", "right"),
    ("dup", "right"),
    ("latency\np50 ms", "right"),
    ("latency\np99 ms", "right"),
    ("woken\np50 ms", "right"),
    ("CPU busy\nbefore", "right"),
)
CAPTION = (
    "drain durable: jobs / (first start -> last completion durable in the system's store); "
    "executed: jobs / (first start -> last handler end); unrecorded peak: most jobs run but "
    "not yet durably done at one sample (a crash re-runs them), 'a-b': at least a (run before "
    "the count began), at most b (run before it returned); '< x': not all durable "
    "when the drain timed out.\n"
    "latency: idle workers, from the enqueue's call to the job's start; woken: from the "
    "enqueue's return (Conveyor: its commit; a peer: what its client waits for) to its start.\n"
    "lost/dup: over the drain and latency phases; '?' = timed out (late or lost, cannot tell). "
    "CPU busy before: the share of both cores others used just before the system ran."
)


def _row(r: SystemResult) -> list[str]:
    phases = [f for f in (r.drain, r.latency) if f is not None]
    losses = [f.lost for f in phases]
    lost = "?" if None in losses else str(sum(x for x in losses if x is not None))
    executed = _num(r.drain.jobs_per_s if r.drain else None)
    durability = r.drain.durable if r.drain else None
    drain = _num(durability.jobs_per_s if durability else None)
    if durability and durability.jobs_per_s is None and durability.below_jobs_per_s:
        drain = f"< {durability.below_jobs_per_s:,.0f}"  # not all durable when it ended
    if r.drain and r.drain.timed_out:
        drain += " (timeout)"
    return [
        r.label,
        _num(r.enqueue_single.jobs_per_s if r.enqueue_single else None),
        _num(r.enqueue_batch.jobs_per_s if r.enqueue_batch else None),
        drain,
        executed,
        unrecorded_range(durability),
        _num(r.drain.n if r.drain else None),
        lost if phases else "-",
        str(sum(f.duplicated for f in phases)) if phases else "-",
        _num(r.latency.p50_ms if r.latency else None, 1),
        _num(r.latency.p99_ms if r.latency else None, 1),
        _num(r.latency.accepted_p50_ms if r.latency else None, 1),
        "-" if r.cpu_busy_before is None else f"{r.cpu_busy_before:.0%}",
    ]


def table(results: list[SystemResult], rounds: int = 1) -> Table:
    errors = [f"{r.name} FAILED: {r.error.splitlines()[0]}" for r in results if r.error]
    medians = f", median of {rounds} rounds" if rounds > 1 else ""
    out = Table(
        title=f"No-op jobs, 2 worker processes, this machine{medians}",
        caption="\n".join([CAPTION, *errors]),
    )
    for header, justify in COLUMNS:
        out.add_column(header, justify="right" if justify == "right" else "left", no_wrap=True)
    for r in results:
        out.add_row(*_row(r))
    return out


def print_table(results: list[SystemResult], rounds: int = 1) -> None:
    # Not a terminal (make, CI, a pipe): rich would assume 80 columns and wrap every cell.
    Console(width=None if sys.stdout.isatty() else 150).print(table(results, rounds))


def http_table(figures: list[HttpFigures], source: str) -> Table:
    out = Table(
        title=f"HTTP submits, one conveyor api process{source} (wrk)",
        caption="CPU: the API process's utime + stime per request. xacts: database "
        "transactions per request (PostgreSQL; rollbacks of them in brackets).",
    )
    for header in ("store", "scenario", "conns", "requests/s", "jobs/s", "p50 ms", "p99 ms"):
        out.add_column(header, justify="left" if header in {"store", "scenario"} else "right")
    out.add_column("CPU ms/req", justify="right")
    out.add_column("xacts/req", justify="right")
    out.add_column("non-2xx", justify="right")
    out.add_column("CPU busy\nbefore", justify="right")
    for f in figures:
        xacts = "-"
        if f.xacts_per_request is not None and f.rollbacks_per_request is not None:
            xacts = f"{f.xacts_per_request:.1f} ({f.rollbacks_per_request:.1f})"
        out.add_row(
            f.store,
            f.scenario,
            str(f.connections),
            _num(f.requests_per_s),
            _num(f.jobs_per_s),
            _num(f.p50_ms, 1),
            _num(f.p99_ms, 1),
            _num(f.server_cpu_ms_per_request, 2),
            xacts,
            str(f.non_2xx + f.socket_errors),
            "-" if f.cpu_busy_before is None else f"{f.cpu_busy_before:.0%}",
        )
    return out


def targets_table(rows: list[tuple[str, str, str]]) -> Table:
    out = Table(title="Issue #12 targets, this run")
    out.add_column("figure")
    out.add_column("measured", justify="right")
    out.add_column("goal", justify="right")
    for row in rows:
        out.add_row(*row)
    return out


def print_tables(tables: list[Table]) -> None:
    console = Console(width=None if sys.stdout.isatty() else 150)
    for item in tables:
        console.print(item)


def to_json(
    results: list[SystemResult],
    plan: Plan,
    started: datetime,
    elapsed_s: float,
    extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "timestamp": started.astimezone(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine.describe(),
        "plan": dataclasses.asdict(plan),
        "command": " ".join(["python -m bench.run", *sys.argv[1:]]),
        "systems": {r.name: dataclasses.asdict(r) for r in results},
        **(extras or {}),
    }


def write_json(document: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def now() -> datetime:
    return datetime.now(UTC)


def num(value: float | int | None, fmt: str = ",.0f") -> str:
    """A table cell: `value` formatted, or "-" when there is none."""
    return "-" if value is None else format(value, fmt)
