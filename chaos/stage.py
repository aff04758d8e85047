"""What every scenario shares: its database, its processes, the API, the ledger and the faults.

`stage(...)` opens a fresh database (a SQLite file, or a PostgreSQL database on the server
given, dropped afterwards), migrates it, and yields a `Stage`; at the end every process is
killed and the database removed; the run directory keeps `processes.txt` (each process's
last output) and `faults.txt` (each fault, `chaos.verdict.describe_each`). `Stage.judge`
reads the handlers' records and the jobs' final states and fills the scenario's row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from chaos.client import Api, Ledger, Submitter
from chaos.fleet import Fleet, Proc, base_settings
from chaos.pgcluster import free_port
from chaos.verdict import (
    Execution,
    Fault,
    Row,
    StoredJob,
    describe_each,
    read_executions,
    tally,
)

API_START_S = 90.0  # an API process's start on a loaded 2-core machine, generously


@dataclass(frozen=True)
class Target:
    """The database of one scenario."""

    kind: str  # "sqlite" or "postgres"
    url: str

    def via(self, port: int) -> str:
        """This database's URL through a proxy listening on 127.0.0.1:`port`."""
        parts = urlsplit(self.url)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{port}"))

    @property
    def host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 5432


@contextlib.asynccontextmanager
async def database(kind: str, workdir: Path, pg_admin: str | None) -> AsyncIterator[Target]:
    """A fresh, empty database: SQLite in `workdir`, or one made on `pg_admin`'s server."""
    if kind == "sqlite":
        yield Target("sqlite", f"sqlite:///{workdir / 'conveyor.db'}")
        return
    if pg_admin is None:
        raise RuntimeError("no PostgreSQL server for this scenario")
    name = f"chaos_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_admin, timeout=30)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(pg_admin)
    try:
        yield Target("postgres", urlunsplit(parts._replace(path=f"/{name}")))
    finally:
        admin = await asyncpg.connect(pg_admin, timeout=30)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def stored_jobs(target: Target) -> list[StoredJob]:
    """Every suite job's id, index, state and rescued attempts, read straight from the
    database."""
    sql = "SELECT id, payload, state, errors FROM jobs WHERE type LIKE 'chaos.%'"
    if target.kind == "sqlite":
        rows = await asyncio.to_thread(_sqlite_rows, target.url.removeprefix("sqlite:///"), sql)
    else:
        conn = await asyncpg.connect(target.url, timeout=30)
        try:
            rows = [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return [StoredJob(str(i), _index(p), str(s), _rescued(e)) for i, p, s, e in rows]


LEAKED_SLOTS = (
    "SELECT count(*) FROM limit_slots AS s WHERE s.job_id IS NOT NULL AND NOT EXISTS "
    "(SELECT 1 FROM jobs AS j WHERE j.id = s.job_id AND j.state = 'running')"
)


async def leaked_slots(target: Target) -> int:
    """Concurrency slots held by a job that is not running (or is gone): leaks."""
    if target.kind == "sqlite":
        path = target.url.removeprefix("sqlite:///")
        rows = await asyncio.to_thread(_sqlite_rows, path, LEAKED_SLOTS)
        return int(str(rows[0][0]))
    conn = await asyncpg.connect(target.url, timeout=30)
    try:
        return int(await conn.fetchval(LEAKED_SLOTS))
    finally:
        await conn.close()


def _index(payload: Any) -> int:
    """The suite's index from a payload: JSON text (SQLite) or already decoded."""
    return int((json.loads(payload) if isinstance(payload, str) else payload)["index"])


def _rescued(errors: Any) -> frozenset[int]:
    """The attempts a job's errors (JSON text, or already decoded) say the rescuer took back."""
    found = (json.loads(errors) if isinstance(errors, str) else errors) or []
    return frozenset(int(e["attempt"]) for e in found if e.get("type") == "LeaseExpired")


def _sqlite_rows(path: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


class Stage:
    """One scenario's world. `faults` is filled by the scenario as it injects them."""

    def __init__(self, name: str, target: Target, workdir: Path, lease: float) -> None:
        self.name = name
        self.target = target
        self.workdir = workdir
        self.lease = lease
        self.fleet = Fleet(workdir, target.url, base_settings(lease))
        self.ledger = Ledger()
        self.api = Api("")
        self.submitter = Submitter(self.api, self.ledger)
        self.faults: list[Fault] = []
        self.row = Row(name, target.kind)
        self._serial = 0

    def serial(self, prefix: str) -> str:
        """A fresh process name: `worker-3`."""
        self._serial += 1
        return f"{prefix}-{self._serial}"

    async def start_api(self, *, db_url: str | None = None) -> Proc:
        """An API process, healthy and signed in (the first one becomes `self.api`)."""
        port = free_port()
        proc = self.fleet.api(self.serial("api"), port, db_url=db_url)
        api = Api(f"http://127.0.0.1:{port}")
        await api.wait_healthy(API_START_S, proc.running)
        await api.sign_in()
        if not self.api.url:
            self.api.url, self.api.token = api.url, api.token
        return proc

    def executions(self) -> list[Execution]:
        return read_executions(self.fleet.records)

    def open_runs(self, proc: Proc) -> int:
        """Attempts `proc` has started and not ended (read from its own record file)."""
        path = self.fleet.records / f"exec-{proc.pid}.log"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return 0
        starts = sum(1 for line in lines if line.startswith("start"))
        return starts - (len(lines) - starts)

    async def unfinished(self) -> int:
        return sum(1 for j in await stored_jobs(self.target) if j.state not in _TERMINAL)

    async def settle(self, timeout: float) -> bool:
        """Wait until every job is terminal (True), or `timeout` s (False). Gives up early
        when no process that runs jobs is left (a worker that exited is not replaced)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.unfinished() == 0:
                return True
            if not (self.fleet.living("worker") or self.fleet.living("run")):
                return False
            await asyncio.sleep(0.5)
        return False

    async def judge(self, extra_lost: Callable[[list[StoredJob]], int] | None = None) -> Row:
        """Count lost, stuck and duplicates; note exits; the row's verdict follows."""
        stored = await stored_jobs(self.target)
        counted = tally(self.ledger.submissions, stored, self.executions(), self.faults, self.lease)
        if extra_lost is not None:
            counted.lost_events = extra_lost(stored)
        self.row.apply(counted, self.faults)
        self.row.exits = self.fleet.unexpected_exits()
        if counted.lost:
            self.row.notes.append(f"lost indexes {counted.lost[:5]}")
        if counted.lost_events:
            self.row.notes.append(f"{counted.lost_events} completed events never delivered")
        if counted.unexplained:
            self.row.notes.append(f"unexplained duplicates {counted.unexplained[:5]}")
        return self.row


_TERMINAL = frozenset({"completed", "failed", "cancelled"})


@contextlib.asynccontextmanager
async def stage(
    name: str, kind: str, workdir: Path, pg_admin: str | None, lease: float
) -> AsyncIterator[Stage]:
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    async with database(kind, workdir, pg_admin) as target:
        opened = Stage(name, target, workdir, lease)
        try:
            await asyncio.to_thread(opened.fleet.migrate)
            yield opened
        finally:
            opened.row.exits = opened.row.exits or opened.fleet.unexpected_exits()
            (workdir / "processes.txt").write_text(opened.fleet.report())
            (workdir / "faults.txt").write_text(describe_each(opened.faults))
            opened.fleet.close()
