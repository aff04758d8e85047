"""Workflows end to end through the service, both databases: steps claimed and finished as
a worker does (the release is the database's triggers), runs counted from the handlers'
side (here: the test's own driver records each step it runs)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conveyor.domain.jobs import ErrorInfo, Outcome
from conveyor.domain.states import JobState
from conveyor.domain.workflows import (
    DependencyPolicy,
    StepSpec,
    WorkflowDetail,
    WorkflowSpec,
    WorkflowState,
)
from conveyor.errors import (
    Conflict,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidInput,
    NotFound,
    QuotaExceeded,
)
from conveyor.services.flow import FlowService
from conveyor.services.jobs import JobService, Submission
from conveyor.services.workflows import WorkflowService
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import events, job_dependencies, jobs, workflows
from conveyor.worker.registry import Registry
from tests.support import workflow_handlers

W = "worker-wf"
OWNER = "alice"


def service(backend: QueueBackend) -> WorkflowService:
    types = Registry()
    types.include(workflow_handlers.blueprint)
    return WorkflowService(JobService(backend, types))


def step(name: str, *deps: str, policy: DependencyPolicy | None = None) -> StepSpec:
    return StepSpec(name, "wf_step", {"log": "-"}, deps, policy)


async def drive(
    backend: QueueBackend,
    fail: frozenset[str] = frozenset(),
    ran: list[str] | None = None,
    stop_after: int | None = None,
) -> list[str]:
    """Claim and finish what is queued until nothing is: each step completes with its
    dependencies' results (as the worker hands them), or fails when named in `fail`."""
    ran = [] if ran is None else ran
    while True:
        claimed = await backend.claim(W, ["default"], 100, 30)
        if not claimed:
            return ran
        outcomes = []
        for job in claimed:
            found = await backend.step_inputs(job.id)
            assert found is not None
            _, name, results = found
            ran.append(name)
            if name in fail:
                outcomes.append(Outcome(job.id, job.attempt, "failed", error=ErrorInfo("E", name)))
            else:
                result = {"step": name, "saw": results}
                outcomes.append(Outcome(job.id, job.attempt, "completed", result=result))
        await backend.finish(W, outcomes)
        if stop_after is not None and len(ran) >= stop_after:
            return ran


def by_name(detail: WorkflowDetail) -> dict[str, Any]:
    return {s.name: s for s in detail.steps}


async def count(backend: QueueBackend, table: Any) -> int:
    async with backend.db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


DIAMOND = WorkflowSpec("diamond", (step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")))


async def test_a_diamond_runs_its_join_once_after_both_and_it_sees_both_results(
    backend: QueueBackend,
) -> None:
    flows = service(backend)
    detail = await flows.submit(DIAMOND, owner_id=OWNER)
    states = {s.name: s.state for s in detail.steps}
    assert states == {"a": JobState.QUEUED, "b": JobState.WAITING, "c": JobState.WAITING,
                      "d": JobState.WAITING}  # fmt: skip
    ran = await drive(backend)
    assert sorted(ran) == ["a", "b", "c", "d"] and ran[-1] == "d"
    done = await flows.get(detail.workflow.id, OWNER)
    steps = by_name(done)
    assert done.workflow.state is WorkflowState.COMPLETED and done.workflow.settled_at
    assert set(steps["d"].result["saw"]) == {"b", "c"}
    assert steps["d"].result["saw"]["b"]["step"] == "b"
    assert steps["d"].started_at >= max(steps["b"].finished_at, steps["c"].finished_at)
    assert steps["d"].ready_at is not None
    assert steps["d"].depends_on == ("b", "c")
    async with backend.db.read() as conn:
        said = (
            await conn.execute(
                select(events.c.state).where(
                    events.c.type == "workflow", events.c.job_id == detail.workflow.id
                )
            )
        ).scalars().all()  # fmt: skip
    assert said == ["completed"]


async def test_bad_step_payload_is_refused_naming_the_step_and_nothing_is_stored(
    backend: QueueBackend,
) -> None:
    flows = service(backend)
    bad = WorkflowSpec("bad", (step("a"), StepSpec("b", "wf_step", {"log": 3, "x": 1}, ("a",))))
    with pytest.raises(InvalidInput) as caught:
        await flows.submit(bad, owner_id=OWNER)
    assert caught.value.details["field"] == "steps.1.payload"
    unknown = WorkflowSpec("bad", (step("a"), StepSpec("b", "no_such_type", {})))
    with pytest.raises(InvalidInput) as caught:
        await flows.submit(unknown, owner_id=OWNER)
    assert caught.value.details["field"] == "steps.1.type"
    assert await count(backend, workflows) == 0 and await count(backend, jobs) == 0


def wide(width: int, bad_at: int | None = None) -> WorkflowSpec:
    """A fan-out of `width` steps and a join; step `bad_at`'s payload refused by its type."""
    fan = tuple(
        StepSpec(f"s{i}", "wf_step", {"log": 3} if i == bad_at else {"log": "-"})
        for i in range(width)
    )
    return WorkflowSpec("wide", (*fan, step("join", *(s.name for s in fan))))


async def test_a_bad_step_in_a_later_slice_is_refused_and_nothing_is_stored(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A submit stores its steps a slice at a time (services/workflows.py): bad input in a
    slice after the first, found while an earlier slice's insert ran, rolls all back."""
    monkeypatch.setattr("conveyor.services.workflows.SLICE", 4)
    flows = service(backend)
    with pytest.raises(InvalidInput) as caught:
        await flows.submit(wide(10, bad_at=9), owner_id=OWNER)
    assert caught.value.details["field"] == "steps.9.payload"
    for table in (workflows, jobs, job_dependencies, events):
        assert await count(backend, table) == 0
    detail = await flows.submit(wide(10), owner_id=OWNER)  # the connection is usable again
    assert len(detail.steps) == 11


async def test_a_workflow_stored_in_slices_is_the_whole_workflow(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each slice's edges name steps of earlier slices: the join waits for every one, runs
    once, and the answer and a read agree; the same key again stores nothing more."""
    monkeypatch.setattr("conveyor.services.workflows.SLICE", 4)
    flows = service(backend)
    detail = await flows.submit(wide(10), owner_id=OWNER, idempotency_key="w")
    again = await flows.submit(wide(10), owner_id=OWNER, idempotency_key="w")
    assert again.workflow.id == detail.workflow.id
    read = await flows.get(detail.workflow.id, OWNER)
    assert read.steps == detail.steps and read.workflow.steps == 11
    assert by_name(detail)["join"].depends_on == tuple(sorted(f"s{i}" for i in range(10)))
    assert await count(backend, job_dependencies) == 10 and await count(backend, jobs) == 11
    ran = await drive(backend)
    assert ran[-1] == "join" and sorted(ran[:-1]) == sorted(f"s{i}" for i in range(10))
    done = by_name(await flows.get(detail.workflow.id, OWNER))["join"]
    assert len(done.result["saw"]) == 10


@pytest.mark.parametrize(
    ("policy", "expected", "ran"),
    [
        (DependencyPolicy.CANCEL, {"b": JobState.CANCELLED, "c": JobState.CANCELLED}, ["a"]),
        (DependencyPolicy.SKIP, {"b": JobState.SKIPPED, "c": JobState.COMPLETED}, ["a", "c"]),
        (DependencyPolicy.RUN, {"b": JobState.COMPLETED, "c": JobState.COMPLETED},
         ["a", "b", "c"]),
    ],
)  # fmt: skip
async def test_policies_on_a_chain_after_a_failure(
    backend: QueueBackend, policy: DependencyPolicy, expected: dict[str, JobState], ran: list[str]
) -> None:
    flows = service(backend)
    spec = WorkflowSpec("chain", (step("a"), step("b", "a", policy=policy), step("c", "b")))
    detail = await flows.submit(spec, owner_id=OWNER)
    assert await drive(backend, fail=frozenset({"a"})) == ran
    done = await flows.get(detail.workflow.id)
    assert {n: s.state for n, s in by_name(done).items() if n != "a"} == expected
    assert done.workflow.state is WorkflowState.FAILED
    if policy is DependencyPolicy.SKIP:
        assert by_name(done)["c"].result["saw"] == {"b": None}


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (DependencyPolicy.CANCEL, {"d": JobState.CANCELLED, "e": JobState.CANCELLED}),
        (DependencyPolicy.SKIP, {"d": JobState.SKIPPED, "e": JobState.COMPLETED}),
        (DependencyPolicy.RUN, {"d": JobState.COMPLETED, "e": JobState.COMPLETED}),
    ],
)
async def test_policies_on_a_nested_diamond(
    backend: QueueBackend, policy: DependencyPolicy, expected: dict[str, JobState]
) -> None:
    """a -> (b, c); c fails; d after b and c (the policy under test), e after d and b."""
    flows = service(backend)
    spec = WorkflowSpec(
        "nested",
        (step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"), step("e", "d", "b")),
        on_dependency_failure=policy,
    )
    detail = await flows.submit(spec, owner_id=OWNER)
    ran = await drive(backend, fail=frozenset({"c"}))
    done = by_name(await flows.get(detail.workflow.id))
    assert {n: done[n].state for n in ("d", "e")} == expected
    assert sorted(ran) == sorted({"a", "b", "c"} | {n for n, s in expected.items()
                                                    if s is JobState.COMPLETED})  # fmt: skip
    assert len(ran) == len(set(ran))


async def test_cancel_a_running_workflow(backend: QueueBackend) -> None:
    flows = service(backend)
    detail = await flows.submit(DIAMOND, owner_id=OWNER)
    (a,) = await backend.claim(W, ["default"], 10, 30)
    cancelled = await flows.cancel(detail.workflow.id, OWNER)
    assert cancelled.workflow.state is WorkflowState.CANCELLED
    assert {s.state for s in cancelled.steps} == {JobState.CANCELLED}
    assert await backend.finish(W, [Outcome(a.id, a.attempt, "completed")]) is not None
    assert (await backend.get(a.id)).state is JobState.CANCELLED
    with pytest.raises(NotFound):
        await flows.cancel(detail.workflow.id, "mallory")


async def test_retry_runs_the_failed_part_again_and_keeps_completed_results(
    backend: QueueBackend,
) -> None:
    flows = service(backend)
    spec = WorkflowSpec("r", (step("a"), step("b", "a"), step("x", "a"), step("c", "b")))
    detail = await flows.submit(spec, owner_id=OWNER)
    first = await drive(backend, fail=frozenset({"b"}))
    assert sorted(first) == ["a", "b", "x"]
    with pytest.raises(IllegalTransition):
        await flows.retry((await flows.submit(DIAMOND, owner_id=OWNER)).workflow.id)
    failed = await flows.get(detail.workflow.id)
    assert failed.workflow.state is WorkflowState.FAILED
    kept = {n: s.result for n, s in by_name(failed).items() if s.state is JobState.COMPLETED}
    retried = await flows.retry(detail.workflow.id, OWNER)
    assert retried.workflow.state is WorkflowState.RUNNING
    assert {n: s.state for n, s in by_name(retried).items()} == {
        "a": JobState.COMPLETED, "x": JobState.COMPLETED, "b": JobState.QUEUED,
        "c": JobState.WAITING,
    }  # fmt: skip
    again: list[str] = []
    while True:  # the diamond submitted above runs too: only this workflow's steps count
        before = len(again)
        await drive(backend, ran=again, stop_after=1)
        if len(again) == before:
            break
    done = await flows.get(detail.workflow.id)
    assert done.workflow.state is WorkflowState.COMPLETED
    assert {n: s.result for n, s in by_name(done).items() if n in kept} == kept
    assert again.count("a") == 1 and again.count("x") == 0  # only the diamond's "a" ran
    assert again.count("b") == 2 and again.count("c") == 2  # ours and the diamond's


async def test_delete_only_settled_and_page_newest_first(backend: QueueBackend) -> None:
    flows = service(backend)
    first = await flows.submit(DIAMOND, owner_id=OWNER)
    second = await flows.submit(DIAMOND, owner_id=OWNER)
    other = await flows.submit(DIAMOND, owner_id="bob")
    page = await flows.page(owner_id=OWNER, limit=1)
    assert [w.id for w in page] == [second.workflow.id] and page[0].steps == 4
    page = await flows.page(owner_id=OWNER, limit=5, before=page[0].id)
    assert [w.id for w in page] == [first.workflow.id]
    assert len(await flows.page(owner_id=None)) == 3
    with pytest.raises(Conflict):
        await flows.delete(first.workflow.id, OWNER)
    await flows.cancel(first.workflow.id)
    with pytest.raises(NotFound):
        await flows.delete(first.workflow.id, "bob")
    await flows.delete(first.workflow.id, OWNER)
    with pytest.raises(NotFound):
        await flows.get(first.workflow.id)
    assert await count(backend, jobs) == 8 and await count(backend, job_dependencies) == 8
    assert other.workflow.owner_id == "bob"


async def test_the_same_idempotency_key_returns_the_stored_workflow(backend: QueueBackend) -> None:
    flows = service(backend)
    one = await flows.submit(DIAMOND, owner_id=OWNER, idempotency_key="k")
    two = await flows.submit(DIAMOND, owner_id=OWNER, idempotency_key="k")
    assert one.workflow.id == two.workflow.id and await count(backend, workflows) == 1


async def test_an_idempotency_key_reused_with_another_body_is_refused(
    backend: QueueBackend,
) -> None:
    """As for jobs (docs/flow-control.md): a key names one request; another body under it is
    409 idempotency_key_reused, and nothing is stored."""
    flows = service(backend)
    await flows.submit(DIAMOND, owner_id=OWNER, idempotency_key="k")
    other = WorkflowSpec("other", (step("a"),))
    with pytest.raises(IdempotencyKeyReused):
        await flows.submit(other, owner_id=OWNER, idempotency_key="k")
    assert await count(backend, workflows) == 1 and await count(backend, jobs) == 4


async def test_the_same_key_submitted_at_once_stores_one_workflow(backend: QueueBackend) -> None:
    """Two submits racing with one key: one workflow stored, both answered with it (no
    unique-index error escapes as a 500)."""
    flows = service(backend)
    results = await asyncio.gather(
        *(flows.submit(DIAMOND, owner_id=OWNER, idempotency_key="race") for _ in range(4))
    )
    assert len({r.workflow.id for r in results}) == 1
    assert await count(backend, workflows) == 1 and await count(backend, jobs) == 4


async def test_pruning_keeps_a_long_running_workflow_and_prunes_a_settled_one(
    backend: QueueBackend, tmp_path: Path
) -> None:
    from datetime import timedelta

    from conveyor.domain.clock import utcnow

    flows = service(backend)
    long = await flows.submit(WorkflowSpec("long", (step("a"), step("b", "a"))), owner_id=OWNER)
    (a,) = await backend.claim(W, ["default"], 10, 30)
    await backend.finish(W, [Outcome(a.id, a.attempt, "completed")])  # a done, b queued
    short = await flows.submit(WorkflowSpec("short", (step("z"),)), owner_id=OWNER)
    claimed = await backend.claim(W, ["default"], 10, 30)
    z = next(c for c in claimed if c.id == short.steps[0].job_id)
    await backend.finish(W, [Outcome(z.id, z.attempt, "completed")])
    later = utcnow() + timedelta(days=1)
    await backend.prune(later, later)
    assert (await flows.get(long.workflow.id)).steps[0].state is JobState.COMPLETED
    with pytest.raises(NotFound):
        await flows.get(short.workflow.id)


async def test_the_queued_quota_counts_every_step_and_a_refusal_stores_nothing(
    backend: QueueBackend,
) -> None:
    flows = service(backend)
    flows.flow = FlowService(backend)
    flows.flow.quota_max_queued = 3
    with pytest.raises(QuotaExceeded):
        await flows.submit(DIAMOND, owner_id=OWNER)
    assert await count(backend, workflows) == 0 and await count(backend, jobs) == 0
    flows.flow.quota_max_queued = 4
    assert len((await flows.submit(DIAMOND, owner_id=OWNER)).steps) == 4


async def test_a_bad_step_is_named_before_the_quota_is_counted(backend: QueueBackend) -> None:
    """Every step of a workflow of at most one slice is checked before the owner's quota,
    as before slices: bad input answers 422, not 429."""
    flows = service(backend)
    flows.flow = FlowService(backend)
    flows.flow.quota_max_queued = 3
    with pytest.raises(InvalidInput) as caught:
        await flows.submit(wide(10, bad_at=4), owner_id=OWNER)
    assert caught.value.details["field"] == "steps.4.payload"
    assert await count(backend, workflows) == 0 and await count(backend, jobs) == 0


async def test_a_step_is_not_deleted_or_retried_alone(backend: QueueBackend) -> None:
    flows = service(backend)
    detail = await flows.submit(DIAMOND, owner_id=OWNER)
    cancelled = await flows.cancel(detail.workflow.id)
    jobs_ = JobService(backend, Registry())
    with pytest.raises(Conflict, match="with its workflow"):
        await jobs_.delete(cancelled.steps[0].job_id)
    ids = [s.job_id for s in cancelled.steps]
    assert (await jobs_.bulk("delete", ids=ids)).changed == 0
    with pytest.raises(IllegalTransition, match="with its workflow"):
        await jobs_.retry(ids[0])
    assert (await jobs_.bulk("retry", ids=ids)).changed == 0
    record = await jobs_.get(ids[0])
    assert record.workflow_id == detail.workflow.id and record.step == "a"
    assert await count(backend, jobs) == 4


async def test_a_submit_answers_what_a_read_of_the_stored_workflow_answers(
    backend: QueueBackend,
) -> None:
    """The submit builds its answer from the rows it inserted (no read-back of every step):
    the same detail as reading the workflow, policies, edges and ready times included."""
    flows = service(backend)
    spec = WorkflowSpec(
        "diamond",
        (step("a"), step("b", "a"), step("c", "a", policy=DependencyPolicy.SKIP),
         step("d", "b", "c")),
        on_dependency_failure=DependencyPolicy.RUN,
    )  # fmt: skip
    submitted = await flows.submit(spec, owner_id="u")
    assert submitted == await flows.get(submitted.workflow.id, "u")


async def test_one_finish_settling_steps_of_several_workflows_releases_each_once(
    backend: QueueBackend,
) -> None:
    """A worker's finish is one statement for all its outcomes: on PostgreSQL the release
    trigger runs once for the statement (migration 0020), over every workflow it touched."""
    flows = service(backend)
    fan = WorkflowSpec("fan", (step("p"), step("q"), step("r", "p", "q")))
    chain = WorkflowSpec("chain", (step("a"), step("b", "a"), step("c", "b")))
    ids = [(await flows.submit(s, owner_id=OWNER)).workflow.id for s in (fan, chain, fan)]

    ran = await drive(backend, fail=frozenset({"a"}))

    assert sorted(ran) == ["a", "p", "p", "q", "q", "r", "r"]
    first, failed, second = [await flows.get(i) for i in ids]
    for done in (first, second):
        assert done.workflow.state is WorkflowState.COMPLETED
        assert by_name(done)["r"].result["saw"] == {"p": {"step": "p", "saw": {}},
                                                    "q": {"step": "q", "saw": {}}}  # fmt: skip
    assert failed.workflow.state is WorkflowState.FAILED
    assert {n: s.state for n, s in by_name(failed).items()} == {
        "a": JobState.FAILED, "b": JobState.CANCELLED, "c": JobState.CANCELLED
    }  # fmt: skip


async def test_a_steps_idempotency_key_is_derived_and_takes_no_users_key(
    backend: QueueBackend,
) -> None:
    """A step's idempotency key is `wf:<workflow>:<step>` wherever it is read (the job's
    record; the handler's `ctx.idempotency_key`: tests/worker), but it is not stored: no
    query looks a step up by it, and its unique index entry was written again at each of
    the step's state changes (a claim, a finish). Stored, it also answered a submit of
    the owner's own that used the same key with the step instead of a new job."""
    flows = service(backend)
    detail = await flows.submit(DIAMOND, owner_id=OWNER)
    a = by_name(detail)["a"]
    record = await backend.get(a.job_id)
    assert record.idempotency_key == f"wf:{detail.workflow.id}:a"
    async with backend.db.read() as conn:
        keyed = await conn.scalar(
            select(func.count())
            .select_from(jobs)
            .where(jobs.c.workflow_id == detail.workflow.id, jobs.c.idempotency_key.is_not(None))
        )
    assert keyed == 0
    mine = JobService(backend, service(backend).jobs.registry)
    (made,) = await mine.submit_many(
        [Submission(type="wf_step", payload={"log": "-"}, idempotency_key=record.idempotency_key)],
        owner_id=OWNER,
    )
    assert made.created and made.id != a.job_id
