"""The release triggers (migration 0016) on both databases: two parents settling at once in
two transactions release their child exactly once; the sweep releases a step the trigger
did not; trigger-written events are read in the outbox's order; the migration keeps the
rows that cascade from jobs when SQLite recreates the table."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import delete, func, insert, select, text, update

from conveyor.domain import events as ev
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ErrorInfo, NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.domain.workflows import (
    MAX_DEPTH,
    StepSpec,
    WorkflowDetail,
    WorkflowSpec,
    WorkflowState,
)
from conveyor.errors import InvalidInput
from conveyor.services.jobs import JobService
from conveyor.services.workflows import WorkflowService
from conveyor.store.backend import QueueBackend
from conveyor.store.database import Database
from conveyor.store.factory import open_backend
from conveyor.store.jobs import job_row
from conveyor.store.migrate import alembic_config, migrate
from conveyor.store.tables import events, job_callbacks, job_dependencies, job_limits, jobs
from conveyor.worker.registry import Registry
from tests.conftest import fresh_database
from tests.services.test_running_quota import add_user
from tests.support import workflow_handlers
from tests.support.processes import eventually

W = "worker-s"


def service(backend: QueueBackend) -> WorkflowService:
    types = Registry()
    types.include(workflow_handlers.blueprint)
    return WorkflowService(JobService(backend, types))


def step(name: str, *deps: str) -> StepSpec:
    return StepSpec(name, "wf_step", {"log": "-"}, deps)


def ids(detail: WorkflowDetail) -> dict[str, str]:
    return {s.name: s.job_id for s in detail.steps}


async def released(backend: QueueBackend, job_id: str) -> int:
    query = select(func.count()).where(
        events.c.job_id == job_id, events.c.type == ev.QUEUED, events.c.state == "queued"
    )
    async with backend.db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_two_parents_settling_at_once_release_the_child_exactly_once(
    backend: QueueBackend,
) -> None:
    """Each parent's finish in its own open transaction: the second waits for the first's
    lock on the child (PostgreSQL) or for its write lock (SQLite), then sees its commit."""
    flows = service(backend)
    for _ in range(5):
        detail = await flows.submit(
            WorkflowSpec("two", (step("a"), step("b"), step("c", "a", "b"))), owner_id="u"
        )
        n = ids(detail)
        first_in = asyncio.Event()

        async def settle(job_id: str, signal: asyncio.Event | None) -> None:
            async with backend.db.write() as conn:
                await backend.driver.lock_events(conn)
                await conn.execute(
                    update(jobs).where(jobs.c.id == job_id).values(state="completed")
                )
                if signal is not None:
                    signal.set()
                    await asyncio.sleep(0.2)  # the other one runs into our locks meanwhile

        one = asyncio.create_task(settle(n["a"], first_in))
        await first_in.wait()
        await asyncio.gather(one, settle(n["b"], None))
        child = await backend.get(n["c"])
        assert child.state is JobState.QUEUED
        assert await released(backend, n["c"]) == 1


async def test_a_step_never_starts_before_its_dependency_finished(
    backend: QueueBackend,
) -> None:
    """SQLite: a claim that waited for the write lock while the finish that released its
    step held it starts the step after that finish, not at the time it was asked for
    (two workers of a fan-out's join: the join's start came before a branch's finish)."""
    if backend.dialect != "sqlite":
        pytest.skip("PostgreSQL's claim does not wait for a finish: it reads what committed")
    detail = await service(backend).submit(
        WorkflowSpec("chain", (step("a"), step("b", "a"))), owner_id="u"
    )
    n = ids(detail)
    (a,) = await backend.claim(W, ["default"], 1, 30)
    assert a.id == n["a"]
    async with backend.db.write() as conn:  # a's finish, holding the write lock
        claim = asyncio.create_task(backend.claim(W, ["default"], 1, 30))
        await asyncio.sleep(0.1)  # the claim has taken its time and waits for the lock
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == n["a"])
            .values(state="completed", finished_at=utcnow(), worker_id=None)
        )
    (b,) = await claim
    assert b.id == n["b"]
    finished = (await backend.get(n["a"])).finished_at
    started = (await backend.get(n["b"])).started_at
    assert finished is not None and started is not None and started >= finished


async def test_one_statement_settling_hundreds_of_steps_releases_each_dependent_once(
    backend: QueueBackend,
) -> None:
    """600 parents settled by one UPDATE (PostgreSQL: one statement trigger call, migration
    0020): each child is released once, and a plain job the statement also settles changes
    nothing."""
    pairs = 600
    spec = WorkflowSpec(
        "pairs", tuple(s for i in range(pairs) for s in (step(f"p{i}"), step(f"c{i}", f"p{i}")))
    )
    n = ids(await service(backend).submit(spec, owner_id="u"))
    (plain,) = await backend.enqueue([NewJob(type="wf_step", payload={"log": "-"})])
    parents = [n[f"p{i}"] for i in range(pairs)]
    async with backend.db.write() as conn:
        await backend.driver.lock_events(conn)
        await conn.execute(
            update(jobs).where(jobs.c.id.in_([*parents, plain.id])).values(state="completed")
        )
    async with backend.db.read() as conn:
        states = (await conn.execute(select(jobs.c.state, func.count()).where(
            jobs.c.id.in_([n[f"c{i}"] for i in range(pairs)])).group_by(jobs.c.state)
        )).all()  # fmt: skip
        once = (await conn.execute(select(func.count()).where(
            events.c.type == ev.QUEUED, events.c.state == "queued",
            events.c.job_id.in_([n[f"c{i}"] for i in range(pairs)]))
        )).scalar_one()  # fmt: skip
    assert [tuple(r) for r in states] == [("queued", pairs)]
    assert once == pairs


async def test_pairs_chains_and_a_join_release_each_step_once(backend: QueueBackend) -> None:
    """Many open steps that are not a dependent's dependencies (pairs, chains; migration
    0022's edge-driven probe on SQLite) beside a join of many (the open-steps probe): settled
    a statement at a time, every step is released exactly once, and only when its last
    dependency settled."""
    pairs, links, fan = 40, 12, 40
    steps = [s for i in range(pairs) for s in (step(f"p{i}"), step(f"c{i}", f"p{i}"))]
    steps += [step("k0"), *(step(f"k{i}", f"k{i - 1}") for i in range(1, links))]
    steps += [*(step(f"f{i}") for i in range(fan)), step("join", *(f"f{i}" for i in range(fan)))]
    n = ids(await service(backend).submit(WorkflowSpec("shapes", tuple(steps)), owner_id="u"))

    async def settle(*names: str) -> None:
        async with backend.db.write() as conn:
            await backend.driver.lock_events(conn)
            await conn.execute(
                update(jobs).where(jobs.c.id.in_([n[m] for m in names])).values(state="completed")
            )

    async def states(*names: str) -> set[str]:
        async with backend.db.read() as conn:
            rows = await conn.execute(select(jobs.c.state).where(
                jobs.c.id.in_([n[m] for m in names])))  # fmt: skip
            return {r[0] for r in rows}

    children = [f"c{i}" for i in range(pairs)]
    await settle(*(f"p{i}" for i in range(pairs)), *(f"f{i}" for i in range(fan - 1)))
    assert await states(*children) == {"queued"}
    assert await states("join", *(f"k{i}" for i in range(1, links))) == {"waiting"}
    await settle(f"f{fan - 1}", *children)
    for i in range(links):  # a chain: each link released by its parent's settle, once
        assert await states(f"k{i}") == {"queued"}
        assert await states(*(f"k{j}" for j in range(i + 1, links))) <= {"waiting"}
        await settle(f"k{i}")
    assert await states("join") == {"queued"}
    for name in ("join", *children, *(f"k{i}" for i in range(1, links))):
        assert await released(backend, n[name]) == 1, name


async def test_sqlite_release_work_grows_linearly_with_a_workflow_s_open_steps(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """SQLite's release (migration 0022): settling the N parents of N pairs by one UPDATE
    costs work linear in N, counted as SQLite's virtual-machine steps (a progress handler
    every 1,000: deterministic, not a time). Before, each settle read every waiting step of
    the database, each probed from the workflow's open steps: 4x the pairs cost ~49x."""
    target = tmp_path / "conveyor.db"
    shutil.copy(sqlite_template, target)
    work: dict[int, int] = {}
    for pairs in (100, 400):
        backend = open_backend(f"sqlite:///{target}")
        try:
            spec = WorkflowSpec(
                f"pairs{pairs}",
                tuple(s for i in range(pairs) for s in (step(f"p{i}"), step(f"c{i}", f"p{i}"))),
            )
            workflow_id = (await service(backend).submit(spec, owner_id="u")).workflow.id
        finally:
            await backend.close()
        conn = sqlite3.connect(target)
        try:
            conn.execute("PRAGMA recursive_triggers = ON")
            ticks = [0]

            def tick(ticks: list[int] = ticks) -> int:
                ticks[0] += 1
                return 0

            conn.set_progress_handler(tick, 1000)
            with conn:
                conn.execute(
                    "UPDATE jobs SET state = 'completed' WHERE workflow_id = ? AND step LIKE 'p%'",
                    (workflow_id,),
                )
            conn.set_progress_handler(None, 0)
            queued = conn.execute(
                "SELECT count(*) FROM jobs WHERE workflow_id = ? AND state = 'queued'",
                (workflow_id,),
            ).fetchone()[0]
        finally:
            conn.close()
        assert queued == pairs
        work[pairs] = ticks[0]
    assert work[400] < 8 * work[100], work


def counted(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    settle: Callable[[QueueBackend, int], Awaitable[int]],
    sizes: tuple[int, ...],
) -> dict[int, int]:
    """`settle`'s count for each size, in turn, on one fresh PostgreSQL database."""

    async def measure(url: str) -> dict[int, int]:
        backend = open_backend(url)
        try:
            return {size: await settle(backend, size) for size in sizes}
        finally:
            await backend.close()

    with fresh_database("postgres", request, tmp_path) as url:
        return asyncio.run(measure(url))


def test_postgres_release_work_grows_linearly_with_a_workflow_s_open_steps(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL's release (migration 0023): settling the N parents of N pairs by one UPDATE
    reads rows linear in N, counted in the transaction's own table statistics
    (pg_stat_xact_user_tables: rows read by sequential and index scans, and index scans, on
    jobs and job_dependencies; deterministic, not a time). Before, each dependent was probed
    from the workflow's open steps and each release's tag read every queued step of its key:
    4x the pairs cost ~16x."""
    read = text(
        "SELECT sum(seq_tup_read + coalesce(idx_tup_fetch, 0) + coalesce(idx_scan, 0))"
        " FROM pg_stat_xact_user_tables WHERE relname IN ('jobs', 'job_dependencies')"
    )

    async def settle(backend: QueueBackend, pairs: int) -> int:
        spec = WorkflowSpec(
            f"pairs{pairs}",
            tuple(s for i in range(pairs) for s in (step(f"p{i}"), step(f"c{i}", f"p{i}"))),
        )
        n = ids(await service(backend).submit(spec, owner_id="u"))
        async with backend.db.write() as conn:
            await backend.driver.lock_events(conn)
            await conn.execute(update(jobs).where(
                jobs.c.id.in_([n[f"p{i}"] for i in range(pairs)])).values(state="completed")
            )  # fmt: skip
            work = int((await conn.execute(read)).scalar_one())
        async with backend.db.read() as conn:
            queued = (await conn.execute(select(func.count()).where(
                jobs.c.id.in_([n[f"c{i}"] for i in range(pairs)]), jobs.c.state == "queued"
            ))).scalar_one()  # fmt: skip
        assert queued == pairs
        return work

    work = counted(request, tmp_path, settle, (100, 400))
    assert work[400] < 8 * work[100], work


def test_postgres_a_join_s_parent_settling_reads_a_bounded_part_of_its_edges(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """PostgreSQL's release (migration 0025): a parent of a big fan-in's join settling reads
    index entries of job_dependencies bounded by its own edges, not by the join's, counted
    in the transaction's index statistics (deterministic, not a time). Before, 0023's "more
    than 16 edges?" probe was served by a bitmap scan that read every one of the join's edges, at
    each settle of one of its parents: 8x the parents read ~8x the entries. (The view
    pg_stat_xact_user_indexes does not exist: the per-index function it would read.)"""
    read = text(
        "SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index"
        " WHERE indrelid = 'job_dependencies'::regclass"
    )

    async def settle(backend: QueueBackend, parents: int) -> int:
        names = [f"p{i}" for i in range(parents)]
        spec = WorkflowSpec(f"fan{parents}", (*map(step, names), step("join", *names)))
        n = ids(await service(backend).submit(spec, owner_id="u"))
        async with backend.db.write() as conn:
            await backend.driver.lock_events(conn)
            await conn.execute(update(jobs).where(jobs.c.id == n["p0"]).values(state="completed"))
            work = int((await conn.execute(read)).scalar_one())
        async with backend.db.read() as conn:
            join = (await conn.execute(select(jobs.c.state).where(jobs.c.id == n["join"]))).one()
        assert join.state == "waiting"
        return work

    work = counted(request, tmp_path, settle, (200, 1_600))
    assert work[1_600] < 2 * work[200] + 50, work


async def test_the_sweep_releases_a_waiting_step_whose_dependencies_all_settled(
    backend: QueueBackend,
) -> None:
    flows = service(backend)
    detail = await flows.submit(WorkflowSpec("s", (step("a"), step("b", "a"))), owner_id="u")
    n = ids(detail)
    async with backend.db.write() as conn:  # an edge lost: b waits on nothing
        await conn.execute(delete(job_dependencies).where(job_dependencies.c.job_id == n["b"]))
    assert await backend.sweep_waiting() == [n["b"]]
    assert (await backend.get(n["b"])).state is JobState.QUEUED
    assert await backend.sweep_waiting() == []


async def test_trigger_events_are_read_through_the_outbox_with_one_workflow_event(
    backend: QueueBackend,
) -> None:
    flows = service(backend)
    detail = await flows.submit(WorkflowSpec("e", (step("a"), step("b", "a"))), owner_id="u")
    n = ids(detail)
    for name in ("a", "b"):
        (job,) = await backend.claim(W, ["default"], 10, 30)
        assert job.id == n[name]
        await backend.finish(W, [Outcome(job.id, job.attempt, "completed")])
    said: list[tuple[str, str]] = []

    async def workflow_event_read() -> bool:
        # The outbox's horizon holds an event back while a transaction that may precede it
        # runs (other tests share the server): poll, as every reader does.
        seen = await backend.read_events(ev.Position(), limit=100)
        said[:] = [(e.type, e.state) for e in seen if e.job_id in (n["b"], detail.workflow.id)]
        return (ev.WORKFLOW, "completed") in said

    await eventually(workflow_event_read, timeout=60, what="the workflow event read")
    assert said[0] == (ev.CREATED, "waiting")
    # In the finish's transaction: on SQLite before the finish's own event, which its
    # second statement writes (docs/workflows.md, "Events").
    assert (ev.QUEUED, "queued") in said and (ev.WORKFLOW, "completed") in said[-2:]
    assert said.count((ev.WORKFLOW, "completed")) == 1
    assert (await flows.get(detail.workflow.id)).workflow.state is WorkflowState.COMPLETED


async def test_0016_keeps_callbacks_and_limit_slots_trigger_through_sqlite_s_recreate(
    db_url: str,
) -> None:
    """SQLite recreates jobs to widen its state CHECK: the rows cascading from jobs are put
    back, the indexes keep their DESC, 0012's trigger is there again."""
    db = Database(db_url)
    try:
        async with db.write() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0015"))
            await conn.execute(
                text(
                    "INSERT INTO jobs (id, owner_id, queue, type, payload, priority, state, "
                    "attempt, max_attempts, run_at, progress, errors, tags, created_at) VALUES "
                    "('j1', 'u', 'default', 'noop', '{}', 0, 'queued', 0, 1, "
                    "'2026-01-01 00:00:00', 0, '[]', '[]', '2026-01-01 00:00:00')"
                )
            )
            await conn.execute(
                insert(job_callbacks),
                [
                    {
                        "job_id": "j1",
                        "owner_id": "u",
                        "url": "https://x.test",
                        "created_at": utcnow(),
                    }
                ],
            )
        await migrate(db)
        async with db.read() as conn:
            kept = (await conn.execute(select(job_callbacks.c.job_id))).scalars().all()
            if db_url.startswith("sqlite"):
                found = (
                    await conn.execute(
                        text("SELECT name, sql FROM sqlite_master WHERE tbl_name = 'jobs'")
                    )
                ).all()
                schema = {name: sql for name, sql in found}
                assert "priority DESC" in schema["ix_jobs_claim"]
                assert "jobs_release_limit_slots" in schema and "jobs_step_settled" in schema
        assert kept == ["j1"]
    finally:
        await db.dispose()


async def test_a_failure_cancels_down_a_chain_as_long_as_allowed(backend: QueueBackend) -> None:
    """One nested trigger per step of the cascade: a chain of MAX_DEPTH stays within both
    databases' bounds (a chain of 400 exceeded PostgreSQL's stack, 600 SQLite's levels)."""
    flows = service(backend)
    steps = [step("s0"), *(step(f"s{i}", f"s{i - 1}") for i in range(1, MAX_DEPTH))]
    detail = await flows.submit(WorkflowSpec("long", tuple(steps)), owner_id="u")
    (first,) = await backend.claim(W, ["default"], 10, 30)
    error = ErrorInfo("E", "fails")
    assert await backend.finish(W, [Outcome(first.id, first.attempt, "failed", error=error)])
    done = await flows.get(detail.workflow.id)
    assert done.workflow.state is WorkflowState.FAILED
    assert done.workflow.counts == {"failed": 1, "cancelled": MAX_DEPTH - 1}


async def test_an_append_before_a_step_waits_for_the_settle_that_releases_that_step(
    backend: QueueBackend,
) -> None:
    """`join` waits for `a` alone; `p` appends a step before `join` while `a`'s finish (its
    transaction still open) releases `join`. The append takes the workflow's lock, so it
    waits for that finish and is refused (`join` no longer waits); it used to read `join`
    waiting, add the edge, and leave a queued step depending on a step not yet run."""
    flows = service(backend)
    spec = WorkflowSpec("ap", (step("p"), step("a"), step("join", "a")))
    n = ids(await flows.submit(spec, owner_id="u"))
    settling = asyncio.Event()

    async def settle_a() -> None:
        async with backend.db.write() as conn:
            await backend.driver.lock_events(conn)
            await conn.execute(update(jobs).where(jobs.c.id == n["a"]).values(state="completed"))
            settling.set()
            await asyncio.sleep(0.3)  # the append runs into our locks meanwhile

    now = utcnow()
    row = job_row(NewJob(type="wf_step", payload={"log": "-"}, owner_id="u"), now)
    row.update(
        state="waiting", step="more", ready_at=None, dep_checks=0, on_dependency_failure=None
    )
    finish = asyncio.create_task(settle_a())
    await settling.wait()
    with pytest.raises(InvalidInput, match="'join' is not a waiting step"):
        await backend.append_steps(n["p"], [row], {"more": ()}, ["join"])
    await finish
    assert (await backend.get(n["join"])).state is JobState.QUEUED
    async with backend.db.read() as conn:
        edges = (
            await conn.execute(
                select(job_dependencies.c.depends_on).where(job_dependencies.c.job_id == n["join"])
            )
        ).scalars()
        assert set(edges) == {n["a"]}  # queued, and waiting on nothing not yet run


@pytest.mark.parametrize("capped", [False, True])
async def test_a_claimed_step_says_its_workflow_its_name_and_whether_it_has_dependencies(
    backend: QueueBackend, capped: bool
) -> None:
    """The claim tells the worker which jobs are steps and which of them have dependencies
    (their results are read before they run): a root step and a plain job need no read.
    `capped`: the owner has a running cap, so each step holds a limit and starts through
    the admission (PostgreSQL's `limit_start`), which says the same."""
    await add_user(backend, "u", 10 if capped else None)
    flows = service(backend)
    await flows.jobs.define_limits()  # the running quota's definition
    spec = WorkflowSpec("diamond", (step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")))
    detail = await flows.submit(spec, owner_id="u")
    assert {s.name: s.job_id for s in detail.steps} and capped == bool(
        await held_limits(backend, detail.workflow.id)
    )
    (plain,) = await backend.enqueue([NewJob(type="wf_step", payload={"log": "-"})])

    async def claimed() -> dict[str, tuple[str | None, str | None, bool]]:
        got = await backend.claim(W, ["default"], 10, 30)
        await backend.finish(W, [Outcome(c.id, c.attempt, "completed") for c in got])
        return {c.step or c.id: (c.workflow_id, c.step, c.depends) for c in got}

    wf = detail.workflow.id
    assert await claimed() == {"a": (wf, "a", False), plain.id: (None, None, False)}
    assert await claimed() == {"b": (wf, "b", True), "c": (wf, "c", True)}
    assert await claimed() == {"d": (wf, "d", True)}


async def test_a_steps_inputs_are_its_dependencies_results_as_stored(
    backend: QueueBackend,
) -> None:
    """What a step's handler reads (`ctx.results`): each dependency's result by step name,
    whatever JSON it is (none: None), read for a claim's steps at once; a root step has
    none, a plain job is no step."""
    flows = service(backend)
    spec = WorkflowSpec(
        "inputs",
        (step("a"), step("b"), step("c"), step("d"), step("one", "a"),
         step("all", "a", "b", "c", "d"), step("root")),
    )  # fmt: skip
    detail = await flows.submit(spec, owner_id="u")
    made = ids(detail)
    (plain,) = await backend.enqueue([NewJob(type="wf_step", payload={"log": "-"})])
    results = {"a": {"n": [1, 2.5, None], "é": "ü"}, "b": None, "c": "text", "d": 7}
    got = await backend.claim(W, ["default"], 10, 30)
    await backend.finish(
        W, [Outcome(c.id, c.attempt, "completed", result=results.get(c.step or "")) for c in got]
    )
    inputs = await backend.steps_inputs([made["one"], made["all"], made["root"], plain.id])
    assert inputs == {
        made["one"]: (detail.workflow.id, "one", {"a": results["a"]}),
        made["all"]: (detail.workflow.id, "all", results),
        made["root"]: (detail.workflow.id, "root", {}),
    }


async def held_limits(backend: QueueBackend, workflow_id: str) -> int:
    """How many of the workflow's steps hold a limit (job_limits rows)."""
    query = (
        select(func.count())
        .select_from(job_limits.join(jobs, jobs.c.id == job_limits.c.job_id))
        .where(jobs.c.workflow_id == workflow_id)
    )
    async with backend.db.read() as conn:
        return int((await conn.execute(query)).scalar_one())
