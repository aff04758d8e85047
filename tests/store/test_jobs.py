"""Jobs on both databases: enqueue, and what users and admins do to them (cancel, retry,
set a state, delete a finished one)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import DEFAULT_UNIQUE_STATES
from conveyor.domain.ids import uuid7
from conveyor.domain.jobs import NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.errors import Conflict, IdempotencyKeyReused, IllegalTransition, NotFound
from conveyor.store.backend import QueueBackend
from tests.store.helpers import job, job_in_state

W = "worker-a"


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
            await backend.enqueue([job()], tx=conn)
            raise Boom

    with pytest.raises(Boom):
        await enqueue_then_fail()
    assert await backend.claim(W, ["default"], 10, 30) == []

    async with backend.transaction() as conn:
        (kept,) = await backend.enqueue([job()], tx=conn)
    assert (await backend.get(kept.id)).state is JobState.QUEUED


async def test_an_enqueue_answers_with_the_record_a_read_returns(backend: QueueBackend) -> None:
    (done,) = await backend.enqueue([job(n=1)])
    assert done.created and done.record == await backend.get(done.id)


async def test_a_single_enqueue_stores_what_a_batch_stores(backend: QueueBackend) -> None:
    """One job goes through its own statement on PostgreSQL (scalars, not arrays): the same
    row, the same 'created' event, a job for later stays scheduled, as in a batch."""
    later = utcnow() + timedelta(hours=1)
    fields = {"queue": "q1", "priority": 3, "max_attempts": 4, "timeout_s": 2.5}
    extra = {"tags": ("a", "b"), "idempotency_key": "k", "owner_id": "alice"}
    (one,) = await backend.enqueue([job(n=1, **fields, **extra)])
    pair = await backend.enqueue([job(n=1, **fields, **{**extra, "owner_id": "bob"}), job()])
    (soon,) = await backend.enqueue([job(run_at=later)])
    alone, batched = await backend.get(one.id), await backend.get(pair[0].id)
    same = ("payload", "queue", "priority", "max_attempts", "timeout_s", "tags", "state")
    assert [getattr(alone, f) for f in same] == [getattr(batched, f) for f in same]
    assert alone.state is JobState.QUEUED and alone.tags == ["a", "b"]
    assert alone.idempotency_key == "k" and alone.owner_id == "alice"
    assert (await backend.get(soon.id)).state is JobState.SCHEDULED
    async with backend.transaction() as tx:
        created = await tx.connection.execute(
            text("SELECT job_id FROM events WHERE type = 'created'")
        )
        logged = {row[0] for row in created}
    assert {one.id, pair[0].id, pair[1].id, soon.id} <= logged


async def test_a_batch_stores_each_job_its_own_values_shared_or_not(
    backend: QueueBackend,
) -> None:
    """A batch's columns that every job shares go to PostgreSQL as one value each (fewer to
    encode): each job is stored with its own values, whichever columns its batch shares and
    whichever one job alone differs in."""
    later = utcnow() + timedelta(hours=1)
    shared: dict[str, Any] = {
        "owner_id": "alice", "type": "noop", "queue": "q1", "priority": 3, "max_attempts": 4,
        "tags": ("a",),
    }  # fmt: skip
    odd: list[dict[str, Any]] = [
        {}, {"queue": "q2"}, {"priority": 7}, {"max_attempts": 9}, {"tags": ()},
        {"owner_id": "bob"}, {"type": "other"}, {"run_at": later},
    ]  # fmt: skip
    for change in odd:
        wanted = [{**shared, **(change if i == 2 else {})} for i in range(4)]
        batch = [NewJob(payload={"n": i}, **fields) for i, fields in enumerate(wanted)]
        done = await backend.enqueue(batch)
        for i, fields in enumerate(wanted):
            record = await backend.get(done[i].id)
            stored = {key: getattr(record, key) for key in shared}
            late = fields.pop("run_at", None) is not None
            assert stored == {**fields, "tags": list(fields["tags"])}, (change, i)
            assert record.state is (JobState.SCHEDULED if late else JobState.QUEUED)
            assert record.payload == {"n": i}


@pytest.mark.parametrize("synchronous", [True, False])
async def test_a_relaxed_enqueue_turns_synchronous_commit_off_for_its_transaction_only(
    backend: QueueBackend, synchronous: bool
) -> None:
    """CONVEYOR_SUBMIT_SYNCHRONOUS_COMMIT=off: the submit's own transaction commits without
    waiting for its WAL flush (PostgreSQL); nothing else does. SQLite stores alike."""
    async with backend.transaction() as tx:
        (done,) = await backend.enqueue([job()], tx=tx, synchronous=synchronous)
        if backend.dialect == "postgresql":
            mode = await tx.connection.scalar(text("SHOW synchronous_commit"))
            assert mode == ("on" if synchronous else "off")
    (alone,) = await backend.enqueue([job()], synchronous=synchronous)  # its own transaction
    assert (await backend.get(done.id)).state is JobState.QUEUED
    assert (await backend.get(alone.id)).state is JobState.QUEUED
    if backend.dialect == "postgresql":
        async with backend.transaction() as tx:  # the pool's connections are left as they were
            assert await tx.connection.scalar(text("SHOW synchronous_commit")) == "on"


async def test_idempotency_key_returns_the_existing_job(backend: QueueBackend) -> None:
    (first,) = await backend.enqueue([job(idempotency_key="k1", owner_id="alice")])
    (again,) = await backend.enqueue([job(idempotency_key="k1", owner_id="alice")])
    (bobs,) = await backend.enqueue([job(idempotency_key="k1", owner_id="bob")])
    assert first.created and not again.created and again.id == first.id
    # the key reused for another payload: refused, nothing stored
    with pytest.raises(IdempotencyKeyReused):
        await backend.enqueue([job(n=9, idempotency_key="k1", owner_id="alice")])
    assert bobs.created and bobs.id != first.id
    # duplicates inside one batch collapse too
    batch = await backend.enqueue([job(idempotency_key="k2"), job(idempotency_key="k2")])
    assert batch[0].id == batch[1].id and [b.created for b in batch] == [True, False]


@pytest.mark.parametrize("state", ["scheduled", "queued", "retrying", "running"])
async def test_cancel_in_each_cancellable_state(backend: QueueBackend, state: str) -> None:
    job_id = await job_in_state(backend, state)
    cancelled = await backend.cancel(job_id)
    assert cancelled.state is JobState.CANCELLED and cancelled.finished_at is not None
    # a running job's worker can no longer complete it
    assert await backend.finish(W, [Outcome(job_id, 1, "completed")]) == set()


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
async def test_cancel_of_a_finished_job_is_an_illegal_transition(
    backend: QueueBackend, state: str
) -> None:
    job_id = await job_in_state(backend, state)
    with pytest.raises(IllegalTransition):
        await backend.cancel(job_id)
    assert (await backend.get(job_id)).state.value == state


@pytest.mark.parametrize("state", ["failed", "cancelled"])
async def test_user_retry_requeues_failed_and_cancelled_jobs(
    backend: QueueBackend, state: str
) -> None:
    job_id = await job_in_state(backend, state)
    record = await backend.retry(job_id)
    assert record.state is JobState.QUEUED and record.attempt == 0
    (claimed,) = await backend.claim(W, [record.queue], 1, 30)
    assert claimed.id == job_id and claimed.attempt == 1


@pytest.mark.parametrize("state", ["scheduled", "queued", "running", "retrying", "completed"])
async def test_user_retry_of_a_live_or_completed_job_is_refused(
    backend: QueueBackend, state: str
) -> None:
    job_id = await job_in_state(backend, state)
    with pytest.raises(IllegalTransition):
        await backend.retry(job_id)


async def test_admin_set_state_follows_the_state_machine(backend: QueueBackend) -> None:
    job_id = await job_in_state(backend, "completed")
    with pytest.raises(IllegalTransition):
        await backend.set_state(job_id, JobState.RUNNING)
    queued = await job_in_state(backend, "queued")
    with pytest.raises(IllegalTransition):
        await backend.set_state(queued, JobState.COMPLETED)
    assert (await backend.set_state(queued, JobState.CANCELLED)).state is JobState.CANCELLED
    assert (await backend.set_state(queued, JobState.QUEUED)).state is JobState.QUEUED


async def test_only_a_worker_starts_a_job(backend: QueueBackend) -> None:
    queued = await job_in_state(backend, "queued")
    with pytest.raises(IllegalTransition, match="only a worker"):
        await backend.set_state(queued, JobState.RUNNING)
    assert (await backend.get(queued)).state is JobState.QUEUED


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
async def test_delete_finished_removes_a_finished_job(backend: QueueBackend, state: str) -> None:
    job_id = await job_in_state(backend, state)
    await backend.delete_finished(job_id)
    with pytest.raises(NotFound):
        await backend.get(job_id)
    with pytest.raises(NotFound):
        await backend.delete_finished(job_id)


@pytest.mark.parametrize("state", ["scheduled", "queued", "running", "retrying"])
async def test_delete_finished_refuses_a_live_job(backend: QueueBackend, state: str) -> None:
    job_id = await job_in_state(backend, state)
    with pytest.raises(Conflict, match="cancel it first"):
        await backend.delete_finished(job_id)
    assert (await backend.get(job_id)).state.value == state


async def test_delete_finished_is_owner_scoped(backend: QueueBackend) -> None:
    (alices,) = await backend.enqueue([job(owner_id="alice")])
    await backend.cancel(alices.id)
    with pytest.raises(NotFound):
        await backend.delete_finished(alices.id, owner_id="bob")
    assert (await backend.get(alices.id)).state is JobState.CANCELLED
    await backend.delete_finished(alices.id, owner_id="alice")
    with pytest.raises(NotFound):
        await backend.get(alices.id)
    with pytest.raises(NotFound):
        await backend.delete_finished("no-such-job")


async def test_a_unique_duplicate_never_aborts_the_callers_transaction(
    backend: QueueBackend,
) -> None:
    live = NewJob(type="noop", payload={}, unique_key="u-1", unique_states=DEFAULT_UNIQUE_STATES)
    (first,) = await backend.enqueue([live])
    async with backend.transaction() as tx:
        (dup,) = await backend.enqueue([replace(live, id=uuid7())], tx)
        (other,) = await backend.enqueue([job(n=1)], tx)  # after it, in the same transaction
    assert dup.duplicate and not dup.created and dup.id == first.id
    assert other.created and (await backend.get(other.id)).state is JobState.QUEUED
    # Finished (and its states the default ones), it holds the key no more.
    await backend.cancel(first.id)
    (fresh,) = await backend.enqueue([replace(live, id=uuid7())])
    assert fresh.created and not fresh.duplicate
