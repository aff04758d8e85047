"""Procrastinate peer: a no-op async task on PostgreSQL (``BENCH_PROCRASTINATE_DSN``).

Worker (started by the harness, twice): ``procrastinate --app bench.peers.procrastinate_app.app
worker --queues bench_procrastinate --concurrency C``. Procrastinate runs one job at a time per
worker by default; its docs scale out with one worker process each and, for async tasks, more
sub-workers with ``--concurrency`` (see bench/README.md for the value used and why).

The benchmark gets a database of its own, dropped and recreated by :meth:`Driver.setup`, so the
schema always matches the installed Procrastinate and nothing else in PostgreSQL is touched.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Sequence
from importlib import metadata

import procrastinate
import psycopg
from psycopg import sql

from bench.peers.probe import Sample, poll
from bench.peers.record import record

DSN = os.environ.get(
    "BENCH_PROCRASTINATE_DSN",
    "postgresql://postgres@127.0.0.1:5432/conveyor_bench_procrastinate",
)
QUEUE = "bench_procrastinate"

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=DSN))


@app.task(name="bench_noop", queue=QUEUE)
async def noop(index: int, enqueued_at: float) -> None:
    """Do nothing but record the execution (``enqueued_at`` travels for inspection only)."""
    record(index, time.time())


def _admin_dsn() -> tuple[str, str]:
    """The DSN of the server's ``postgres`` database, and the benchmark database's name."""
    info = psycopg.conninfo.conninfo_to_dict(DSN)
    dbname = str(info.pop("dbname"))
    info["dbname"] = "postgres"
    return psycopg.conninfo.make_conninfo(**info), dbname


class Driver:
    """Enqueue, purge and versions for ``bench.peers.client``."""

    packages = ("procrastinate", "psycopg")

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._opened = False

    def open(self) -> None:
        """Open the connection pool before any timing starts."""
        self._runner.run(self._open())
        self._opened = True

    async def _open(self) -> None:
        await app.open_async()

    def close(self) -> None:
        if self._opened:
            self._runner.run(app.close_async())  # a coroutine, unlike open_async()
        self._runner.close()

    def setup(self) -> None:
        """Drop and recreate the benchmark database, then apply Procrastinate's schema."""
        admin, dbname = _admin_dsn()
        with psycopg.connect(admin, autocommit=True) as conn:
            name = sql.Identifier(dbname)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        self._runner.run(self._apply_schema())

    async def _apply_schema(self) -> None:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    def purge(self) -> None:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(
                "TRUNCATE procrastinate_jobs, procrastinate_events, "
                "procrastinate_periodic_defers, procrastinate_workers RESTART IDENTITY CASCADE"
            )

    def settle(self) -> None:
        """ANALYZE after the bulk pre-fill. The database is new, so until autovacuum gets to it
        the planner believes the jobs table is empty and fetches a job by scanning and sorting
        every queued row (measured: 23 ms per fetch with 10,000 queued, 0.1 ms after ANALYZE).
        A deployment that has run for more than a minute has statistics; so does this one."""
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute("ANALYZE")

    def send_single(self, indices: Sequence[int]) -> None:
        """One ``defer_async`` (one INSERT transaction) per job."""
        self._runner.run(self._send_single(indices))

    async def _send_single(self, indices: Sequence[int]) -> None:
        for index in indices:
            await noop.defer_async(index=index, enqueued_at=time.time())

    def send_batch(self, indices: Sequence[int]) -> None:
        """``batch_defer_async``: one statement for the whole batch."""
        now = time.time()
        self._runner.run(self._send_batch(indices, now))

    async def _send_batch(self, indices: Sequence[int], now: float) -> None:
        await noop.batch_defer_async(*({"index": index, "enqueued_at": now} for index in indices))

    def probe(self, n: int, interval_s: float, timeout_s: float) -> Iterator[Sample]:
        """Jobs whose ``succeeded`` status is committed, from a connection of our own."""
        with psycopg.connect(DSN, autocommit=True) as conn:

            def count() -> int:
                query = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                row = conn.execute(query).fetchone()
                return int(row[0]) if row else 0

            yield from poll(count, n, interval_s, timeout_s)

    def server_version(self) -> str:
        with psycopg.connect(DSN) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"postgresql {row[0] if row else '?'}"

    def versions(self) -> dict[str, str]:
        return {name: metadata.version(name) for name in self.packages}
