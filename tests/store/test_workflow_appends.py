"""Steps appended at run time (`append_steps`), both databases: the depth of the graph they
make is checked as a submit's is (MAX_DEPTH), and they hold the owner's running quota as
submitted steps do (docs/workflows.md, "Limits")."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import func, select

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA
from conveyor.domain.jobs import Outcome
from conveyor.domain.workflows import MAX_DEPTH, StepSpec, WorkflowSpec
from conveyor.errors import InvalidInput
from conveyor.scheduler.workflow_rows import appended_rows
from conveyor.services.jobs import JobService
from conveyor.services.workflows import WorkflowService
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import job_limits, jobs
from conveyor.store.workflows import longest_through
from conveyor.worker.registry import Registry
from tests.services.test_running_quota import add_user
from tests.support import workflow_handlers

W = "worker-a"


def types() -> Registry:
    registry = Registry()
    registry.include(workflow_handlers.blueprint)
    return registry


def step(name: str, *deps: str) -> StepSpec:
    return StepSpec(name, "wf_step", {"log": "-"}, deps)


async def append(
    backend: QueueBackend,
    parent: str,
    workflow_id: str,
    owner: str,
    steps: list[StepSpec],
    before: tuple[str, ...] = (),
) -> list[str]:
    """What the worker's `_append_steps` stores for `ctx.append_steps` of `parent`."""
    rows, limits = appended_rows(types(), steps, owner, workflow_id, utcnow())
    deps = {s.name: s.depends_on for s in steps}
    return await backend.append_steps(parent, rows, deps, before, limits)


async def step_count(backend: QueueBackend, workflow_id: str) -> int:
    async with backend.db.read() as conn:
        query = select(func.count()).where(jobs.c.workflow_id == workflow_id)
        return int((await conn.execute(query)).scalar_one())


async def test_an_append_that_makes_a_chain_longer_than_max_depth_is_refused(
    backend: QueueBackend,
) -> None:
    """Appends lengthen chains below the parent (a step depending on the chain's end) and
    above the steps of `before`; each is refused past MAX_DEPTH, with nothing appended."""
    flows = WorkflowService(JobService(backend, types()))
    chain = [step("c0", "a"), *(step(f"c{i}", f"c{i - 1}") for i in range(1, MAX_DEPTH - 1))]
    spec = WorkflowSpec("deep", (step("p"), step("a"), *chain))  # a, c0..: MAX_DEPTH long
    detail = await flows.submit(spec, owner_id="u")
    wid, n = detail.workflow.id, {s.name: s.job_id for s in detail.steps}
    last = f"c{MAX_DEPTH - 2}"
    before = await step_count(backend, wid)

    with pytest.raises(InvalidInput, match=f"at most {MAX_DEPTH} steps long") as refused:
        await append(backend, n["p"], wid, "u", [step("m", last)])  # a .. last, m
    assert refused.value.details["field"] == "steps"
    with pytest.raises(InvalidInput, match=f"make one of {MAX_DEPTH + 1}"):
        await append(backend, n["p"], wid, "u", [step("m")], before=("c0",))  # p, m, c0 ..
    assert await step_count(backend, wid) == before

    # Within the bound: p, m1, m2 and another chain beside it are accepted.
    added = await append(backend, n["p"], wid, "u", [step("m1"), step("m2", "m1")])
    assert len(added) == 2 and await step_count(backend, wid) == before + 2
    with pytest.raises(InvalidInput, match="at most"):  # appended chains count too
        await append(backend, n["p"], wid, "u", [step("m3", "m2", last)])


async def test_an_append_that_would_wait_for_itself_or_an_unknown_step_is_refused(
    backend: QueueBackend,
) -> None:
    """m after b, and a (b's ancestor) before m: a cycle through the steps below `before`
    (read by the append's recursive query), refused with nothing appended."""
    flows = WorkflowService(JobService(backend, types()))
    spec = WorkflowSpec("cy", (step("p"), step("r"), step("a", "r"), step("b", "a")))
    detail = await flows.submit(spec, owner_id="u")
    wid, n = detail.workflow.id, {s.name: s.job_id for s in detail.steps}
    with pytest.raises(InvalidInput, match="waits for it"):
        await append(backend, n["p"], wid, "u", [step("m", "b")], before=("a",))
    rows, limits = appended_rows(types(), [step("m")], "u", wid, utcnow())
    with pytest.raises(InvalidInput, match="unknown step 'nope'"):
        await backend.append_steps(n["p"], rows, {"m": ("nope",)}, (), limits)
    assert await step_count(backend, wid) == 4
    assert len(await append(backend, n["p"], wid, "u", [step("m", "r")], before=("b",))) == 1


async def test_appended_steps_hold_the_owner_s_running_quota(backend: QueueBackend) -> None:
    """An owner capped at 2 running: the 6 steps its running step appends are under the
    quota, so after the parent completes no claim ever has more than 2 of them running."""
    await add_user(backend, "capped", 2)
    submits = JobService(backend, types())
    await submits.define_limits()  # the quota's row (the API and the worker store it)
    flows = WorkflowService(submits)
    detail = await flows.submit(WorkflowSpec("fan", (step("p"),)), owner_id="capped")
    (parent,) = await backend.claim(W, ["default"], 10, 30)
    parts = [step(f"part{i}") for i in range(6)]
    added = await append(backend, parent.id, detail.workflow.id, "capped", parts)
    async with backend.db.read() as conn:
        quota = select(func.count()).where(
            job_limits.c.job_id.in_(added), job_limits.c.name == RUNNING_QUOTA
        )
        assert (await conn.execute(quota)).scalar_one() == 6
    await backend.finish(W, [Outcome(parent.id, parent.attempt, "completed")])

    finished = 0
    while finished < 6:
        claimed = await backend.claim(W, ["default"], 100, 30)
        assert 1 <= len(claimed) <= 2  # the cap, never more: the parent is done
        await backend.finish(W, [Outcome(c.id, c.attempt, "completed") for c in claimed])
        finished += len(claimed)
    assert finished == 6


async def test_an_uncapped_owner_s_appended_steps_take_no_quota(backend: QueueBackend) -> None:
    flows = WorkflowService(JobService(backend, types()))
    detail = await flows.submit(WorkflowSpec("fan", (step("p"),)), owner_id="free")
    (parent,) = await backend.claim(W, ["default"], 10, 30)
    added = await append(backend, parent.id, detail.workflow.id, "free", [step("x")])
    async with backend.db.read() as conn:
        held = select(func.count()).where(job_limits.c.job_id.in_(added))
        assert (await conn.execute(held)).scalar_one() == 0
        limited = select(jobs.c.limited).where(jobs.c.id == added[0])
        assert (await conn.execute(limited)).scalar_one() is False


def test_the_longest_path_through_the_new_steps_is_found_whatever_the_shape() -> None:
    """Against every path of small random DAGs (edges only from a lower to a higher
    number): the longest through a chosen set of nodes, counted in steps."""
    rng = random.Random(7)
    for _ in range(200):
        size = rng.randint(1, 9)
        edges = [(str(b), str(a)) for a in range(size) for b in range(a + 1, size)
                 if rng.random() < 0.35]  # fmt: skip
        chosen = rng.sample([str(i) for i in range(size)], rng.randint(1, size))
        children: dict[str, list[str]] = {}
        for job, dep in edges:
            children.setdefault(dep, []).append(job)
        every = [p for start in map(str, range(size)) for p in _paths(children, start)]
        expected = max(len(p) for p in every if set(p) & set(chosen))
        assert longest_through(edges, chosen) == expected


def _paths(children: dict[str, list[str]], node: str) -> list[list[str]]:
    """Every path down from `node` to a step with no dependents."""
    below = [[node, *rest] for c in children.get(node, []) for rest in _paths(children, c)]
    return below or [[node]]
