"""Paused queues on both databases: claims skip them, enqueues still land, resume wakes."""

from __future__ import annotations

import asyncio
import time

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.store.backend import QueueBackend
from conveyor.store.factory import open_backend


def job(queue: str, priority: int = 0) -> NewJob:
    return NewJob(type="noop", payload={}, queue=queue, priority=priority)


async def test_claims_skip_a_paused_queue_by_name_and_by_star(backend: QueueBackend) -> None:
    await backend.pause_queue("a", by="admin-1")
    (held,) = await backend.enqueue([job("a", priority=9)])  # still accepted
    (free,) = await backend.enqueue([job("b")])
    assert held.state is JobState.QUEUED

    assert await backend.claim("w", ["a"], 10, 30) == []
    assert [j.id for j in await backend.claim("w", ["*"], 10, 30)] == [free.id]
    (paused,) = await backend.paused_queues()
    assert (paused.queue, paused.paused_by) == ("a", "admin-1")

    assert await backend.resume_queue("a") is True
    assert [j.id for j in await backend.claim("w", ["a", "b"], 10, 30)] == [held.id]
    assert await backend.paused_queues() == []


async def test_pause_is_idempotent_and_resume_of_a_running_queue_is_a_no_op(
    backend: QueueBackend,
) -> None:
    await backend.pause_queue("a")
    await backend.pause_queue("a")
    assert [p.queue for p in await backend.paused_queues()] == ["a"]
    assert await backend.resume_queue("a") is True
    assert await backend.resume_queue("a") is False


async def test_jobs_already_running_are_not_touched_by_a_pause(backend: QueueBackend) -> None:
    (running,) = await backend.enqueue([job("a")])
    await backend.claim("w", ["a"], 1, 30)
    await backend.pause_queue("a")
    assert await backend.heartbeat("w", 30) == {running.id}
    assert (await backend.get(running.id)).state is JobState.RUNNING


async def test_a_pause_holds_for_every_process_the_moment_it_commits(
    backend: QueueBackend, db_url: str
) -> None:
    other = open_backend(db_url)
    try:
        await backend.enqueue([job("a"), job("a")])
        before = utcnow()
        await other.pause_queue("a", by="ops")
        await backend.pause_queue("z")
        assert await backend.claim("w", ["a"], 10, 30) == []
        assert await backend.claim("w", ["*"], 10, 30) == []
        listed = await backend.paused_queues()
        assert [(p.queue, p.paused_by) for p in listed] == [("a", "ops"), ("z", None)]
        assert all(p.paused_at >= before and p.paused_at.tzinfo for p in listed)
        assert await backend.resume_queue("a") is True
        assert len(await other.claim("w", ["a"], 10, 30)) == 2
    finally:
        await other.close()


async def test_resume_wakes_the_queues_listeners(backend: QueueBackend, db_url: str) -> None:
    other = open_backend(db_url)
    heard: list[str] = []
    listener = await backend.listen(heard.append, lambda _job: None)
    try:
        await other.pause_queue("a")
        heard.clear()
        assert await other.resume_queue("a")
        deadline = time.monotonic() + 10
        while "a" not in heard and "*" not in heard:
            assert time.monotonic() < deadline, "no wake-up within 10 s"
            await asyncio.sleep(0.01)
    finally:
        await listener.close()
        await other.close()
