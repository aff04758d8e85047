"""What the benches of one part (bench/flow.py, bench/workflow.py: ``python -m bench.run
--only flow|workflow``) share: a system set up on a fresh store and torn down whatever
happens, a quiet machine before each measurement, a drain of a given size, their log lines,
their table and their JSON. bench/run.py writes their results (``run_part``)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from rich.table import Table

from bench import machine
from bench.measure import DrainFigures, EnqueueFigures, Plan, drain
from bench.procs import BenchError
from bench.systems import System

R = TypeVar("R")


class Figures(Protocol):
    """A row of a part's results: what failed, if anything."""

    error: str | None


def say(part: str, message: str) -> None:
    print(f"bench: {part}: {message}", file=sys.stderr, flush=True)


def quiet(plan: Plan) -> None:
    """Wait for the machine to be quiet (the plan's threshold), as every measurement does."""
    machine.wait_quiet(plan.quiet_threshold, plan.quiet_wait_s)


def measure(
    part: str,
    system: System,
    figures: Figures,
    plan: Plan,
    body: Callable[[], None],
    failures: tuple[type[Exception], ...] = (BenchError,),
) -> None:
    """`system` set up (Conveyor: a fresh database) on a quiet machine, then `body`; a
    failure of the kinds `failures` (in the set-up too) becomes `figures.error` and a log
    line, so the part goes on, and the system is torn down in every case."""
    try:
        system.setup()
        quiet(plan)
        body()
    except failures as exc:
        figures.error = str(exc)
        say(part, f"{system.name}: FAILED: {exc}")
    finally:
        system.teardown()


def drain_of(system: System, plan: Plan, n: int, run_dir: Path) -> DrainFigures:
    """A drain of `n` jobs with the plan's settings (bench/measure.py ``drain``)."""
    return filled_and_drained(system, plan, n, run_dir)[1]


def filled_and_drained(
    system: System, plan: Plan, n: int, run_dir: Path
) -> tuple[EnqueueFigures, DrainFigures]:
    """The same drain, with its timed pre-fill (`n` jobs submitted in the plan's batches)."""
    return drain(system, dataclasses.replace(plan, drain_n=n), run_dir)


def durable_rate(figures: DrainFigures) -> float | None:
    """Jobs/s by durable completion (None: the probe saw no completion)."""
    return figures.durable.jobs_per_s if figures.durable else None


@dataclass(frozen=True)
class Column(Generic[R]):
    """One column of a part's table: its header, a row's cell, and its side."""

    header: str
    cell: Callable[[R], str]
    left: bool = False


def table(title: str, caption: str, columns: Sequence[Column[R]], rows: Sequence[R]) -> Table:
    out = Table(title=title, caption=caption)
    for column in columns:
        out.add_column(column.header, justify="left" if column.left else "right")
    for row in rows:
        out.add_row(*(column.cell(row) for column in columns))
    return out


def as_json(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The rows (dataclasses) as JSON objects, for bench/results."""
    return [dataclasses.asdict(r) for r in rows]
