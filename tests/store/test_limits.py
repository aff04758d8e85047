"""Flow control in the store: limited jobs admitted by their slots and tokens in the claim,
slots freed by every change out of running, the reconcile of a leaked slot (both DBs)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text, update

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import Concurrency, LimitKey, Rate
from conveyor.domain.jobs import ErrorInfo, NewJob, Outcome
from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput, Unavailable
from conveyor.scheduler.checks import checked_job
from conveyor.scheduler.scheduler import Scheduler, SchedulerConfig
from conveyor.store.backend import QueueBackend
from conveyor.store.driver import Claimed
from conveyor.store.drivers import sqlite as sqlite_driver
from conveyor.store.tables import job_limits, jobs, limit_slots
from conveyor.worker.registry import Registry
from tests.store.helpers import job
from tests.support import limit_handlers

W = "worker-a"


def limited(*keys: tuple[str, str], n: int = 0, **fields: object) -> NewJob:
    return job(n=n, limit_keys=tuple(LimitKey(name, key) for name, key in keys), **fields)


async def held(backend: QueueBackend) -> dict[str, tuple[str, str]]:
    """Each job holding a slot: its (limit, key) (the last, for a job holding several)."""
    query = select(limit_slots.c.job_id, limit_slots.c.name, limit_slots.c.key).where(
        limit_slots.c.job_id.isnot(None)
    )
    async with backend.db.read() as conn:
        return {r.job_id: (r.name, r.key) for r in (await conn.execute(query)).all()}


async def test_a_limited_job_is_stored_with_its_keys_and_an_unlimited_one_without(
    backend: QueueBackend,
) -> None:
    (a,) = await backend.enqueue([limited(("per_customer", "c1"), ("api", "k"))])
    (b,) = await backend.enqueue([job()])
    # The batch path too, mixing both kinds.
    c, d = await backend.enqueue([limited(("per_customer", "c2")), job(n=2)])
    async with backend.db.read() as conn:
        flags = dict((await conn.execute(select(jobs.c.id, jobs.c.limited))).all())
        rows = (await conn.execute(select(job_limits))).all()
    assert flags == {a.id: True, b.id: False, c.id: True, d.id: False}
    assert sorted((r.job_id, r.name, r.key) for r in rows) == sorted(
        [(a.id, "per_customer", "c1"), (a.id, "api", "k"), (c.id, "per_customer", "c2")]
    )


async def test_a_limited_job_enqueued_in_the_caller_s_transaction_too(
    backend: QueueBackend,
) -> None:
    """The path of the API's group commit: the job, its limits and its flag commit together."""
    await backend.define_limits([Concurrency("per_customer", 1, key="payload.customer")])
    async with backend.transaction() as tx:
        a, b = await backend.enqueue(
            [limited(("per_customer", "c1"), n=1), limited(("per_customer", "c1"), n=2)], tx
        )
        (c,) = await backend.enqueue([limited(("per_customer", "c2"), n=3)], tx)
    async with backend.db.read() as conn:
        flags = dict((await conn.execute(select(jobs.c.id, jobs.c.limited))).all())
        count = (await conn.execute(select(func.count()).select_from(job_limits))).scalar()
    assert flags == {a.id: True, b.id: True, c.id: True} and count == 3
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert len(claimed) == 2 and c.id in {x.id for x in claimed}


async def test_concurrency_limit_admits_n_per_key_and_a_finish_frees_the_slot(
    backend: QueueBackend,
) -> None:
    await backend.define_limits([Concurrency("per_customer", 2, key="payload.customer")])
    ones = await backend.enqueue([limited(("per_customer", "c1"), n=i) for i in range(5)])
    (other,) = await backend.enqueue([limited(("per_customer", "c2"), n=9)])
    claimed = await backend.claim(W, ["default"], 10, 30)
    ids = {c.id for c in claimed}
    assert len(ids & {e.id for e in ones}) == 2 and other.id in ids
    assert await backend.claim(W, ["default"], 10, 30) == []  # c1 full, c2 drained
    first = next(c for c in claimed if c.id in {e.id for e in ones})
    assert await backend.finish(W, [Outcome(first.id, 1, "completed")]) == {first.id}
    (next_one,) = await backend.claim(W, ["default"], 10, 30)
    assert next_one.id in {e.id for e in ones} and next_one.id not in ids
    assert len([k for k in (await held(backend)).values() if k == ("per_customer", "c1")]) == 2


async def test_one_finish_frees_the_slots_of_all_its_jobs_and_a_heartbeat_none(
    backend: QueueBackend,
) -> None:
    """The release is one pass per statement (PostgreSQL: a statement-level trigger,
    migration 0024): a heartbeat of running limited jobs frees nothing, and one finish of
    jobs of several kinds (completed, retrying, failed, an unlimited one among them) frees
    exactly the slots of the limited ones, in the finish's transaction."""
    await backend.define_limits([Concurrency("c", 1, key="payload.k")])
    queued = await backend.enqueue([limited(("c", f"k{i}"), n=i) for i in range(6)])
    await backend.enqueue([job(n=99)])
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert len(claimed) == 7
    await backend.heartbeat(W, 30)
    assert set(await held(backend)) == {q.id for q in queued}
    error = ErrorInfo(type="E", message="m")
    outcomes = [Outcome(c.id, 1, "completed") for c in claimed if c.id != queued[0].id]
    later = utcnow() + timedelta(hours=1)
    outcomes[0] = Outcome(outcomes[0].job_id, 1, "retry", error=error, retry_at=later)
    outcomes[1] = Outcome(outcomes[1].job_id, 1, "failed", error=error)
    assert await backend.finish(W, outcomes) == {o.job_id for o in outcomes}
    assert set(await held(backend)) == {queued[0].id}


async def test_a_job_under_several_limits_is_admitted_only_if_all_admit_it(
    backend: QueueBackend,
) -> None:
    """Partial admission: the global limit has room, the per-key one does not."""
    await backend.define_limits([Concurrency("global", 10), Concurrency("per_key", 1, key="owner")])
    a, b, c = await backend.enqueue(
        [
            limited(("global", ""), ("per_key", "alice"), n=1),
            limited(("global", ""), ("per_key", "alice"), n=2),
            limited(("global", ""), ("per_key", "bob"), n=3),
        ]
    )
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert {x.id for x in claimed} == {a.id, c.id}
    query = select(limit_slots.c.job_id, limit_slots.c.name, limit_slots.c.key)
    async with backend.db.read() as conn:
        taken = sorted(tuple(r) for r in (await conn.execute(query)).all() if r.job_id)
    wanted = [(a.id, "global", ""), (a.id, "per_key", "alice")]
    wanted += [(c.id, "global", ""), (c.id, "per_key", "bob")]
    assert taken == sorted(wanted)
    # b waits with its slot of `global` untaken: only running jobs hold slots.
    async with backend.db.read() as conn:
        holders = (await conn.execute(select(limit_slots.c.job_id))).scalars().all()
    assert b.id not in holders
    assert (await backend.get(b.id)).state is JobState.QUEUED


async def test_rate_and_concurrency_on_one_job(backend: QueueBackend) -> None:
    """A rate of 2 tokens (refilling 1 an hour) and a concurrency of 5: the rate decides."""
    await backend.define_limits(
        [Rate("stripe", 1, per_s=3600, key="owner", burst=2), Concurrency("c", 5)]
    )
    queued = await backend.enqueue([limited(("stripe", "o"), ("c", ""), n=i) for i in range(4)])
    claimed = await backend.claim(W, ["default"], 10, 30)
    assert len(claimed) == 2
    assert await backend.claim(W, ["default"], 10, 30) == []
    # the rate is per key: another owner's jobs are not held back by it
    (fresh,) = await backend.enqueue([limited(("stripe", "other"), ("c", ""))])
    (got,) = await backend.claim(W, ["default"], 10, 30)
    assert got.id == fresh.id
    # finishing frees a concurrency slot but makes no token
    await backend.finish(W, [Outcome(claimed[0].id, 1, "completed")])
    assert await backend.claim(W, ["default"], 10, 30) == []
    wait = await backend.next_token_in(["stripe"])
    assert wait is not None and 0 < wait <= 3600
    left = [q.id for q in queued if q.id not in {c.id for c in claimed}]
    assert {(await backend.get(i)).state for i in left} == {JobState.QUEUED}


def drifted(name: str = "one") -> float:
    sample = REGISTRY.get_sample_value("conveyor_limit_drift_corrected_total", {"limit": name})
    return sample or 0


def refused(name: str) -> float:
    return (
        REGISTRY.get_sample_value("conveyor_limit_admissions_refused_total", {"limit": name}) or 0
    )


async def test_refusals_are_counted_by_limit_name(backend: QueueBackend) -> None:
    await backend.define_limits([Concurrency("counted", 1)])
    await backend.enqueue([limited(("counted", ""), n=i) for i in range(3)])
    before = refused("counted")
    assert len(await backend.claim(W, ["default"], 10, 30)) == 1  # two picked, refused
    assert refused("counted") == before + 2


async def test_a_full_key_does_not_hold_back_other_jobs(backend: QueueBackend) -> None:
    """Head of line: a key at its limit with many queued jobs, then one other job."""
    await backend.define_limits([Concurrency("one", 1, key="payload.k")])
    await backend.enqueue([limited(("one", "busy"), n=0)])
    (first,) = await backend.claim(W, ["default"], 1, 30)
    await backend.enqueue([limited(("one", "busy"), n=i) for i in range(1, 301)])
    (plain,) = await backend.enqueue([job(n=1000)])
    (other,) = await backend.enqueue([limited(("one", "free"), n=1001)])
    got = await backend.claim(W, ["default"], 1, 30)
    assert [g.id for g in got] == [plain.id]
    got = await backend.claim(W, ["default"], 1, 30)
    assert [g.id for g in got] == [other.id]
    assert first.id in await held(backend)


async def test_a_full_key_at_the_head_leaves_the_claim_its_whole_limit(
    backend: QueueBackend,
) -> None:
    """Once a worker's limited claims refuse nothing it claims without the limit probe
    (`claim_one_unprobed`, both databases), so a key that fills meanwhile, its jobs at the head,
    takes the claim's LIMIT; the same call then claims the runnable jobs behind them: one
    claim still returns every runnable job it has room for, and leaves the full key's
    queued, its slot with the job that holds it."""
    await backend.define_limits([Concurrency("one", 1, key="payload.k")])
    await backend.enqueue([limited(("one", "busy"), n=0)])
    (first,) = await backend.claim(W, ["default"], 1, 30)  # refuses nothing
    busy = await backend.enqueue([limited(("one", "busy"), n=i) for i in range(1, 21)])
    free = await backend.enqueue([limited(("one", f"k{i}"), n=100 + i) for i in range(5)])
    plain = await backend.enqueue([job(n=200 + i) for i in range(3)])
    got = await backend.claim(W, ["default"], 8, 30)
    assert {g.id for g in got} == {j.id for j in [*free, *plain]}
    assert {(await backend.get(b.id)).state for b in busy} == {JobState.QUEUED}
    assert (await held(backend))[first.id] == ("one", "busy")


async def test_sqlite_claims_without_the_probe_until_a_refusal(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite: a claim picks its limited candidates without the limit probe (their slots
    are read with them anyway) until its admission refuses one; then the same trip picks
    the rest with the probe, and the driver's next PROBE_AFTER_REFUSAL claims probe."""
    if backend.dialect != "sqlite":
        pytest.skip("SQLite's candidates statements")
    probes: list[bool] = []
    chosen = sqlite_driver.claim_statement

    def recorded(every_queue: bool, probe: bool = True) -> str:
        probes.append(probe)
        return chosen(every_queue, probe)

    monkeypatch.setattr(sqlite_driver, "claim_statement", recorded)
    await backend.define_limits([Concurrency("one", 1, key="payload.k")])
    await backend.enqueue([limited(("one", "busy"), n=0)])
    await backend.claim(W, ["default"], 1, 30)
    busy = await backend.enqueue([limited(("one", "busy"), n=i) for i in range(1, 4)])
    (free,) = await backend.enqueue([limited(("one", "free"), n=9)])
    (got,) = await backend.claim(W, ["default"], 2, 30)  # refuses two, then the rest
    assert got.id == free.id
    assert await backend.claim(W, ["default"], 2, 30) == []
    assert probes == [False, False, True, True]
    assert {(await backend.get(b.id)).state for b in busy} == {JobState.QUEUED}


async def test_the_rest_of_a_claim_of_several_queues_stays_within_its_limit(
    backend: QueueBackend,
) -> None:
    """A worker of two queues whose claim refuses candidates at the head of one: the jobs
    claimed behind them (SQLite: the same trip's probed pick; PostgreSQL: the claim of the
    rest) fill the claim up to its limit and no further, though each queue has more."""
    await backend.define_limits([Concurrency("one", 1, key="payload.k")])
    await backend.enqueue([limited(("one", "busy"), n=0, queue="a")])
    assert len(await backend.claim(W, ["a", "b"], 1, 30)) == 1  # refuses nothing
    await backend.enqueue([limited(("one", "busy"), n=1, queue="a")])
    await backend.enqueue([job(n=2, queue="b")])
    await backend.enqueue([limited(("one", "busy"), n=3, queue="a")])
    for i in range(3):
        await backend.enqueue([job(n=10 + i, queue="a"), job(n=20 + i, queue="b")])
    got = await backend.claim(W, ["a", "b"], 3, 30)
    assert len(got) == 3, [g.payload for g in got]
    async with backend.db.read() as conn:
        running = (
            await conn.execute(select(func.count()).where(jobs.c.state == "running"))
        ).scalar()
    assert running == 4  # the first claim's job and these three


async def test_a_failed_claim_of_the_rest_keeps_the_jobs_already_claimed(
    backend: QueueBackend,
) -> None:
    """PostgreSQL: when the claim that follows an unprobed claim's refusals fails (the
    database went away between the two), the jobs the first one committed as running are
    still this worker's to run: they were lost with the error, and stayed running unrun
    until the rescue (an attempt spent). The refused ones stay queued."""
    if backend.dialect != "postgresql":
        pytest.skip("the unprobed claim is PostgreSQL's")
    await backend.define_limits([Concurrency("one", 1, key="payload.k")])
    await backend.enqueue([limited(("one", "busy"), n=0)])
    await backend.claim(W, ["default"], 1, 30)  # refuses nothing: the next goes unprobed
    free = await backend.enqueue([limited(("one", f"k{i}"), n=10 + i) for i in range(2)])
    busy = await backend.enqueue([limited(("one", "busy"), n=20 + i) for i in range(6)])
    await backend.enqueue([job(n=30)])  # behind them: for the claim of the rest
    driver, first_call = backend.driver, backend.driver.claim
    calls = 0

    async def away_on_the_second(*args: Any, **kwargs: Any) -> Claimed:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise Unavailable("the database went away")
        return await first_call(*args, **kwargs)

    driver.claim = away_on_the_second  # type: ignore[method-assign]
    try:
        got = await backend.claim(W, ["default"], 8, 30)
    finally:
        del driver.claim
    assert calls == 2
    assert {g.id for g in got} == {f.id for f in free}
    assert {(await backend.get(f.id)).state for f in free} == {JobState.RUNNING}
    assert {(await backend.get(b.id)).state for b in busy} == {JobState.QUEUED}


async def test_a_far_future_job_holds_nothing(backend: QueueBackend) -> None:
    await backend.define_limits([Concurrency("one", 1, key="payload.k")])
    later = utcnow() + timedelta(days=30)
    (future,) = await backend.enqueue([limited(("one", "k"), n=0, run_at=later)])
    (ready,) = await backend.enqueue([limited(("one", "k"), n=1)])
    (got,) = await backend.claim(W, ["default"], 5, 30)
    assert got.id == ready.id
    assert (await backend.get(future.id)).state is JobState.SCHEDULED


@pytest.mark.parametrize(
    "how", ["cancel", "bulk_cancel", "retry", "fail", "release", "rescue", "admin", "delete"]
)
async def test_every_change_out_of_running_frees_the_slot_at_once(
    backend: QueueBackend, how: str
) -> None:
    await backend.define_limits([Concurrency("one", 1, key="payload.k")])
    a, b = await backend.enqueue([limited(("one", "k"), n=i, max_attempts=3) for i in (0, 1)])
    (c,) = await backend.claim(W, ["default"], 5, lease_s=0.2 if how == "rescue" else 30)
    assert c.id == a.id and await backend.claim(W, ["default"], 5, 30) == []
    later = utcnow() + timedelta(hours=1)
    if how == "cancel":
        await backend.cancel(a.id)
    elif how == "bulk_cancel":
        assert (await backend.bulk_ids("cancel", [a.id, b.id], None, 100)).changed == 2
        b = a  # cancelled too: the key's slot is free, with nothing left to claim
    elif how == "retry":
        error = ErrorInfo("E", "m")
        await backend.finish(W, [Outcome(a.id, 1, "retry", error=error, retry_at=later)])
    elif how == "fail":
        await backend.finish(W, [Outcome(a.id, 1, "failed", error=ErrorInfo("E", "m"))])
    elif how == "release":
        assert await backend.release(W, [a.id]) == {a.id}
    elif how == "rescue":
        await asyncio.sleep(0.4)
        assert (await backend.rescue_expired()).requeued == [a.id]
    elif how == "delete":  # an operator's DELETE of a running job
        async with backend.db.write() as conn:
            await conn.execute(text("DELETE FROM jobs WHERE id = :id"), {"id": a.id})
    else:
        await backend.set_state(a.id, JobState.COMPLETED)
    assert await held(backend) == {}
    if how != "bulk_cancel":
        got = await backend.claim(W, ["default"], 1, 30)
        assert got[0].id in {a.id, b.id}


async def test_the_reconcile_frees_a_leaked_slot_and_logs_it(
    backend: QueueBackend, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.define_limits([Concurrency("one", 1, key="payload.k")])
    _, b = await backend.enqueue([limited(("one", "k"), n=i) for i in (0, 1)])
    (c,) = await backend.claim(W, ["default"], 5, 30)
    await backend.finish(W, [Outcome(c.id, 1, "completed")])
    # Injected drift: the slot held by a finished job, and another by a job that never was.
    async with backend.db.write() as conn:
        await conn.execute(update(limit_slots).values(job_id=c.id))
        await conn.execute(
            limit_slots.insert().values(name="one", key="gone", slot=1, job_id="no-such-job")
        )
    assert await backend.claim(W, ["default"], 5, 30) == []  # wedged, as a leak would
    drift_before = drifted()
    # A tick of the leader, its reconcile due at once.
    scheduler = Scheduler(backend, Registry(), SchedulerConfig(limits_reconcile_interval=1e-6))
    try:
        with caplog.at_level(logging.WARNING, logger="conveyor.scheduler"):
            report = await scheduler.tick()
        assert report.leader and report.drift == 2
        assert drifted() == drift_before + 2
        assert "limit one key 'k'" in caplog.text and "limit one key 'gone'" in caplog.text
    finally:
        await scheduler.close()
    (got,) = await backend.claim(W, ["default"], 5, 30)
    assert got.id == b.id
    async with backend.db.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(limit_slots))).scalar()
    assert count == 2


async def slots_of(backend: QueueBackend) -> dict[str, int]:
    """Each job holding a slot: its slot number."""
    query = select(limit_slots.c.job_id, limit_slots.c.slot).where(limit_slots.c.job_id.isnot(None))
    async with backend.db.read() as conn:
        return {r.job_id: r.slot for r in (await conn.execute(query)).all()}


async def test_the_reconcile_gives_a_slot_to_a_running_job_that_holds_none(
    backend: QueueBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The leak the other way: a running job without its slot lets a claim start one more
    than the limit. The reconcile gives it a free slot; with none free it logs the key
    running over its limit (not counted: not corrected), and gives one once a slot frees."""
    await backend.define_limits([Concurrency("two", 2, key="payload.k")])
    await backend.enqueue([limited(("two", "k"), n=i) for i in range(4)])
    a, b = await backend.claim(W, ["default"], 5, 30)
    async with backend.db.write() as conn:  # injected drift: a's slot lost
        await conn.execute(
            update(limit_slots).where(limit_slots.c.job_id == a.id).values(job_id=None)
        )
    scheduler = Scheduler(backend, Registry(), SchedulerConfig(limits_reconcile_interval=1e-6))
    try:
        before = drifted("two")
        with caplog.at_level(logging.WARNING, logger="conveyor.scheduler"):
            report = await scheduler.tick()
        assert report.drift == 1 and drifted("two") == before + 1
        assert (
            f"gave slot 1 to job {a.id}" in caplog.text
            or f"gave slot 2 to job {a.id}" in caplog.text
        )
        assert set(await slots_of(backend)) == {a.id, b.id}
        assert await backend.claim(W, ["default"], 5, 30) == []  # the key is full again

        # Lost again, and a claim takes the free slot meanwhile: three run under a limit of 2.
        async with backend.db.write() as conn:
            await conn.execute(
                update(limit_slots).where(limit_slots.c.job_id == a.id).values(job_id=None)
            )
        (c,) = await backend.claim(W, ["default"], 5, 30)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="conveyor.scheduler"):
            report = await scheduler.tick()
        assert report.drift == 0 and drifted("two") == before + 1
        assert f"job {a.id} runs without a slot and all 2 are held" in caplog.text
        assert set(await slots_of(backend)) == {b.id, c.id}

        await backend.finish(W, [Outcome(b.id, 1, "completed")])  # frees b's slot ...
        report = await scheduler.tick()  # ... which a gets, before any claim could take it
        assert report.drift == 1 and drifted("two") == before + 2
        assert set(await slots_of(backend)) == {a.id, c.id}
        assert await backend.claim(W, ["default"], 5, 30) == []
    finally:
        await scheduler.close()


async def test_the_reconcile_skips_a_running_job_whose_limit_has_no_cap(
    backend: QueueBackend,
) -> None:
    """The running quota without a cap admits without a slot: nothing to give."""
    await backend.define_running_quota(0)
    await backend.enqueue([limited(("quota.running", "owner-x"))])
    assert len(await backend.claim(W, ["default"], 5, 30)) == 1
    assert await backend.reconcile_unheld() == []
    assert await slots_of(backend) == {}


async def test_a_limit_not_defined_yet_holds_its_jobs(backend: QueueBackend) -> None:
    (a,) = await backend.enqueue([limited(("nobody_defined_me", "k"))])
    assert await backend.claim(W, ["default"], 5, 30) == []
    await backend.define_limits([Concurrency("nobody_defined_me", 1, key="payload.k")])
    (got,) = await backend.claim(W, ["default"], 5, 30)
    assert got.id == a.id


async def test_a_changed_value_takes_effect(backend: QueueBackend) -> None:
    await backend.define_limits([Concurrency("c", 1)])
    await backend.enqueue([limited(("c", ""), n=i) for i in range(4)])
    assert len(await backend.claim(W, ["default"], 10, 30)) == 1
    await backend.define_limits([Concurrency("c", 3)])  # last writer wins
    assert len(await backend.claim(W, ["default"], 10, 30)) == 2


def test_a_key_is_evaluated_at_submit_and_a_payload_without_it_is_refused() -> None:
    types = Registry()
    types.include(limit_handlers.blueprint)
    new = checked_job(types, "limited_one", {"k": "c42"}, "alice")
    assert new.limit_keys == (LimitKey("lim_one", "c42"),)
    with pytest.raises(InvalidInput):
        checked_job(types, "limited_one", {"k": None}, "alice")
