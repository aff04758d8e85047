"""Workflows' figures (issue #16): ``python -m bench.run --only workflow``.

``n`` steps (10,000 in the full run: Conveyor's maximum per workflow, ``MAX_STEPS``): a
fan-out of ``n - 1`` no-op steps followed by one join, 2 worker processes as in the drains,
in the same run:

* **Conveyor** on PostgreSQL and on SQLite, each a fresh database: one workflow of ``n``
  ``bench_noop`` steps and a join step depending on all of them, submitted through the service
  (bench/workflow_client.py) once the workers are up; seconds = submit -> the join's row read
  committed ``completed``; steps/s = n / seconds. Beside it, the **plain drain** of ``n``
  ``bench_noop`` jobs on the same database (bench/measure.py ``drain``, by durable
  completion): "of plain" = the workflow's steps/s / the drain's jobs/s. The plain drain's
  jobs are queued before its clock starts, the workflow's steps are submitted after: so
  the steps' own drain is shown too, "after submit" = n / (seconds - submit s), and its
  share of the plain drain. With the steps drained at the plain rate, "of plain" can be at
  most 1 / (1 + plain jobs/s x submit s / n): the submit's share of the clock bounds it.
  So the plain jobs' own submit is timed too (the drain's pre-fill: ``submit_many`` in
  batches of 500, the service the workflow's submit goes through) and the plain jobs
  "submitted, then drained" = n / (their submit s + their drain s): "of plain + submit" =
  the workflow's steps/s / that, both clocks starting before the first job is stored.
* **Celery** chord (bench/peers/celery_chord.py): ``n - 1`` no-op tasks and a callback, Redis
  broker and Redis result backend (the bench's Redis db), prefork pool of 2, prefetch 64 as
  the bench's Celery; seconds = ``apply_async`` -> the callback's result stored.

"vs Celery" = a row's steps/s / the chord's. Issue #16's goals: >= 5x Celery, >= 70 % of plain.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from bench import peers_venv, section
from bench.conveyor_systems import ConveyorSystem
from bench.measure import Plan
from bench.procs import BenchError, run_json
from bench.report import num
from bench.systems import CELERY_REDIS_URL, CelerySystem

PART = "workflow"
DATABASES = ("postgres", "sqlite")
FULL_N = 10_000
TIMEOUT_S = 600.0


class ChordSystem(CelerySystem):
    """The bench's Celery on Redis, its worker serving the chord app's queue."""

    def __init__(self) -> None:
        super().__init__("celery-chord", "Celery chord + Redis", CELERY_REDIS_URL, FULL_N)

    def setup(self) -> None:
        peers_venv.ensure_peers_venv()  # Celery runs from the peers' venv
        super().setup()

    def worker_argvs(self, n_processes: int) -> list[list[str]]:
        argv = super().worker_argvs(n_processes)[0]
        argv[argv.index("bench.peers.celery_app")] = "bench.peers.celery_chord"
        argv[argv.index("bench_celery")] = "bench_chord"
        return [argv]


@dataclass
class WorkflowFigures:
    system: str
    store: str
    steps: int
    seconds: float | None = None
    steps_per_s: float | None = None
    submit_s: float | None = None  # of which the submit call itself
    plain_jobs_per_s: float | None = None  # Conveyor: the drain of n jobs, same database
    of_plain: float | None = None
    plain_submitted_per_s: float | None = None  # n / (the plain jobs' submit s + drain s)
    of_plain_submitted: float | None = None
    after_submit_per_s: float | None = None  # n / (seconds - submit_s): the steps' drain
    after_submit_of_plain: float | None = None
    vs_celery: float | None = None
    error: str | None = None


def _timed(
    system: ConveyorSystem | ChordSystem, argv: list[str], plan: Plan, n: int, run_dir: Path
) -> dict[str, Any]:
    """Start the workers, run the client (it warms up, submits and waits), stop them."""
    system.start_workers(run_dir, plan.n_processes)
    try:
        timeout = TIMEOUT_S + 60
        args = ["--n", str(n), "--timeout-s", str(TIMEOUT_S)]
        result = run_json([*argv, *args], system.env(run_dir), timeout)
        system.check_workers()
    finally:
        system.stop_workers()
    if result.get("seconds") is None:
        raise BenchError(f"the join did not complete: {result.get('join_state')}")
    return result


def _conveyor(
    database: str, plan: Plan, n: int, work: Path, source: Path | None = None
) -> WorkflowFigures:
    system = ConveyorSystem(database, source)
    name = "Conveyor" if source is None else f"Conveyor @{source.resolve().name}"
    figures = WorkflowFigures(name, database, n)
    work = work if source is None else work / source.resolve().name

    def body() -> None:
        fill, plain = section.filled_and_drained(system, plan, n, work / database / "drain")
        figures.plain_jobs_per_s = section.durable_rate(plain)
        if figures.plain_jobs_per_s and fill.jobs_per_s:
            figures.plain_submitted_per_s = n / (n / fill.jobs_per_s + n / figures.plain_jobs_per_s)
        system.purge()
        section.quiet(plan)
        argv = [sys.executable, "-m", "bench.workflow_client"]
        _timings(figures, _timed(system, argv, plan, n - 1, work / database / "workflow"))
        if figures.steps_per_s and figures.plain_jobs_per_s:
            figures.of_plain = figures.steps_per_s / figures.plain_jobs_per_s
        if figures.steps_per_s and figures.plain_submitted_per_s:
            figures.of_plain_submitted = figures.steps_per_s / figures.plain_submitted_per_s
        if figures.after_submit_per_s and figures.plain_jobs_per_s:
            figures.after_submit_of_plain = figures.after_submit_per_s / figures.plain_jobs_per_s

    section.measure(PART, system, figures, plan, body)
    return figures


def _celery(plan: Plan, n: int, work: Path) -> WorkflowFigures:
    system = ChordSystem()
    figures = WorkflowFigures("Celery chord", "redis", n)

    def body() -> None:
        argv = [str(peers_venv.venv_bin("python")), "-m", "bench.peers.celery_chord"]
        result = _timed(system, argv, plan, n - 1, work / "celery")
        if result.get("join_result") != n - 1:
            raise BenchError(f"the callback got {result.get('join_result')} results, not {n - 1}")
        _timings(figures, result)

    section.measure(PART, system, figures, plan, body, (BenchError, OSError))
    return figures


def _timings(figures: WorkflowFigures, result: dict[str, Any]) -> None:
    """A client's answer (submit -> join done, and the submit alone) into `figures`."""
    figures.seconds, figures.submit_s = float(result["seconds"]), float(result["submit_s"])
    figures.steps_per_s = figures.steps / figures.seconds
    if figures.seconds > figures.submit_s:
        figures.after_submit_per_s = figures.steps / (figures.seconds - figures.submit_s)


def run(
    plan: Plan,
    work: Path,
    quick: bool,
    databases: tuple[str, ...] = DATABASES,
    celery: bool = True,
    sources: Sequence[Path | None] = (None,),
) -> list[WorkflowFigures]:
    """Conveyor on each database (plain drain, then the workflow), from each source tree in
    turn (`--conveyor-src`: an A/B in one sitting), then Celery's chord."""
    n = plan.drain_n or (2_000 if quick else FULL_N)
    rows = []
    for database in databases:
        for source in sources:
            rows.append(_conveyor(database, plan, n, work, source))
            section.say(PART, f"{rows[-1]}")
    if celery:
        rows.append(_celery(plan, n, work))
        section.say(PART, f"{rows[-1]}")
        chord = rows[-1].steps_per_s
        for row in rows:
            if chord and row.steps_per_s:
                row.vs_celery = row.steps_per_s / chord
    return rows


def table(rows: list[WorkflowFigures]) -> Table:
    return section.table(
        "Workflows: a fan-out of n - 1 no-op steps and one join (2 worker processes)",
        "seconds: submit -> the join durably completed (Conveyor: its row committed; "
        "Celery: the callback's result stored). of plain: steps/s / the plain drain of n "
        "jobs by durable completion, same database (its jobs queued before its clock "
        "starts). of plain + submit: steps/s / the plain jobs' rate from their submit "
        "(batches of 500) to their durable completion. after submit: steps / (seconds - "
        "submit s), the steps' own drain. "
        "vs Celery: steps/s / the chord's.",
        COLUMNS,
        rows,
    )


COLUMNS: tuple[section.Column[WorkflowFigures], ...] = (
    section.Column("system", lambda r: r.system, left=True),
    section.Column("store", lambda r: r.store, left=True),
    section.Column("steps", lambda r: num(r.steps)),
    section.Column("seconds", lambda r: num(r.seconds, ",.2f")),
    section.Column("submit s", lambda r: num(r.submit_s, ",.2f")),
    section.Column("steps/s", lambda r: num(r.steps_per_s)),
    section.Column("plain jobs/s", lambda r: num(r.plain_jobs_per_s)),
    section.Column("of plain", lambda r: num(r.of_plain, ".0%")),
    section.Column("of plain + submit", lambda r: num(r.of_plain_submitted, ".0%")),
    section.Column("after submit /s", lambda r: num(r.after_submit_per_s)),
    section.Column("of plain", lambda r: num(r.after_submit_of_plain, ".0%")),
    section.Column("vs Celery", lambda r: num(r.vs_celery, ".1f") + ("x" if r.vs_celery else "")),
    section.Column("note", lambda r: r.error or "", left=True),
)
