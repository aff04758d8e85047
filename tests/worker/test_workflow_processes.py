"""Workflows across real worker processes (both databases): a fan-out's join runs exactly
once after every branch, round after round, with two workers finishing branches at once; a
worker killed mid-step is rescued and the workflow completes with no other step run twice.
Runs are counted from the lines the handlers append themselves (tests/support/
workflow_handlers.py)."""

from __future__ import annotations

import signal
from pathlib import Path

from sqlalchemy import func, select

from conveyor.domain.states import JobState
from conveyor.domain.workflows import StepSpec, WorkflowSpec, WorkflowState
from conveyor.services.jobs import JobService
from conveyor.services.workflows import WorkflowService
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import workers as workers_table
from conveyor.worker.registry import Registry
from tests.support import workflow_handlers
from tests.support.processes import Cluster, eventually

HANDLERS = {"handler_modules": "tests.support.workflow_handlers", "poll_interval": "0.2"}
BRANCHES = 1000
BRANCH_S = 0.01
ROUNDS = 3


def service(backend: QueueBackend) -> WorkflowService:
    types = Registry()
    types.include(workflow_handlers.blueprint)
    return WorkflowService(JobService(backend, types))


async def workers_up(backend: QueueBackend, count: int) -> bool:
    async with backend.db.read() as conn:
        found = (await conn.execute(select(func.count()).select_from(workers_table))).scalar_one()
    return int(found) == count


async def test_a_fan_out_of_1000_joins_once_after_all_with_two_worker_processes(
    backend: QueueBackend, cluster: Cluster, tmp_path: Path
) -> None:
    flows = service(backend)
    procs = [cluster.worker(f"w{i}", concurrency=8, settings=HANDLERS) for i in range(2)]

    async def up() -> bool:
        assert all(p.running() for p in procs), "a worker exited"
        return await workers_up(backend, 2)

    await eventually(up, timeout=120, what="two workers registered")
    for round_ in range(ROUNDS):
        log = str(tmp_path / f"runs-{round_}.txt")
        # Each branch takes 10 ms, so one worker alone needs over a second for the fan-out
        # (8 at a time): the other joins in whatever its wake-up costs on a busy machine.
        # With no-op branches the first to wake ran them all now and then (its claims read
        # no step inputs since migration 0028), and the join's release did not race.
        fan = tuple(
            StepSpec(f"b{i}", "wf_step", {"log": log, "value": i, "sleep": BRANCH_S})
            for i in range(BRANCHES)
        )
        join = StepSpec("join", "wf_step", {"log": log}, tuple(s.name for s in fan))
        detail = await flows.submit(WorkflowSpec(f"fan-{round_}", (*fan, join)), owner_id="u")

        async def settled(workflow_id: str = detail.workflow.id) -> bool:
            found = await flows.get(workflow_id)
            return found.workflow.state is not WorkflowState.RUNNING

        await eventually(settled, timeout=300, what=f"round {round_} settled")
        done = await flows.get(detail.workflow.id)
        assert done.workflow.state is WorkflowState.COMPLETED
        ran = workflow_handlers.runs(log)
        assert ran.count("join") == 1 and ran[-1] == "join"
        assert sorted(ran[:-1]) == sorted(s.name for s in fan)  # each branch exactly once
        steps = {s.name: s for s in done.steps}
        ends = [steps[s.name].finished_at for s in fan]
        started = steps["join"].started_at
        assert started is not None and all(e is not None and started >= e for e in ends)
        saw = steps["join"].result["saw"]
        assert len(saw) == BRANCHES and saw["b7"]["value"] == 7
        # both workers finished branches: the join's release raced between them
        assert len(workflow_handlers.pids(log)) == 2


async def test_a_worker_killed_mid_step_is_rescued_and_the_workflow_completes(
    backend: QueueBackend, cluster: Cluster, tmp_path: Path
) -> None:
    flows = service(backend)
    log = str(tmp_path / "runs.txt")
    spec = WorkflowSpec(
        "rescued",
        (
            StepSpec("a", "wf_step", {"log": log}),
            StepSpec("b", "wf_step", {"log": log, "sleep_first": 60}, ("a",), max_attempts=3),
            StepSpec("x", "wf_step", {"log": log}, ("a",)),
            StepSpec("c", "wf_step", {"log": log}, ("b", "x")),
        ),
    )
    detail = await flows.submit(spec, owner_id="u")
    victim = cluster.worker(
        "victim",
        concurrency=4,
        settings={**HANDLERS, "lease_seconds": "2", "heartbeat_interval": "0.3"},
    )
    x_id = next(s.job_id for s in detail.steps if s.name == "x")

    async def b_running_x_recorded() -> bool:
        # x's finish committed: a kill before it would rightly run x again (at least once)
        x = await backend.get(x_id)
        return "b" in workflow_handlers.runs(log) and x.state is JobState.COMPLETED

    await eventually(b_running_x_recorded, timeout=120, what="the victim running b, x done")
    victim.send(signal.SIGKILL)
    await victim.wait_exit(30)
    cluster.scheduler(settings={"scheduler_interval": "0.2"})
    cluster.worker("heir", concurrency=4, settings=HANDLERS)

    async def settled() -> bool:
        found = await flows.get(detail.workflow.id)
        return found.workflow.state is not WorkflowState.RUNNING

    await eventually(settled, timeout=180, what="the workflow settled after the rescue")
    done = await flows.get(detail.workflow.id)
    assert done.workflow.state is WorkflowState.COMPLETED
    ran = workflow_handlers.runs(log)
    assert sorted(ran) == ["a", "b", "b", "c", "x"] and ran[-1] == "c"
    b = next(s for s in done.steps if s.name == "b")
    assert b.attempt == 2 and b.state is JobState.COMPLETED
