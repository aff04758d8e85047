"""The running quota: a built-in concurrency limit keyed by owner whose size is the user's
cap (users.max_running, else settings.quota_max_running; 0: none), both databases."""

from __future__ import annotations

from sqlalchemy import insert

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA, LimitKey
from conveyor.domain.jobs import Outcome
from conveyor.services.jobs import JobService, Submission
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import users
from conveyor.worker.registry import Registry
from tests.support import limit_handlers

W = "worker-q"


def service(backend: QueueBackend, default: int) -> JobService:
    types = Registry()
    types.include(limit_handlers.blueprint)
    jobs = JobService(backend, types)
    jobs.quota_max_running = default
    return jobs


async def add_user(backend: QueueBackend, user_id: str, max_running: int | None) -> None:
    now = utcnow()
    row = {
        "id": user_id, "email": f"{user_id}@example.com", "password_hash": "x",
        "role": "user", "verified": True, "disabled": False, "created_at": now,
        "updated_at": now, "max_running": max_running,
    }  # fmt: skip
    async with backend.db.write() as conn:
        await conn.execute(insert(users).values(**row))


async def submit(jobs: JobService, owner: str, count: int) -> None:
    for i in range(count):
        await jobs.submit(Submission("limited_two", {"k": f"{owner}-{i}"}), owner)


async def test_the_default_cap_and_a_user_s_own_cap(backend: QueueBackend) -> None:
    jobs = service(backend, default=2)
    await jobs.define_limits()
    await add_user(backend, "bigcap", 3)
    await submit(jobs, "alice", 5)
    await submit(jobs, "bigcap", 5)
    claimed = await backend.claim(W, ["default"], 100, 30)
    by_owner = {o: [c for c in claimed if c.owner_id == o] for o in ("alice", "bigcap")}
    assert len(by_owner["alice"]) == 2 and len(by_owner["bigcap"]) == 3
    assert await backend.claim(W, ["default"], 100, 30) == []
    done = by_owner["alice"][0]
    await backend.finish(W, [Outcome(done.id, 1, "completed")])
    (more,) = await backend.claim(W, ["default"], 100, 30)
    assert more.owner_id == "alice"
    record = await backend.get(more.id)
    assert record.owner_id == "alice"


async def test_no_cap_costs_nothing_and_the_key_is_added_only_under_a_cap(
    backend: QueueBackend,
) -> None:
    jobs = service(backend, default=0)
    await jobs.define_limits()
    await add_user(backend, "capped", 1)
    plain = await jobs.prepare_many([Submission("limited_two", {"k": "x"})], "free")
    capped = await jobs.prepare_many([Submission("limited_two", {"k": "x"})], "capped")
    assert plain[0].limit_keys == (LimitKey("lim_two", "x"),)
    assert capped[0].limit_keys == (LimitKey("lim_two", "x"), LimitKey(RUNNING_QUOTA, "capped"))
    await submit(jobs, "free", 4)
    await submit(jobs, "capped", 3)
    claimed = await backend.claim(W, ["default"], 100, 30)
    assert sorted(c.owner_id for c in claimed).count("free") == 4
    assert [c.owner_id for c in claimed].count("capped") == 1
