"""Worker rows: registration, listings, their running jobs, pruning."""

from __future__ import annotations

from datetime import timedelta

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import NewJob
from conveyor.store.backend import QueueBackend
from tests.store.helpers import wait_past


def job(queue: str, priority: int = 0) -> NewJob:
    return NewJob(type="noop", payload={}, queue=queue, priority=priority)


async def test_workers_with_their_running_jobs_in_one_listing(backend: QueueBackend) -> None:
    await backend.register_worker("w1", "host", 1, ["a"], 4)
    await backend.register_worker("w2", "host", 2, ["b"], 2)
    await backend.register_worker("gone", "host", 3, ["a"], 2)
    await backend.unregister_worker("gone")
    await backend.enqueue([job("a"), job("a"), job("b")])
    first = await backend.claim("w1", ["a"], 10, 30)
    listed = await backend.workers_with_jobs(alive_within=60)
    assert [(info.id, [ref.id for ref in refs]) for info, refs in listed] == [
        ("w1", sorted(j.id for j in first)),
        ("w2", []),
    ]
    (info, refs), _ = listed
    assert info.queues == ["a"] and info.concurrency == 4
    assert {r.queue for r in refs} == {"a"} and all(r.started_at for r in refs)


async def test_a_registered_worker_is_listed_until_it_signs_off(backend: QueueBackend) -> None:
    before = utcnow()
    await backend.register_worker("w1", "host-1", 4242, ["a", "b"], 8)
    (info,) = await backend.list_workers()
    assert (info.id, info.hostname, info.pid, info.queues, info.concurrency) == (
        "w1",
        "host-1",
        4242,
        ["a", "b"],
        8,
    )
    assert info.started_at >= before and info.last_heartbeat_at == info.started_at
    assert info.stopped_at is None
    assert [w.id for w in await backend.list_workers(alive_within=60)] == ["w1"]

    await backend.unregister_worker("w1")
    assert await backend.list_workers(alive_within=60) == []
    (gone,) = await backend.list_workers()  # still there, as stopped
    assert gone.stopped_at is not None and gone.stopped_at >= info.started_at
    assert await backend.workers_with_jobs(alive_within=60) == []


async def test_a_worker_that_stopped_heartbeating_is_not_alive(backend: QueueBackend) -> None:
    await backend.register_worker("w1", "host", 1, ["a"], 1)
    (registered,) = await backend.list_workers()
    stale = registered.last_heartbeat_at + timedelta(seconds=0.2)
    await wait_past(stale)
    assert await backend.list_workers(alive_within=0.1) == []
    assert await backend.workers_with_jobs(alive_within=0.1) == []

    assert await backend.heartbeat("w1", 30) == set()  # no jobs, but the row is touched
    (beat,) = await backend.list_workers()
    assert beat.last_heartbeat_at > stale
    assert [w.id for w in await backend.list_workers(alive_within=60)] == ["w1"]


async def test_prune_workers_deletes_the_rows_not_heard_from_since(backend: QueueBackend) -> None:
    await backend.register_worker("old", "host", 1, ["a"], 1)
    await backend.register_worker("stopped", "host", 2, ["a"], 1)
    await backend.unregister_worker("stopped")
    await backend.register_worker("busy", "host", 3, ["a"], 1)
    newest = max(w.last_heartbeat_at for w in await backend.list_workers())
    await wait_past(newest)
    cut = utcnow()
    await backend.heartbeat("busy", 30)

    assert await backend.prune_workers(cut - timedelta(hours=1)) == 0
    assert await backend.prune_workers(cut) == 2
    assert [w.id for w in await backend.list_workers()] == ["busy"]
    assert await backend.prune_workers(cut) == 0
