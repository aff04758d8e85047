"""Conveyor's enqueue side for ``python -m bench.peers.client --driver conveyor`` (project venv).

NotImplemented until the engine lands: written against the engine API as it is being built
(``conveyor.runtime.Engine.open(settings)``, ``engine.jobs.submit(Submission(...))``,
``engine.jobs.submit_many([...])``, ``conveyor.store.migrate``), reached through
``importlib`` so that ``mypy bench`` does not depend on modules still moving. The harness does
not run it until ``bench.conveyor_systems.engine_ready()`` says so.

It implements the same ``Driver`` protocol as the peers (``bench/peers/client.py``), so the
same client code times Conveyor's enqueues. Configuration comes from the environment the
harness sets: ``CONVEYOR_DATABASE_URL`` and ``CONVEYOR_HANDLER_MODULES``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.conveyor_handlers import FLOW_ENV, FLOW_TYPES, STARVE_B_FROM_ENV, TENANTS
from bench.peers.probe import Sample, poll

# BENCH_FLOW (bench/flow.py) picks the job type and gives each job a tenant; unset: bench_noop
FLOW = os.environ.get(FLOW_ENV, "")
JOB_TYPE = FLOW_TYPES[FLOW]
COMPLETED = f"SELECT count(*) FROM jobs WHERE state = 'completed' AND type = '{JOB_TYPE}'"


def tenant(index: int) -> str:
    """Job `index`'s tenant: one of TENANTS round robin, or (starve) A's burst then B's."""
    if FLOW == "starve":
        return "B" if index >= int(os.environ[STARVE_B_FROM_ENV]) else "A"
    return f"t{index % TENANTS}"


def _database_url() -> str:
    return os.environ["CONVEYOR_DATABASE_URL"]


def _sqlite_path(url: str) -> Path:
    """``sqlite:///relative`` or ``sqlite:////absolute`` -> the file."""
    return Path(url.split(":///", 1)[1])


def _asyncpg_dsn(url: str) -> tuple[str, str]:
    """The server's ``postgres`` database DSN, and the benchmark database's name."""
    base, _, dbname = url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")
    return f"{base}/postgres", dbname


class Driver:
    """Enqueue, purge and versions; see ``bench/peers/client.py`` for the protocol."""

    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self._engine: Any = None
        self._submission: Any = None

    # -- lifecycle --------------------------------------------------------------------------
    def open(self) -> None:
        """Open the engine (connection pool, handler registry) before any timing starts."""
        runtime = importlib.import_module("conveyor.runtime")
        settings = importlib.import_module("conveyor.settings").Settings()
        self._submission = importlib.import_module("conveyor.services.jobs").Submission
        self._engine = self._runner.run(runtime.Engine.open(settings))
        # The steady state of a long-running process that submits (the API's lifespan does
        # the same): a fresh client otherwise pays full collections of its imports' heap.
        importlib.import_module("conveyor.heap").settle()

    def close(self) -> None:
        if self._engine is not None:
            self._runner.run(self._engine.close())
        self._runner.close()

    def setup(self) -> None:
        """A fresh, migrated database: the SQLite file or the PostgreSQL database recreated."""
        url = _database_url()
        if url.startswith("sqlite"):
            path = _sqlite_path(url)
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            self._runner.run(self._recreate_postgres(url))
        self._runner.run(self._migrate())

    async def _recreate_postgres(self, url: str) -> None:
        asyncpg = importlib.import_module("asyncpg")
        admin, dbname = _asyncpg_dsn(url)
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{dbname}"')
        finally:
            await conn.close()

    async def _migrate(self) -> None:
        runtime = importlib.import_module("conveyor.runtime")
        settings = importlib.import_module("conveyor.settings").Settings()
        engine = await runtime.Engine.open(settings, apply_migrations=True)
        await engine.close()

    def purge(self) -> None:
        """Between phases (workers stopped) the simplest complete purge is a fresh database."""
        self.setup()

    def settle(self) -> None:
        """ANALYZE after the bulk pre-fill, as for Procrastinate: a new database has no
        planner statistics, which a deployment that has run for a minute always has."""
        url = _database_url()
        if url.startswith("sqlite"):
            with sqlite3.connect(_sqlite_path(url)) as conn:
                conn.execute("ANALYZE")
        else:
            self._runner.run(self._analyze_postgres(url))

    async def _analyze_postgres(self, url: str) -> None:
        asyncpg = importlib.import_module("asyncpg")
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    # -- enqueue ----------------------------------------------------------------------------
    def _job(self, index: int) -> Any:
        payload: dict[str, Any] = {"index": index, "enqueued_at": time.time()}
        if FLOW:
            payload["tenant"] = tenant(index)
        return self._submission(type=JOB_TYPE, payload=payload)

    def send_single(self, indices: Sequence[int]) -> None:
        """One ``submit`` (one INSERT transaction) per job."""
        self._runner.run(self._send_single(indices))

    async def _send_single(self, indices: Sequence[int]) -> None:
        for index in indices:
            await self._engine.jobs.submit(self._job(index))

    def trickle(self, indices: Sequence[int], gap_s: float) -> tuple[list[float], list[float]]:
        """One job at a time, ``gap_s`` apart, each stamped just before its submit and when
        it returned, in one event loop: as an asyncio program (the API, a service) calls
        ``submit``. Through ``send_single`` each job would pay ``asyncio.Runner.run``'s start
        and stop of the loop (0.16 ms per call, measured), a sync-to-async bridge no caller
        pays."""
        return self._runner.run(self._trickle(indices, gap_s))

    async def _trickle(
        self, indices: Sequence[int], gap_s: float
    ) -> tuple[list[float], list[float]]:
        """Each job's submit called and returned (committed)."""
        enqueued_at: list[float] = []
        accepted_at: list[float] = []
        for index in indices:
            enqueued_at.append(time.time())
            await self._engine.jobs.submit(self._job(index))
            accepted_at.append(time.time())
            await asyncio.sleep(gap_s)
        return enqueued_at, accepted_at

    def send_batch(self, indices: Sequence[int]) -> None:
        """``submit_many``: one transaction for the batch (at most 1,000 jobs)."""
        self._runner.run(self._engine.jobs.submit_many([self._job(i) for i in indices]))

    # -- durable completion -----------------------------------------------------------------
    def probe(self, n: int, interval_s: float, timeout_s: float) -> Iterator[Sample]:
        """Rows committed ``completed``, read by a connection of our own (for SQLite: the
        file, opened separately; WAL lets it read while the workers write)."""
        url = _database_url()
        if url.startswith("sqlite"):
            conn = sqlite3.connect(_sqlite_path(url), timeout=5)
            try:
                yield from poll(
                    lambda: int(conn.execute(COMPLETED).fetchone()[0]), n, interval_s, timeout_s
                )
            finally:
                conn.close()
            return
        asyncpg = importlib.import_module("asyncpg")
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        pg = self._runner.run(asyncpg.connect(dsn))
        try:
            yield from poll(
                lambda: int(self._runner.run(pg.fetchval(COMPLETED))), n, interval_s, timeout_s
            )
        finally:
            self._runner.run(pg.close())

    # -- versions ---------------------------------------------------------------------------
    def server_version(self) -> str:
        url = _database_url()
        if url.startswith("sqlite"):
            return f"sqlite {sqlite3.sqlite_version}"
        return self._runner.run(self._postgres_version(url))

    async def _postgres_version(self, url: str) -> str:
        asyncpg = importlib.import_module("asyncpg")
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return f"postgresql {await conn.fetchval('SHOW server_version')}"
        finally:
            await conn.close()

    def versions(self) -> dict[str, str]:
        url = _database_url()
        names = ["conveyor", "sqlalchemy", "aiosqlite" if url.startswith("sqlite") else "asyncpg"]
        return {name: metadata.version(name) for name in names}
