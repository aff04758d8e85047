"""RQ peer: a no-op job on Redis (``BENCH_RQ_REDIS``, db 14: the benchmark's own).

Worker (started by the harness): ``rq worker-pool -n 2 -w rq.worker.SimpleWorker bench_rq``:
two worker processes (one per CPU). RQ's default ``Worker`` forks a work horse for every job;
its performance notes measure ``SimpleWorker`` (no fork) about 6x faster on tiny jobs and
advise it when jobs are "extremely short-lived (single digit milliseconds)" and fork latency
is the bottleneck, which is exactly a no-op job: the faster choice for the peer.

Durable completion: a job counts once it is in the queue's finished registry
(``rq:finished:bench_rq``, written with the job's ``finished`` status in one transaction).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from importlib import metadata

from redis import Redis
from rq import Queue
from rq.registry import FinishedJobRegistry

from bench.peers.probe import Sample, poll
from bench.peers.record import record

REDIS_URL = os.environ.get("BENCH_RQ_REDIS", "redis://127.0.0.1:6379/14")
QUEUE = "bench_rq"

redis = Redis.from_url(REDIS_URL)
queue = Queue(QUEUE, connection=redis)


def noop(index: int, enqueued_at: float) -> None:
    """Do nothing but record the execution (``enqueued_at`` travels for inspection only)."""
    record(index, time.time())


class Driver:
    """Enqueue, purge, probe and versions for ``bench.peers.client``."""

    packages = ("rq", "redis")

    def open(self) -> None:
        redis.ping()

    def close(self) -> None:
        redis.close()

    def setup(self) -> None:
        self.purge()

    def purge(self) -> None:
        """The benchmark's Redis db holds nothing else while RQ runs: flush it."""
        redis.flushdb()

    def settle(self) -> None:
        """Nothing to do: a Redis list has no planner statistics."""

    def send_single(self, indices: Sequence[int]) -> None:
        """One ``enqueue`` per job."""
        for index in indices:
            queue.enqueue(noop, index, time.time())

    def send_batch(self, indices: Sequence[int]) -> None:
        """``enqueue_many``: RQ's batch API, one Redis pipeline for the batch."""
        now = time.time()
        queue.enqueue_many([Queue.prepare_data(noop, (index, now)) for index in indices])

    def probe(self, n: int, interval_s: float, timeout_s: float) -> Iterator[Sample]:
        key = FinishedJobRegistry(queue=queue).key
        yield from poll(lambda: int(redis.zcard(key)), n, interval_s, timeout_s)

    def server_version(self) -> str:
        return f"redis {redis.info('server')['redis_version']}"

    def versions(self) -> dict[str, str]:
        return {name: metadata.version(name) for name in self.packages}
