"""Large workflows submitted over the API while the database connection is cut (issue
#16): a workflow's submit inserts its steps in slices of 1,000, all in one transaction, so a
cut in the middle of one leaves the whole workflow stored or nothing of it, and every stored
workflow runs to its join, which starts only after each of its dependencies ended."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import asyncpg

from chaos.proxy import Proxy
from chaos.scenarios import Where, finish, up
from chaos.stage import Stage, stage
from chaos.verdict import Execution, Fault, Row

STEPS = 2_000  # each workflow's fan-out, before its join: two slices and more
REFUSED_PAUSE_S = 0.2  # after an error answer (the database is away): not a busy loop
WORKFLOWS = (
    "SELECT w.id, w.state, (SELECT count(*) FROM jobs AS j WHERE j.workflow_id = w.id) AS steps,"
    " (SELECT count(*) FROM job_dependencies AS d WHERE d.workflow_id = w.id) AS edges"
    " FROM workflows AS w"
)
ORPHANS = (
    "SELECT count(*) FROM jobs AS j WHERE j.workflow_id IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM workflows AS w WHERE w.id = j.workflow_id)"
)


@dataclass(frozen=True)
class Flight:
    """One workflow submit: when it was sent and answered, its id if answered 201, and the
    ledger indexes of its steps (the join's last)."""

    start: float
    end: float
    workflow_id: str | None
    indexes: range


async def workflow_cuts(
    where: Where, kind: str, cuts: int = 2, seconds: float = 3.0, steps: int = STEPS
) -> Row:
    """An API, a scheduler and two workers on PostgreSQL through the proxy; workflows of
    `steps` steps and a join submitted one after another while the proxy cuts the
    database connection `cuts` times for `seconds` each, so that submits are cut in the
    middle of their slices. Judged as every scenario (each step is a ledger job), and:
    no workflow is stored in part, every stored one completes, and no join starts before
    each of its dependencies ended."""
    if kind != "postgres":
        raise ValueError("the database cut is a PostgreSQL scenario")
    name = "workflow-cut"
    async with stage(name, kind, where.dir(name, kind), where.pg_admin, where.lease) as s:
        proxy = Proxy(*s.target.host_port)
        url = s.target.via(await proxy.start())
        try:
            await s.start_api(db_url=url)
            procs = [s.fleet.scheduler(s.serial("scheduler"), db_url=url)]
            procs += [s.fleet.worker(s.serial("worker"), 8, db_url=url) for _ in range(2)]
            # Every process at work before the first cut (one starting during it gives up
            # at once: another scenario's question).
            await up(s, procs, "conveyor.scheduler: scheduler ", " started: queues=")
            stop = asyncio.Event()
            submits = asyncio.create_task(_submit_until(s, stop, steps))
            try:
                await asyncio.sleep(1.0)
                for _ in range(cuts):
                    start = time.time()
                    await proxy.set_mode("cut")
                    await asyncio.sleep(seconds)
                    await proxy.set_mode("pass")
                    s.faults.append(Fault("cut", start, time.time()))
                    await asyncio.sleep(2.0)
            finally:
                stop.set()
                flights = await submits
            row = await finish(s, 4 * where.lease + 120)
            await _judge(s, row, steps, flights)
            return row
        finally:
            await proxy.stop()


async def _submit_until(s: Stage, stop: asyncio.Event, steps: int) -> list[Flight]:
    """Workflows one after another until `stop`: each submit sent once its last answered."""
    flights: list[Flight] = []
    async with s.api.client() as http:
        while not stop.is_set():
            start = time.time()
            workflow_id, indexes = await s.submitter.workflow(http, steps)
            flights.append(Flight(start, time.time(), workflow_id, indexes))
            if workflow_id is None:
                await asyncio.sleep(REFUSED_PAUSE_S)
    return flights


async def _judge(s: Stage, row: Row, steps: int, flights: list[Flight]) -> None:
    """The workflow checks, read straight from the database and the handlers' records."""
    conn = await asyncpg.connect(s.target.url, timeout=30)
    try:
        stored = await conn.fetch(WORKFLOWS)
        orphans = int(await conn.fetchval(ORPHANS))
    finally:
        await conn.close()
    whole = [r for r in stored if r["steps"] == steps + 1 and r["edges"] == steps]
    row.partial = len(stored) - len(whole) + orphans
    row.unsettled = sum(1 for r in stored if r["state"] != "completed")
    starts, ends = _firsts(s.executions())
    row.early_joins = sum(_early(f.indexes, starts, ends) for f in flights)
    acked = sum(1 for f in flights if f.workflow_id is not None)
    cut = sum(1 for f in flights if any(f.start < c.start < f.end for c in s.faults))
    row.notes.append(
        f"{len(flights)} submits of {steps + 1:,} steps: {acked} answered 201, "
        f"{len(stored)} stored, {cut} in flight when a cut began"
    )


def _firsts(executions: list[Execution]) -> tuple[dict[int, float], dict[int, float]]:
    """Each index's first start and first end."""
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    for e in executions:
        firsts = starts if e.event == "start" else ends
        firsts[e.index] = min(e.t, firsts.get(e.index, e.t))
    return starts, ends


def _early(indexes: range, starts: dict[int, float], ends: dict[int, float]) -> bool:
    """The join (the last index) started before one of its dependencies had ended (each
    dependency's first end); a join that never ran is the ledger's to judge, not this."""
    join = starts.get(indexes[-1])
    if join is None:
        return False
    return any(ends.get(i, float("inf")) > join for i in indexes[:-1])
