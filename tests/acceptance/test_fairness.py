"""Fair dispatch with a real worker process: a later tenant's jobs start before an earlier
tenant's burst drains (docs/flow-control.md "Fair dispatch")."""

from __future__ import annotations

from conveyor.runtime import load_handlers
from conveyor.services.jobs import JobService, Submission
from conveyor.store.backend import QueueBackend
from tests.support.processes import HANDLERS, Cluster, read_runs

BURST = 2000


async def test_a_later_tenant_starts_before_the_burst_drains(
    cluster: Cluster, backend: QueueBackend
) -> None:
    service = JobService(backend, load_handlers([HANDLERS]))
    for start in range(0, BURST, 1000):
        batch = [Submission("record", {"n": n}) for n in range(start, start + 1000)]
        await service.submit_many(batch, owner_id="tenant-a")
    later = await service.submit_many([Submission("record", {"n": n}) for n in range(10)], "b")

    worker = cluster.worker("worker", concurrency=4, burst=True)
    assert await worker.wait_exit(120) == 0, "the worker failed"

    (log,) = cluster.records.glob("start-*.log")  # one process: its starts in start order
    started = [run.job_id for run in read_runs(cluster.records, "start")]
    assert len(started) == BURST + 10, log
    positions = sorted(started.index(e.id) + 1 for e in later)
    # FIFO would start them at 2001-2010; the bound is 2k + 1 plus what is claimed at once.
    assert positions[-1] <= 2 * 10 + 1 + 2 * 4, positions
