"""Steps appended at run time (`ctx.append_steps`), both databases, with an in-process worker
and scheduler: the join waits for them and sees their results; a retried run appending the
same names adds nothing, and each appended step runs once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import BaseModel

from conveyor.domain.states import JobState
from conveyor.domain.workflows import StepSpec, WorkflowSpec, WorkflowState
from conveyor.scheduler.scheduler import Scheduler, SchedulerConfig
from conveyor.services.jobs import JobService, Submission
from conveyor.services.workflows import WorkflowService
from conveyor.store.backend import QueueBackend
from conveyor.worker.context import JobContext
from conveyor.worker.registry import Registry
from conveyor.worker.worker import Worker, WorkerConfig
from tests.support import workflow_handlers
from tests.support.processes import eventually


class Nothing(BaseModel):
    pass


def registry() -> Registry:
    types = Registry()
    types.include(workflow_handlers.blueprint)
    return types


@asynccontextmanager
async def running(backend: QueueBackend) -> AsyncIterator[None]:
    config = WorkerConfig(queues={"default": None}, concurrency=4, poll_interval=0.1)
    worker = Worker(backend, registry(), config)
    scheduler = Scheduler(backend, registry(), SchedulerConfig(interval=0.1))
    tasks = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
    try:
        yield
    finally:
        worker.stop(force=True)
        scheduler.stop()
        await asyncio.gather(*tasks)


async def settle(flows: WorkflowService, workflow_id: str, what: str) -> None:
    """Wait until the workflow is no longer running."""

    async def settled() -> bool:
        found = await flows.get(workflow_id)
        return found.workflow.state is not WorkflowState.RUNNING

    await eventually(settled, timeout=120, what=what)


@pytest.mark.parametrize("fail_first", [False, True])
async def test_appended_steps_run_before_the_join_which_sees_them(
    backend: QueueBackend, tmp_path: Path, fail_first: bool
) -> None:
    flows = WorkflowService(JobService(backend, registry()))
    log = str(tmp_path / "runs.txt")
    spec = WorkflowSpec(
        "append",
        (
            StepSpec("start", "wf_fanout",
                     {"log": log, "n": 4, "before": ["join"], "fail_first": fail_first}),
            StepSpec("join", "wf_step", {"log": log}, ("start",)),
        ),
    )  # fmt: skip
    detail = await flows.submit(spec, owner_id="u")

    async with running(backend):
        await settle(flows, detail.workflow.id, "the workflow settled")
    done = await flows.get(detail.workflow.id)
    assert done.workflow.state is WorkflowState.COMPLETED
    steps = {s.name: s for s in done.steps}
    assert set(steps) == {"start", "join", "part0", "part1", "part2", "part3"}
    assert set(steps["join"].depends_on) == {"start", "part0", "part1", "part2", "part3"}
    assert steps["part2"].depends_on == ("start",)
    assert steps["join"].result["saw"]["part3"]["value"] == 3
    ran = workflow_handlers.runs(log)
    assert ran.count("start") == (2 if fail_first else 1)
    assert sorted(r for r in ran if r.startswith("part")) == ["part0", "part1", "part2", "part3"]
    assert ran[-1] == "join" and ran.count("join") == 1
    assert all(s.state is JobState.COMPLETED for s in done.steps)


async def test_a_retried_workflow_runs_only_what_did_not_complete(
    backend: QueueBackend, tmp_path: Path
) -> None:
    """a -> (b fails until a file exists, x) -> c after b and x: the retry runs b and c again,
    never a or x (counted from the handlers' own lines), and x's result is the first one."""
    flows = WorkflowService(JobService(backend, registry()))
    log, fixed = str(tmp_path / "runs.txt"), tmp_path / "fixed"
    spec = WorkflowSpec(
        "retry",
        (
            StepSpec("a", "wf_step", {"log": log, "value": 1}),
            StepSpec("b", "wf_step", {"log": log, "fail_unless": str(fixed)}, ("a",)),
            StepSpec("x", "wf_step", {"log": log, "value": 2}, ("a",)),
            StepSpec("c", "wf_step", {"log": log}, ("b", "x")),
        ),
    )
    detail = await flows.submit(spec, owner_id="u")

    async with running(backend):
        await settle(flows, detail.workflow.id, "the first run settled")
        first = await flows.get(detail.workflow.id)
        assert first.workflow.state is WorkflowState.FAILED
        x_before = next(s for s in first.steps if s.name == "x")
        fixed.write_text("ok")
        await flows.retry(detail.workflow.id, "u")
        await settle(flows, detail.workflow.id, "the retry settled")
    done = await flows.get(detail.workflow.id)
    assert done.workflow.state is WorkflowState.COMPLETED
    ran = workflow_handlers.runs(log)
    assert ran.count("a") == 1 and ran.count("x") == 1
    assert ran.count("b") == 2 and ran.count("c") == 1 and ran[-1] == "c"
    x_after = next(s for s in done.steps if s.name == "x")
    assert x_after.result == x_before.result and x_after.finished_at == x_before.finished_at


async def test_a_step_in_the_process_pool_sees_its_dependencies_results(
    backend: QueueBackend, tmp_path: Path
) -> None:
    flows = WorkflowService(JobService(backend, registry()))
    log = str(tmp_path / "runs.txt")
    spec = WorkflowSpec(
        "in a process",
        (
            StepSpec("a", "wf_step", {"log": log, "value": 7}),
            StepSpec("b", "wf_process_step", {"value": 1}, ("a",)),
        ),
    )
    detail = await flows.submit(spec, owner_id="u")

    async with running(backend):
        await settle(flows, detail.workflow.id, "the workflow settled")
    done = {s.name: s for s in (await flows.get(detail.workflow.id)).steps}
    assert done["b"].state is JobState.COMPLETED, done["b"].error
    assert done["b"].result["step"] == "b"
    assert done["b"].result["saw"]["a"]["value"] == 7


async def test_a_steps_handler_reads_its_derived_idempotency_key(backend: QueueBackend) -> None:
    """`ctx.idempotency_key` of a step is `wf:<workflow>:<step>` (docs/workflows.md), the
    same at every attempt, though the key is no longer stored with the step; a plain job
    without a key reads its id, as before."""
    types = registry()

    @types.job("wf_key")
    async def wf_key(ctx: JobContext, payload: Nothing) -> dict[str, str]:
        return {"key": ctx.idempotency_key}

    jobs = JobService(backend, types)
    flows = WorkflowService(jobs)
    spec = WorkflowSpec("keys", (StepSpec("first", "wf_key", {}),))
    detail = await flows.submit(spec, owner_id="u")
    plain = await jobs.submit(Submission(type="wf_key", payload={}), owner_id="u")
    config = WorkerConfig(queues={"default": None}, concurrency=4, poll_interval=0.1)
    worker = Worker(backend, types, config)
    task = asyncio.create_task(worker.run())
    try:
        await settle(flows, detail.workflow.id, "the workflow settled")

        async def plain_done() -> bool:
            return (await backend.get(plain.id)).state is JobState.COMPLETED

        await eventually(plain_done, timeout=60, what="the plain job done")
    finally:
        worker.stop(force=True)
        await task
    done = await flows.get(detail.workflow.id)
    assert done.steps[0].result == {"key": f"wf:{detail.workflow.id}:first"}
    assert (await backend.get(plain.id)).result == {"key": plain.id}
