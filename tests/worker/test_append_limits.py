"""Steps appended at run time with a real worker, both databases: an owner capped at 2
running never has more than 2 running when its step appends a fan-out (checked from the
steps' recorded start and end); an append past MAX_DEPTH fails the appending step as any
handler error does, with nothing appended (docs/workflows.md, "Limits")."""

from __future__ import annotations

from pathlib import Path

from conveyor.domain.states import JobState
from conveyor.domain.workflows import MAX_DEPTH, StepSpec, WorkflowSpec, WorkflowState
from conveyor.services.jobs import JobService
from conveyor.services.workflows import WorkflowService
from conveyor.store.backend import QueueBackend
from tests.services.test_running_quota import add_user
from tests.support import workflow_handlers
from tests.support.processes import eventually
from tests.worker.test_workflow_append import registry, running, settle


def most_at_once(runs: list[tuple[str, float, float]]) -> int:
    """The most runs at one instant, from the spans their handlers recorded (each inside
    the time its job held its slot: claimed before, released at its finish's commit)."""
    edges = [e for _name, start, end in runs for e in ((start, 1), (end, -1))]
    now = most = 0
    for _at, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start
        now += step
        most = max(most, now)
    return most


async def test_an_appended_fan_out_never_runs_past_the_owner_s_running_cap(
    backend: QueueBackend, tmp_path: Path
) -> None:
    await add_user(backend, "capped", 2)
    submits = JobService(backend, registry())
    await submits.define_limits()
    flows = WorkflowService(submits)
    log, times = str(tmp_path / "runs.txt"), str(tmp_path / "spans.txt")
    fan = {"log": log, "n": 6, "sleep": 0.3, "before": ["join"], "spans": times}
    spec = WorkflowSpec(
        "fan",
        (
            StepSpec("start", "wf_fanout", fan),
            StepSpec("join", "wf_step", {"log": log, "spans": times}, ("start",)),
        ),
    )
    detail = await flows.submit(spec, owner_id="capped")
    async with running(backend):  # 4 slots: room for all 6 parts but for the cap
        await settle(flows, detail.workflow.id, "the workflow settled")
    done = await flows.get(detail.workflow.id)
    assert done.workflow.state is WorkflowState.COMPLETED and len(done.steps) == 8
    ran = workflow_handlers.spans(times)
    assert sorted(name for name, _a, _b in ran)[:2] == ["join", "part0"] and len(ran) == 7
    assert most_at_once(ran) <= 2


async def test_an_append_past_max_depth_fails_the_step_and_appends_nothing(
    backend: QueueBackend, tmp_path: Path
) -> None:
    """`p` appends one step before `c0`, the head of a chain MAX_DEPTH - 1 long behind `a`
    (which runs meanwhile, so the chain waits): p -> part0 -> c0 -> ... would be MAX_DEPTH
    + 1 steps."""
    flows = WorkflowService(JobService(backend, registry()))
    log = str(tmp_path / "runs.txt")
    chain = [StepSpec("c0", "wf_step", {"log": log}, ("a",)),
             *(StepSpec(f"c{i}", "wf_step", {"log": log}, (f"c{i - 1}",))
               for i in range(1, MAX_DEPTH - 1))]  # fmt: skip
    spec = WorkflowSpec(
        "deep",
        (
            StepSpec("p", "wf_fanout", {"log": log, "n": 1, "before": ["c0"]}),
            StepSpec("a", "wf_step", {"log": log, "sleep": 600}),
            *chain,
        ),
    )
    detail = await flows.submit(spec, owner_id="u")
    p = next(s.job_id for s in detail.steps if s.name == "p")

    async def p_failed() -> bool:
        return (await backend.get(p)).state is JobState.FAILED

    async with running(backend):
        await eventually(p_failed, timeout=60, what="the appending step failed")
    failed = await backend.get(p)
    assert failed.attempt == 2  # as any handler error: retried, then failed
    assert f"at most {MAX_DEPTH} steps long" in failed.errors[-1]["message"]
    after = await flows.get(detail.workflow.id)
    assert len(after.steps) == len(spec.steps)  # nothing appended
