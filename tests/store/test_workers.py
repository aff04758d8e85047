"""Worker rows: registration, listings, their running jobs, pruning."""

from __future__ import annotations

from conveyor.domain.jobs import NewJob
from conveyor.store.backend import QueueBackend


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
