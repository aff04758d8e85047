"""Fair dispatch and workflows, both databases (issue #15 x #16): a step takes its job type's
fair key (the owner by default) and a fair tag as a submit's ready job does, at submit for
the steps ready then, at release for the others. So a tenant's large fan-out does not starve
the jobs another tenant submits after it (docs/flow-control.md, "Fair dispatch")."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conveyor.domain.jobs import Outcome
from conveyor.domain.states import JobState
from conveyor.domain.workflows import StepSpec, WorkflowSpec
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import jobs
from tests.services.test_workflows import service
from tests.store.test_fairness import burst, claim_order, user
from tests.store.test_workflow_appends import append

W = "worker-fair-wf"
FAN = 1_000


def fan_out(after_root: bool) -> WorkflowSpec:
    """`FAN` steps and a join; with `after_root`, the branches wait for a root step."""
    root = (StepSpec("root", "wf_step", {"log": "-"}),) if after_root else ()
    deps = ("root",) if after_root else ()
    branches = tuple(StepSpec(f"b{i}", "wf_step", {"log": "-"}, deps) for i in range(FAN))
    join = StepSpec("join", "wf_step", {"log": "-"}, tuple(f"b{i}" for i in range(FAN)))
    return WorkflowSpec("fan", (*root, *branches, join))


@pytest.mark.parametrize("released", [False, True], ids=["ready-at-submit", "released"])
async def test_a_tenant_behind_a_large_fan_out_starts_within_the_bound(
    backend: QueueBackend, released: bool
) -> None:
    detail = await service(backend).submit(fan_out(released), owner_id="A")
    if released:  # the root runs; its finish releases the branches (the trigger tags them)
        (root,) = await backend.claim(W, ["default"], 1, 30)
        await backend.finish(W, [Outcome(root.id, root.attempt, "completed", result={})])
    async with backend.db.read() as conn:
        keys = set(
            (await conn.execute(select(jobs.c.fair_key).where(
                jobs.c.workflow_id == detail.workflow.id, jobs.c.state == JobState.QUEUED.value
            ))).scalars()
        )  # fmt: skip
    assert keys == {"A"}
    await backend.enqueue(burst("B", 10))

    order = await claim_order(backend, 30, batch=1)

    assert_within_bound(order)


async def test_steps_appended_at_run_time_take_their_type_s_fair_key_and_a_tag_at_release(
    backend: QueueBackend,
) -> None:
    """`ctx.append_steps`' steps are keyed as submitted ones: released by their appender's
    finish, they are tagged from the band's head, and B's later burst is not starved."""
    spec = WorkflowSpec("grow", (StepSpec("root", "wf_step", {"log": "-"}),))
    detail = await service(backend).submit(spec, owner_id="A")
    (root,) = await backend.claim(W, ["default"], 1, 30)
    grown = [StepSpec(f"a{i}", "wf_step", {"log": "-"}) for i in range(FAN)]
    await append(backend, root.id, detail.workflow.id, "A", grown)
    await backend.finish(W, [Outcome(root.id, root.attempt, "completed", result={})])
    async with backend.db.read() as conn:
        keys = (await conn.execute(select(jobs.c.fair_key).where(
            jobs.c.workflow_id == detail.workflow.id, jobs.c.state == JobState.QUEUED.value
        ))).scalars().all()  # fmt: skip
    assert len(keys) == FAN and set(keys) == {"A"}
    await backend.enqueue(burst("B", 10))

    order = await claim_order(backend, 30, batch=1)

    assert_within_bound(order)


async def test_ready_steps_are_tagged_as_a_submit_of_them_would_be_across_slices(
    backend: QueueBackend,
) -> None:
    """A weighted owner's fan-out of 2,500 ready steps (three slices of the submit) behind
    another key's queued jobs and some of its own: rank r of its ready steps in step order
    gets max(V, L) + r / w, V the band's first queued tag and L its key's last, read before
    the submit (docs/flow-control.md "Fair dispatch"); each slice goes on from the last's
    tags. The join, waiting, keeps its own until its release."""
    owner = await user(backend, "weighted", weight=2.0)
    await backend.enqueue(burst("X", 5))
    await backend.enqueue(burst(owner, 3))
    async with backend.db.read() as conn:
        queued = (await conn.execute(select(jobs.c.fair_key, jobs.c.fair_tag))).all()
    v = min(tag for _, tag in queued)
    last = max(tag for key, tag in queued if key == owner)
    branches = tuple(StepSpec(f"b{i}", "wf_step", {"log": "-"}) for i in range(2_500))
    join = StepSpec("join", "wf_step", {"log": "-"}, tuple(b.name for b in branches))

    detail = await service(backend).submit(WorkflowSpec("wide", (*branches, join)), owner_id=owner)

    async with backend.db.read() as conn:
        tags = dict((await conn.execute(
            select(jobs.c.step, jobs.c.fair_tag).where(jobs.c.workflow_id == detail.workflow.id)
        )).all())  # fmt: skip
    start = max(v, last)
    assert [tags[b.name] for b in branches] == pytest.approx(
        [start + r / 2.0 for r in range(1, len(branches) + 1)]
    )
    assert tags["join"] == pytest.approx(detail.workflow.created_at.timestamp())


def assert_within_bound(order: list[str]) -> None:
    positions = [n for n, owner in enumerate(order, start=1) if owner == "B"]
    # The documented bound, equal weights: B's k-th job is among the first 2k + 1 claims.
    assert len(positions) == 10, order
    assert all(p <= 2 * k + 1 for k, p in enumerate(positions, start=1)), positions
