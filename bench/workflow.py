"""Workflows' figures (issue #16): ``python -m bench.run --only workflow``.

``n`` steps (10,000 in the full run: Conveyor's maximum per workflow, ``MAX_STEPS``): a
fan-out of ``n - 1`` no-op steps followed by one join, 2 worker processes as in the drains,
in the same run:

* **Conveyor** on PostgreSQL and on SQLite, each a fresh database: one workflow of ``n``
  ``bench_noop`` steps and a join step depending on all of them, submitted through the service
  (bench/workflow_client.py) once the workers are up; seconds = submit -> the join's row read
  committed ``completed``; steps/s = n / seconds. Beside it, the **plain drain** of ``n``
  ``bench_noop`` jobs on the same database (bench/measure.py ``drain``, by durable
  completion): "of plain" = the workflow's steps/s / the drain's jobs/s.
* **Celery** chord (bench/peers/celery_chord.py): ``n - 1`` no-op tasks and a callback, Redis
  broker and Redis result backend (the bench's Redis db), prefork pool of 2, prefetch 64 as
  the bench's Celery; seconds = ``apply_async`` -> the callback's result stored.

"vs Celery" = a row's steps/s / the chord's. Issue #16's goals: >= 5x Celery, >= 70 % of plain.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from bench import machine, peers_venv
from bench.conveyor_systems import ConveyorSystem
from bench.measure import Plan, drain
from bench.procs import BenchError, run_json
from bench.report import num
from bench.systems import CELERY_REDIS_URL, CelerySystem

DATABASES = ("postgres", "sqlite")
FULL_N = 10_000
TIMEOUT_S = 600.0


class ChordSystem(CelerySystem):
    """The bench's Celery on Redis, its worker serving the chord app's queue."""

    def __init__(self) -> None:
        super().__init__("celery-chord", "Celery chord + Redis", CELERY_REDIS_URL, FULL_N)

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
    vs_celery: float | None = None
    error: str | None = None


def _say(message: str) -> None:
    print(f"bench: workflow: {message}", file=sys.stderr, flush=True)


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
    try:
        system.setup()
        machine.wait_quiet(plan.quiet_threshold, plan.quiet_wait_s)
        _, plain = drain(system, dataclasses.replace(plan, drain_n=n), work / database / "drain")
        figures.plain_jobs_per_s = plain.durable.jobs_per_s if plain.durable else None
        system.purge()
        machine.wait_quiet(plan.quiet_threshold, plan.quiet_wait_s)
        argv = [sys.executable, "-m", "bench.workflow_client"]
        result = _timed(system, argv, plan, n - 1, work / database / "workflow")
        figures.seconds, figures.submit_s = float(result["seconds"]), float(result["submit_s"])
        figures.steps_per_s = n / figures.seconds
        if figures.plain_jobs_per_s:
            figures.of_plain = figures.steps_per_s / figures.plain_jobs_per_s
    except BenchError as exc:
        figures.error = str(exc)
        _say(f"conveyor {database}: FAILED: {exc}")
    finally:
        system.teardown()
    return figures


def _celery(plan: Plan, n: int, work: Path) -> WorkflowFigures:
    system = ChordSystem()
    figures = WorkflowFigures("Celery chord", "redis", n)
    try:
        peers_venv.ensure_peers_venv()
        system.setup()
        machine.wait_quiet(plan.quiet_threshold, plan.quiet_wait_s)
        argv = [str(peers_venv.venv_bin("python")), "-m", "bench.peers.celery_chord"]
        result = _timed(system, argv, plan, n - 1, work / "celery")
        if result.get("join_result") != n - 1:
            raise BenchError(f"the callback got {result.get('join_result')} results, not {n - 1}")
        figures.seconds, figures.submit_s = float(result["seconds"]), float(result["submit_s"])
        figures.steps_per_s = n / figures.seconds
    except (BenchError, OSError) as exc:
        figures.error = str(exc)
        _say(f"celery: FAILED: {exc}")
    finally:
        system.teardown()
    return figures


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
            _say(f"{rows[-1]}")
    if celery:
        rows.append(_celery(plan, n, work))
        _say(f"{rows[-1]}")
        chord = rows[-1].steps_per_s
        for row in rows:
            if chord and row.steps_per_s:
                row.vs_celery = row.steps_per_s / chord
    return rows


def table(rows: list[WorkflowFigures]) -> Table:
    out = Table(
        title="Workflows: a fan-out of n - 1 no-op steps and one join (2 worker processes)",
        caption="seconds: submit -> the join durably completed (Conveyor: its row committed; "
        "Celery: the callback's result stored). of plain: steps/s / the plain drain of n "
        "jobs by durable completion, same database. vs Celery: steps/s / the chord's.",
    )
    for header in ("system", "store"):
        out.add_column(header)
    for header in ("steps", "seconds", "submit s", "steps/s", "plain jobs/s"):
        out.add_column(header, justify="right")
    for header in ("of plain", "vs Celery"):
        out.add_column(header, justify="right")
    out.add_column("note")
    for r in rows:
        out.add_row(
            r.system,
            r.store,
            num(r.steps),
            num(r.seconds, ",.2f"),
            num(r.submit_s, ",.2f"),
            num(r.steps_per_s),
            num(r.plain_jobs_per_s),
            num(r.of_plain, ".0%"),
            num(r.vs_celery, ".1f") + ("x" if r.vs_celery else ""),
            r.error or "",
        )
    return out


def as_json(rows: list[WorkflowFigures]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(r) for r in rows]
