"""Flow control's figures (issue #15): ``python -m bench.run --only flow``.

For each database (PostgreSQL and SQLite, in the same run), each a fresh database and the
drain's settings (bench/measure.py ``drain``: pre-filled, then 2 workers of concurrency 64,
measured by durable completion):

* **plain**: ``bench_noop`` with fair dispatch off (``CONVEYOR_FAIR_DISPATCH=false``): one
  order by priority and due time, as before issue #15; the baseline of the ratios.
* **fair**: ``bench_fair``, the same no-op spread over 1,000 tenants (``payload.tenant``, its
  fair key), fair dispatch on.
* **limited**: ``bench_limited``, as ``fair`` and at most 2 running per tenant
  (``Concurrency("bench_tenant", 2, key="payload.tenant")``). Labelled ``limit not
  enforced`` when the store recorded no limit key for the jobs (a build whose claim ignores
  limits): its rate is then not a limited drain's.
* **idle latency** of each of those three, after its drain, on the same database: the
  workers idle, then jobs of its kind one at a time 20 ms apart (bench/measure.py
  ``latency``): p50 from the enqueue's call, and from its return (the wake-up to start).
  Issue #15 asks it to stay as it was with fair dispatch and limits on.
* **starvation**: tenant A's burst (``drain_n`` jobs, 10,000 in the full run) then tenant B's
  10, queued before the workers start; the worst start of B's jobs in claims (how many jobs
  started before B's last, from the execution records) and in ms after the drain's first
  start, FIFO (fair dispatch off) and fair.

``--conveyor-src PATH`` (repeatable) runs each drain from each tree in turn, ``--rounds N``
alternates the trees N times (A, B, A, B: a passing load spreads over both), and
``--databases`` / ``--scenarios`` narrow the run (an A/B of one drain on one database). Each
row's ``of plain`` is against the plain drain of its own tree, database and round.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from rich.table import Table

from bench import section
from bench.conveyor_handlers import FLOW_ENV, STARVE_B_FROM_ENV
from bench.conveyor_systems import ConveyorSystem
from bench.measure import Plan, latency
from bench.procs import BenchError
from bench.report import num
from bench.rundir import RunDir

PART = "flow"
DATABASES = ("postgres", "sqlite")
B_JOBS = 10
STARVE_A_FULL = 10_000


@dataclass(frozen=True)
class Scenario:
    name: str
    flow: str  # BENCH_FLOW: the job type and its tenants (bench/conveyor_handlers.py)
    fair: bool  # CONVEYOR_FAIR_DISPATCH


PLAIN = Scenario("plain", "", fair=False)
FAIR = Scenario("fair", "fair", fair=True)
LIMITED = Scenario("limited", "limited", fair=True)
STARVE_FIFO = Scenario("starve FIFO", "starve", fair=False)
STARVE_FAIR = Scenario("starve fair", "starve", fair=True)


class FlowSystem(ConveyorSystem):
    """Conveyor on one database, its client and workers told the scenario."""

    def __init__(
        self,
        database: str,
        scenario: Scenario,
        b_from: int | None = None,
        source: Path | None = None,
    ) -> None:
        super().__init__(database, source)
        self.scenario, self.b_from = scenario, b_from
        self.name += f" {scenario.name}"
        self.limit_keys: int | None = None  # stored for the queued jobs (limited only)

    def settle(self) -> None:
        """After the pre-fill, before the workers start: also count the limit keys."""
        super().settle()
        if self.scenario is LIMITED:
            self.limit_keys = self.limit_keys_recorded()

    def extra_env(self) -> dict[str, str]:
        env = super().extra_env()
        env[FLOW_ENV] = self.scenario.flow
        env["CONVEYOR_FAIR_DISPATCH"] = "true" if self.scenario.fair else "false"
        if self.b_from is not None:
            env[STARVE_B_FROM_ENV] = str(self.b_from)
        return env

    def limit_keys_recorded(self) -> int:
        """How many limit keys the store holds for the queued jobs (0: limits not applied)."""
        query = "SELECT count(*) FROM job_limits"
        if self.database == "sqlite":
            with sqlite3.connect(self.database_url.split(":///", 1)[1]) as conn:
                return int(conn.execute(query).fetchone()[0])
        return asyncio.run(_pg_count(self.database_url, query))


async def _pg_count(url: str, query: str) -> int:
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


@dataclass
class FlowFigures:
    database: str
    scenario: str
    n: int
    tree: str = ""  # --conveyor-src: the tree's directory name ("" = this tree)
    round: int = 1
    durable_jobs_per_s: float | None = None
    executed_jobs_per_s: float | None = None
    of_plain: float | None = None  # durable rate / the plain drain's, same database
    b_worst_claims: int | None = None  # starvation: jobs started before B's last start
    b_worst_ms: float | None = None  # ... and B's last start after the drain's first start
    idle_p50_ms: float | None = None  # idle latency from the enqueue's call
    idle_p99_ms: float | None = None
    woken_p50_ms: float | None = None  # ... and from its return: the wake-up to start
    note: str = ""
    error: str | None = None


def _starvation(run_dir: Path, b_from: int) -> tuple[int, float]:
    """(jobs started before B's last start, ms from the first start to it), from records."""
    records = RunDir(run_dir)
    records.poll()
    starts = sorted((e.start, e.index) for e in records.executions)
    b_positions = [n for n, (_, index) in enumerate(starts, start=1) if index >= b_from]
    if len(b_positions) < B_JOBS:
        raise BenchError(f"only {len(b_positions)} of tenant B's {B_JOBS} jobs ran")
    last = b_positions[-1]
    return last - 1, (starts[last - 1][0] - starts[0][0]) * 1000


def _one(
    database: str,
    scenario: Scenario,
    plan: Plan,
    n: int,
    work: Path,
    b_from: int | None,
    source: Path | None = None,
    round_no: int = 1,
) -> FlowFigures:
    tree = source.resolve().name if source is not None else ""
    figures = FlowFigures(database, scenario.name, n, tree, round_no)
    system = FlowSystem(database, scenario, b_from, source)
    name = f"{database}-{scenario.name.replace(' ', '-')}-{tree or 'own'}-{round_no}"
    run_dir = work / name / "drain"

    def body() -> None:
        result = section.drain_of(system, plan, n, run_dir)
        figures.durable_jobs_per_s = section.durable_rate(result)
        figures.executed_jobs_per_s = result.jobs_per_s
        if result.timed_out:
            figures.note = "TIMED OUT"
        if scenario is LIMITED:
            keys = system.limit_keys
            figures.note = figures.note or (
                "limit not enforced (no limit keys stored)" if not keys else f"{keys:,} keys"
            )
        if b_from is not None:
            figures.b_worst_claims, figures.b_worst_ms = _starvation(run_dir, b_from)
        else:  # the drain's jobs are done: the same kind of job, one at a time
            system.purge()
            idle = latency(system, plan, work / name / "latency")
            figures.idle_p50_ms, figures.idle_p99_ms = idle.p50_ms, idle.p99_ms
            figures.woken_p50_ms = idle.accepted_p50_ms

    section.measure(PART, system, figures, plan, body)
    return figures


SCENARIOS = {s.name: s for s in (PLAIN, FAIR, LIMITED, STARVE_FIFO, STARVE_FAIR)}


def run(
    plan: Plan,
    work: Path,
    quick: bool,
    sources: Sequence[Path | None] = (None,),
    rounds: int = 1,
    databases: Sequence[str] = DATABASES,
    scenarios: Sequence[str] = tuple(SCENARIOS),
) -> list[FlowFigures]:
    """The scenarios on each database (the databases in the same run), each round every
    source tree in turn; the drains' ``of plain`` against the same tree's and round's."""
    n = plan.drain_n or FlowSystem.drain_n
    burst = n if quick else STARVE_A_FULL
    chosen = [SCENARIOS[name] for name in scenarios]
    out: list[FlowFigures] = []
    for database in databases:
        for round_no in range(1, rounds + 1):
            for source in sources:
                out.extend(_tree(database, chosen, plan, n, burst, work, source, round_no))
    return out


def _tree(
    database: str,
    chosen: list[Scenario],
    plan: Plan,
    n: int,
    burst: int,
    work: Path,
    source: Path | None,
    round_no: int,
) -> list[FlowFigures]:
    out: list[FlowFigures] = []
    plain: float | None = None
    for scenario in chosen:
        starve = scenario in (STARVE_FIFO, STARVE_FAIR)
        size, b_from = (burst + B_JOBS, burst) if starve else (n, None)
        figures = _one(database, scenario, plan, size, work, b_from, source, round_no)
        if scenario is PLAIN:
            plain = figures.durable_jobs_per_s
        elif not starve and plain and figures.durable_jobs_per_s:
            figures.of_plain = figures.durable_jobs_per_s / plain
        out.append(figures)
        section.say(PART, f"{database} {scenario.name}: {figures}")
    return out


def table(rows: list[FlowFigures]) -> Table:
    return section.table(
        "Flow control: drains by durable completion (2 workers x 64), and starvation",
        "of plain: durable rate / the plain drain's on the same database. B worst: "
        "tenant B's 10 jobs queued after A's burst; jobs started before B's last, and its "
        "start in ms after the drain's first start. idle p50 / p99: after the drain, "
        "jobs of its kind one at a time 20 ms apart, from the enqueue's call to the start; "
        "woken: from the enqueue's return.",
        COLUMNS,
        rows,
    )


COLUMNS: tuple[section.Column[FlowFigures], ...] = (
    section.Column("store", lambda r: r.database, left=True),
    section.Column("scenario", lambda r: r.scenario, left=True),
    section.Column("tree", lambda r: f"{r.tree} #{r.round}" if r.tree else "", left=True),
    section.Column("jobs", lambda r: num(r.n)),
    section.Column("durable jobs/s", lambda r: num(r.durable_jobs_per_s)),
    section.Column("executed jobs/s", lambda r: num(r.executed_jobs_per_s)),
    section.Column("of plain", lambda r: num(r.of_plain, ".0%")),
    section.Column("B worst (claims)", lambda r: num(r.b_worst_claims)),
    section.Column("B worst (ms)", lambda r: num(r.b_worst_ms, ",.1f")),
    section.Column(
        "idle p50 / p99 ms", lambda r: f"{num(r.idle_p50_ms, '.1f')} / {num(r.idle_p99_ms, '.1f')}"
    ),
    section.Column("woken p50 ms", lambda r: num(r.woken_p50_ms, ".1f")),
    section.Column("note", lambda r: r.error or r.note, left=True),
)
