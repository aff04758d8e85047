"""Huey peer: a no-op task on Huey's SQLite storage (``SqliteHuey``), file ``BENCH_HUEY_DB``.

Worker (started by the harness): ``huey_consumer bench.peers.huey_app.huey -k process -w 2
-q``: Huey's documented multi-process consumer ("To run the consumer with 4 worker
processes: huey_consumer.py my_app.huey -k process -w 4"), one worker process per CPU.
Storage options are SqliteHuey's defaults (WAL journal, SQLite's default ``synchronous``,
results stored): the task returns a value so that Huey writes a result after running it.

Durable completion: Huey deletes a task's message when a worker dequeues it, before running
it, so the queue alone never says a job is done (a crash after dequeue loses the job rather
than re-running it). The only write after the run is the result, committed to the ``kv``
table: the probe counts stored results.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from importlib import metadata

from huey import SqliteHuey

from bench.peers.probe import Sample, poll
from bench.peers.record import record

DB_PATH = os.environ.get("BENCH_HUEY_DB", "/tmp/bench-huey.db")
NAME = "bench_huey"

huey = SqliteHuey(NAME, filename=DB_PATH)


@huey.task(name="bench_noop")
def noop(index: int, enqueued_at: float) -> bool:
    """Record the execution; the returned value is stored as Huey's result."""
    record(index, time.time())
    return True


class Driver:
    """Enqueue, purge, probe and versions for ``bench.peers.client``."""

    packages = ("huey",)

    def open(self) -> None:
        """Open this thread's connection before any timing starts."""
        huey.storage.queue_size()

    def close(self) -> None:
        huey.storage.close()

    def setup(self) -> None:
        """A fresh file with Huey's tables."""
        huey.storage.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(DB_PATH + suffix)
        huey.storage.initialize_schema()

    def purge(self) -> None:
        huey.storage.flush_queue()
        huey.storage.flush_schedule()
        huey.storage.flush_results()

    def settle(self) -> None:
        """Nothing to do: Huey's dequeue reads its (queue, priority, id) index in order."""

    def send_single(self, indices: Sequence[int]) -> None:
        """One enqueue (one committed INSERT) per job."""
        for index in indices:
            noop(index, time.time())

    def send_batch(self, indices: Sequence[int]) -> None:
        """Huey has no bulk enqueue: ``task.map`` is this same loop of enqueues (one commit
        each), with result handles we do not need."""
        for index in indices:
            noop(index, time.time())

    def probe(self, n: int, interval_s: float, timeout_s: float) -> Iterator[Sample]:
        """Results stored (one per run task), read from the file by a connection of our own."""
        conn = sqlite3.connect(DB_PATH, timeout=5)
        try:

            def count() -> int:
                row = conn.execute("SELECT count(*) FROM kv WHERE queue = ?", (NAME,)).fetchone()
                return int(row[0])

            yield from poll(count, n, interval_s, timeout_s)
        finally:
            conn.close()

    def server_version(self) -> str:
        return f"sqlite {sqlite3.sqlite_version}"

    def versions(self) -> dict[str, str]:
        return {name: metadata.version(name) for name in self.packages}
