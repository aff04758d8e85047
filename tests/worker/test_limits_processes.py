"""Concurrency limits across real worker processes (both databases): never more running per
key than the limit, checked from the intervals each handler recorded itself; a worker killed
while holding slots gives them back through the rescue."""

from __future__ import annotations

import itertools
import signal

import pytest
from sqlalchemy import func, select

from conveyor.domain.states import JobState
from conveyor.scheduler.checks import checked_job
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import jobs, limit_slots
from conveyor.store.tables import workers as workers_table
from conveyor.worker.registry import Registry
from tests.support import limit_handlers
from tests.support.processes import Cluster, eventually

HANDLERS = {"handler_modules": "tests.support.limit_handlers", "poll_interval": "0.2"}
KEYS = ("a", "b")


def registry() -> Registry:
    found = Registry()
    found.include(limit_handlers.blueprint)
    return found


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant (an end before a start at a tie)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


async def finished(backend: QueueBackend, job_type: str) -> int:
    query = select(func.count()).where(
        jobs.c.type == job_type, jobs.c.state == JobState.COMPLETED.value
    )
    async with backend.db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


@pytest.mark.parametrize(("workers", "limit"), [(2, 1), (3, 1), (2, 2), (3, 2)])
async def test_workers_racing_never_run_more_than_the_limit_per_key(
    backend: QueueBackend, cluster: Cluster, workers: int, limit: int
) -> None:
    job_type = {1: "limited_one", 2: "limited_two"}[limit]
    types = registry()
    total = 1000
    new = [checked_job(types, job_type, {"k": KEYS[i % 2]}) for i in range(total)]
    # Each worker runs at most `limit` jobs at once: one worker alone can never fill both
    # keys' slots, so every worker takes part (a worker of concurrency 4 held all four slots
    # and, claiming again as each finished, ran everything: no race), while two or more
    # together could exceed the limit on one key if the slots did not hold.
    procs = [cluster.worker(f"w{i}", concurrency=limit, settings=HANDLERS) for i in range(workers)]

    async def all_up() -> bool:
        assert all(p.running() for p in procs), "a worker exited"
        async with backend.db.read() as conn:
            return (
                int(
                    (
                        await conn.execute(select(func.count()).select_from(workers_table))
                    ).scalar_one()
                )
                == workers
            )

    # Every worker up before the first job (on a busy machine the first one to start could
    # otherwise drain them all before the others begin: no race would be tested).
    await eventually(all_up, timeout=120, what=f"{workers} workers registered")
    for start in range(0, total, 500):
        await backend.enqueue(new[start : start + 500])

    async def done() -> bool:
        assert all(p.running() for p in procs), "a worker exited"
        return await finished(backend, job_type) == total

    await eventually(done, timeout=600, what=f"{total} limited jobs completed", every=0.5)
    query = select(jobs.c.payload, jobs.c.result).where(jobs.c.type == job_type)
    async with backend.db.read() as conn:
        rows = (await conn.execute(query)).all()
    for key in KEYS:
        spans = [(r.result["start"], r.result["end"]) for r in rows if r.payload["k"] == key]
        assert len(spans) == total // 2
        assert most_at_once(spans) <= limit, f"key {key}: more than {limit} ran at once"
    pids = {r.result["pid"] for r in rows}
    assert len(pids) >= 2, "one worker ran everything: the race was not tested"
    async with backend.db.read() as conn:
        leaked = await conn.execute(select(limit_slots).where(limit_slots.c.job_id.isnot(None)))
        assert leaked.all() == []


async def test_a_killed_worker_s_slots_come_back_after_the_rescue(
    backend: QueueBackend, cluster: Cluster
) -> None:
    types = registry()
    # The first attempt sleeps a minute (held while the victim dies), later ones do not.
    held = [checked_job(types, "limited_one", {"k": k, "seconds": 60}) for k in KEYS]
    await backend.enqueue(held)
    victim = cluster.worker(
        "victim",
        concurrency=4,
        settings={**HANDLERS, "lease_seconds": "2", "heartbeat_interval": "0.3"},
    )

    async def both_running() -> bool:
        return len(cluster.runs("start")) == 2

    await eventually(both_running, timeout=120, what="the victim running both keys' jobs")
    behind = [checked_job(types, "limited_one", {"k": k}) for k in KEYS for _ in range(5)]
    await backend.enqueue(behind)
    victim.send(signal.SIGKILL)
    await victim.wait_exit(30)
    cluster.scheduler(settings={"scheduler_interval": "0.2"})
    cluster.worker("heir", concurrency=4, settings=HANDLERS)

    async def all_done() -> bool:
        return await finished(backend, "limited_one") == len(held) + len(behind)

    await eventually(all_done, timeout=180, what="the keys running again after the rescue")
    for enqueued in held:
        record = await backend.get(enqueued.id)
        assert record.attempt == 2 and record.errors[0]["type"] == "LeaseExpired"


async def test_jobs_held_back_by_a_rate_start_at_their_tokens_without_a_new_submit(
    backend: QueueBackend, cluster: Cluster
) -> None:
    """The worker polls once a minute here: jobs waiting for tokens (two a second) must be
    started by the wake-up it computes for the next token, not by a poll or a submit."""
    types = registry()
    new = [checked_job(types, "rated", {"k": "x"}) for _ in range(6)]
    await backend.enqueue(new)
    # Nothing else wakes it meanwhile: no poll, and no heartbeat (its commit is a wake-up on
    # SQLite's data_version watch) within the test's deadline.
    quiet = {"poll_interval": "60", "heartbeat_interval": "50", "lease_seconds": "120"}
    cluster.worker("w", concurrency=4, settings={**HANDLERS, **quiet})

    async def done() -> bool:
        return await finished(backend, "rated") == len(new)

    await eventually(done, timeout=45, what="six rate-limited jobs started by their tokens")
    query = select(jobs.c.started_at).where(jobs.c.type == "rated")
    async with backend.db.read() as conn:
        starts = sorted(r.started_at for r in (await conn.execute(query)).all())
    # The claims' own clock (the one the buckets refill by): a bucket of one token refilled
    # at two a second admits one job per half second at most.
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    assert all(gap >= 0.499 for gap in gaps), gaps
