"""The queue operations, one suite run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ErrorInfo, JobFilter, NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.errors import IllegalTransition, NotFound
from conveyor.store.backend import QueueBackend

W = "worker-a"


def job(**fields: object) -> NewJob:
    return NewJob(type="noop", payload={"n": fields.pop("n", 0)}, **fields)  # type: ignore[arg-type]


async def test_enqueue_then_claim_and_complete(backend: QueueBackend) -> None:
    (enqueued,) = await backend.enqueue([job(n=1)])
    assert enqueued.created and enqueued.state is JobState.QUEUED

    (claimed,) = await backend.claim(W, ["default"], 10, lease_s=30)
    assert claimed.id == enqueued.id and claimed.attempt == 1 and claimed.payload == {"n": 1}
    running = await backend.get(enqueued.id)
    assert running.state is JobState.RUNNING and running.worker_id == W

    accepted = await backend.finish(W, [Outcome(claimed.id, 1, "completed", result={"ok": 1})])
    done = await backend.get(enqueued.id)
    assert accepted == {enqueued.id}
    assert done.state is JobState.COMPLETED and done.result == {"ok": 1} and done.progress == 100
    assert done.finished_at is not None and done.started_at is not None


async def test_enqueue_many_is_one_transaction_and_claims_in_batches(
    backend: QueueBackend,
) -> None:
    results = await backend.enqueue([job(n=i) for i in range(250)])
    assert len({r.id for r in results}) == 250
    first = await backend.claim(W, ["default"], 100, 30)
    second = await backend.claim("worker-b", ["default"], 1000, 30)
    assert len(first) == 100 and len(second) == 150
    assert not {j.id for j in first} & {j.id for j in second}


async def test_enqueue_in_the_callers_transaction_rolls_back_with_it(
    backend: QueueBackend,
) -> None:
    class Boom(Exception):
        pass

    async def enqueue_then_fail() -> None:
        async with backend.transaction() as conn:
            await backend.enqueue([job()], conn=conn)
            raise Boom

    with pytest.raises(Boom):
        await enqueue_then_fail()
    assert await backend.claim(W, ["default"], 10, 30) == []

    async with backend.transaction() as conn:
        (kept,) = await backend.enqueue([job()], conn=conn)
    assert (await backend.get(kept.id)).state is JobState.QUEUED


async def test_claims_follow_priority_then_age_and_only_named_queues(
    backend: QueueBackend,
) -> None:
    low = await backend.enqueue([job(n=1, priority=0)])
    high = await backend.enqueue([job(n=2, priority=10)])
    other = await backend.enqueue([job(n=3, priority=99, queue="other")])
    (first,) = await backend.claim(W, ["default"], 1, 30)
    (second,) = await backend.claim(W, ["default"], 1, 30)
    assert [first.id, second.id] == [high[0].id, low[0].id]
    (third,) = await backend.claim(W, ["other", "default"], 5, 30)
    assert third.id == other[0].id


async def test_idempotency_key_returns_the_existing_job(backend: QueueBackend) -> None:
    (first,) = await backend.enqueue([job(idempotency_key="k1", owner_id="alice")])
    (again,) = await backend.enqueue([job(n=9, idempotency_key="k1", owner_id="alice")])
    (bobs,) = await backend.enqueue([job(idempotency_key="k1", owner_id="bob")])
    assert first.created and not again.created and again.id == first.id
    assert bobs.created and bobs.id != first.id
    # duplicates inside one batch collapse too
    batch = await backend.enqueue([job(idempotency_key="k2"), job(idempotency_key="k2")])
    assert batch[0].id == batch[1].id and [b.created for b in batch] == [True, False]


async def test_scheduled_jobs_do_not_start_early(backend: QueueBackend) -> None:
    (later,) = await backend.enqueue([job(run_at=utcnow() + timedelta(seconds=1.5))])
    assert later.state is JobState.SCHEDULED
    assert await backend.promote_due() == 0
    assert await backend.claim(W, ["default"], 10, 30) == []
    await asyncio.sleep(1.6)
    assert await backend.promote_due() == 1
    (claimed,) = await backend.claim(W, ["default"], 10, 30)
    assert claimed.id == later.id


async def test_retry_outcome_waits_for_its_backoff(backend: QueueBackend) -> None:
    (queued,) = await backend.enqueue([job(max_attempts=3)])
    (claimed,) = await backend.claim(W, ["default"], 1, 30)
    retry_at = utcnow() + timedelta(seconds=1)
    error = ErrorInfo("RuntimeError", "boom", "trace")
    await backend.finish(W, [Outcome(claimed.id, 1, "retry", error=error, retry_at=retry_at)])
    record = await backend.get(queued.id)
    assert record.state is JobState.RETRYING and record.run_at == retry_at
    assert record.errors[0]["type"] == "RuntimeError" and record.errors[0]["attempt"] == 1
    assert await backend.promote_due() == 0
    await asyncio.sleep(1.1)
    assert await backend.promote_due() == 1
    (again,) = await backend.claim(W, ["default"], 1, 30)
    assert again.attempt == 2
    await backend.finish(W, [Outcome(again.id, 2, "failed", error=error)])
    failed = await backend.get(queued.id)
    assert failed.state is JobState.FAILED and len(failed.errors) == 2


async def test_late_result_from_a_worker_that_lost_its_lease_is_rejected(
    backend: QueueBackend,
) -> None:
    (queued,) = await backend.enqueue([job(max_attempts=3)])
    (first,) = await backend.claim("slow", ["default"], 1, lease_s=0.2)
    await asyncio.sleep(0.3)
    report = await backend.rescue_expired()
    assert report.requeued == [queued.id]
    (second,) = await backend.claim("fast", ["default"], 1, lease_s=30)
    assert second.attempt == 2

    late = await backend.finish("slow", [Outcome(first.id, 1, "completed", result="late")])
    assert late == set()
    assert await backend.finish("fast", [Outcome(second.id, 2, "completed", result="ok")]) == {
        queued.id
    }
    record = await backend.get(queued.id)
    assert record.result == "ok" and record.attempt == 2
    assert record.errors[0]["type"] == "LeaseExpired"


async def test_rescue_fails_jobs_whose_attempts_are_spent(backend: QueueBackend) -> None:
    (queued,) = await backend.enqueue([job(max_attempts=1)])
    await backend.claim(W, ["default"], 1, lease_s=0.1)
    await asyncio.sleep(0.2)
    report = await backend.rescue_expired()
    assert report.failed == [queued.id] and report.requeued == []
    assert (await backend.get(queued.id)).state is JobState.FAILED


async def test_heartbeat_extends_every_lease_of_the_worker(backend: QueueBackend) -> None:
    await backend.register_worker(W, "host", 1, ["default"], 4)
    await backend.enqueue([job(n=i) for i in range(3)])
    claimed = await backend.claim(W, ["default"], 3, lease_s=0.3)
    for _ in range(4):
        await asyncio.sleep(0.15)
        owned = await backend.heartbeat(W, lease_s=0.3)
        assert owned == {c.id for c in claimed}
        assert (await backend.rescue_expired()).requeued == []
    (alive,) = await backend.list_workers(alive_within=5)
    assert alive.id == W


async def test_release_gives_jobs_back_without_spending_an_attempt(
    backend: QueueBackend,
) -> None:
    (queued,) = await backend.enqueue([job()])
    (claimed,) = await backend.claim(W, ["default"], 1, 30)
    assert await backend.release("someone-else", [claimed.id]) == set()
    assert await backend.release(W, [claimed.id]) == {claimed.id}
    record = await backend.get(queued.id)
    assert record.state is JobState.QUEUED and record.attempt == 0
    (again,) = await backend.claim(W, ["default"], 1, 30)
    assert again.attempt == 1


@pytest.mark.parametrize("state", ["scheduled", "queued", "retrying", "running"])
async def test_cancel_in_each_cancellable_state(backend: QueueBackend, state: str) -> None:
    job_id = await _job_in_state(backend, state)
    cancelled = await backend.cancel(job_id)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at is not None
    # a running job's worker can no longer complete it
    assert await backend.finish(W, [Outcome(job_id, 1, "completed")]) == set()


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
async def test_cancel_of_a_finished_job_is_an_illegal_transition(
    backend: QueueBackend, state: str
) -> None:
    job_id = await _job_in_state(backend, state)
    with pytest.raises(IllegalTransition):
        await backend.cancel(job_id)
    assert (await backend.get(job_id)).state.value == state


@pytest.mark.parametrize("state", ["failed", "cancelled"])
async def test_user_retry_requeues_failed_and_cancelled_jobs(
    backend: QueueBackend, state: str
) -> None:
    job_id = await _job_in_state(backend, state)
    record = await backend.retry(job_id)
    assert record.state is JobState.QUEUED and record.attempt == 0
    (claimed,) = await backend.claim(W, ["default"], 1, 30)
    assert claimed.id == job_id and claimed.attempt == 1


@pytest.mark.parametrize("state", ["scheduled", "queued", "running", "retrying", "completed"])
async def test_user_retry_of_a_live_or_completed_job_is_refused(
    backend: QueueBackend, state: str
) -> None:
    job_id = await _job_in_state(backend, state)
    with pytest.raises(IllegalTransition):
        await backend.retry(job_id)


async def test_admin_set_state_follows_the_state_machine(backend: QueueBackend) -> None:
    job_id = await _job_in_state(backend, "completed")
    with pytest.raises(IllegalTransition):
        await backend.set_state(job_id, JobState.RUNNING)
    queued = await _job_in_state(backend, "queued")
    with pytest.raises(IllegalTransition):
        await backend.set_state(queued, JobState.COMPLETED)
    assert (await backend.set_state(queued, JobState.CANCELLED)).state is JobState.CANCELLED
    assert (await backend.set_state(queued, JobState.QUEUED)).state is JobState.QUEUED


async def test_owner_scoping_hides_other_owners_jobs(backend: QueueBackend) -> None:
    (alices,) = await backend.enqueue([job(owner_id="alice")])
    with pytest.raises(NotFound):
        await backend.get(alices.id, owner_id="bob")
    with pytest.raises(NotFound):
        await backend.cancel(alices.id, owner_id="bob")
    assert (await backend.get(alices.id, owner_id="alice")).owner_id == "alice"
    assert [j.id for j in await backend.list_jobs(JobFilter(owner_id="bob"))] == []


async def test_progress_is_fenced_to_the_running_attempt(backend: QueueBackend) -> None:
    (queued,) = await backend.enqueue([job()])
    await backend.claim(W, ["default"], 1, 30)
    assert await backend.set_progress(W, queued.id, 1, 40, "reading")
    assert not await backend.set_progress("other", queued.id, 1, 90, "nope")
    record = await backend.get(queued.id)
    assert (record.progress, record.progress_message) == (40, "reading")


async def test_prune_deletes_old_finished_jobs_only(backend: QueueBackend) -> None:
    done = await _job_in_state(backend, "completed")
    failed = await _job_in_state(backend, "failed")
    live = [await _job_in_state(backend, s) for s in ("queued", "scheduled", "running")]
    future = utcnow() + timedelta(seconds=1)
    assert (
        await backend.prune(
            completed_before=future, failed_before=utcnow() - timedelta(days=1), batch=1
        )
        == 1
    )
    with pytest.raises(NotFound):
        await backend.get(done)
    assert (await backend.get(failed)).state is JobState.FAILED
    assert await backend.prune(completed_before=future, failed_before=future, batch=1) == 1
    for job_id in live:
        assert (await backend.get(job_id)).state is not JobState.COMPLETED


async def test_counts_by_queue_and_state(backend: QueueBackend) -> None:
    await backend.enqueue([job(), job(), job(queue="mail")])
    counts = {(c.queue, c.state): c.count for c in await backend.counts()}
    assert counts == {("default", JobState.QUEUED): 2, ("mail", JobState.QUEUED): 1}


async def _job_in_state(backend: QueueBackend, state: str) -> str:
    """A job brought to `state` through the real transitions."""
    if state == "scheduled":
        (e,) = await backend.enqueue([job(run_at=utcnow() + timedelta(hours=1))])
        return e.id
    (e,) = await backend.enqueue([job(max_attempts=2)])
    if state == "queued":
        return e.id
    worker = f"w-{e.id[-6:]}"
    (c,) = [c for c in await backend.claim(worker, ["default"], 100, 30) if c.id == e.id]
    later = utcnow() + timedelta(hours=1)
    error = ErrorInfo("E", "m")
    outcomes = {
        "running": None,
        "completed": Outcome(c.id, 1, "completed"),
        "failed": Outcome(c.id, 1, "failed", error=error),
        "retrying": Outcome(c.id, 1, "retry", error=error, retry_at=later),
    }
    if state == "cancelled":
        await backend.cancel(e.id)
    elif (outcome := outcomes[state]) is not None:
        assert await backend.finish(worker, [outcome]) == {e.id}
    if state == "running":
        return e.id
    assert (await backend.get(e.id)).state.value == state
    return e.id


async def test_list_filters_by_tag_state_and_creation_time(backend: QueueBackend) -> None:

    before = utcnow()
    tagged = await backend.enqueue(
        [job(tags=("red", "big")), job(tags=("red",)), job(tags=("blue",))]
    )
    after = utcnow()
    red = await backend.list_jobs(JobFilter(tag="red"))
    assert {j.id for j in red} == {tagged[0].id, tagged[1].id}
    assert [j.id for j in await backend.list_jobs(JobFilter(tag="big"))] == [tagged[0].id]
    assert await backend.list_jobs(JobFilter(created_before=before)) == []
    assert (
        len(
            await backend.list_jobs(
                JobFilter(created_after=before, created_before=after + timedelta(seconds=1))
            )
        )
        == 3
    )
    page = await backend.list_jobs(limit=2)
    rest = await backend.list_jobs(after_id=page[-1].id, limit=2)
    assert [j.id for j in page + rest] == [t.id for t in reversed(tagged)]


async def test_throughput_counts_finished_jobs_per_minute(backend: QueueBackend) -> None:
    await _job_in_state(backend, "completed")
    await _job_in_state(backend, "completed")
    await _job_in_state(backend, "failed")
    (point,) = await backend.throughput(utcnow() - timedelta(minutes=5))
    assert (point.completed, point.failed) == (2, 1)
    assert point.minute <= utcnow()


async def test_star_claims_every_queue_but_the_excluded(backend: QueueBackend) -> None:
    await backend.enqueue([job(queue="a"), job(queue="b"), job(queue="capped")])
    claimed = await backend.claim(W, ["*"], 10, 30, exclude=["capped"])
    assert sorted(j.queue for j in claimed) == ["a", "b"]
    (last,) = await backend.claim(W, ["capped"], 10, 30)
    assert last.queue == "capped"


async def test_only_a_worker_starts_a_job(backend: QueueBackend) -> None:
    queued = await _job_in_state(backend, "queued")
    with pytest.raises(IllegalTransition, match="only a worker"):
        await backend.set_state(queued, JobState.RUNNING)
    assert (await backend.get(queued)).state is JobState.QUEUED
