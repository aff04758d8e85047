"""The backups docs/deploy.md recommends, taken of a database that is being written to.

A writer keeps enqueueing batches of 50 jobs (one transaction each, every job with its
`created` event in the same transaction) while the copy is taken. A consistent copy holds
whole batches only, and exactly one event per job: no torn transaction, no job without its
event. SQLite: `VACUUM INTO` and the online backup API (what the `sqlite3` shell's `.backup`
uses); PostgreSQL: `pg_dump -Fc` restored with `pg_restore` into a new database.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from conveyor.domain.jobs import NewJob
from conveyor.store.factory import open_backend
from tests.conftest import PG_HOST, PG_PORT, PG_USER, _drop, _pg_admin, fresh_database, pg_url

BATCH = 50
COUNTS = (
    "SELECT (SELECT count(*) FROM jobs),"
    " (SELECT count(*) FROM events WHERE type = 'created'),"
    " (SELECT count(DISTINCT job_id) FROM events WHERE type = 'created'),"
    " (SELECT version_num FROM alembic_version)"
)


@contextlib.asynccontextmanager
async def writing(url: str) -> AsyncIterator[Callable[[], int]]:
    """Batches of BATCH jobs committed back to back while the block runs; how many so far."""
    backend = open_backend(url)
    stop = asyncio.Event()
    done = {"jobs": 0}

    async def write() -> None:
        while not stop.is_set():
            batch = [NewJob(type="noop", payload={"n": done["jobs"] + i}) for i in range(BATCH)]
            await backend.enqueue(batch)
            done["jobs"] += BATCH
            await asyncio.sleep(0)

    task = asyncio.create_task(write())
    try:
        while done["jobs"] < 10 * BATCH:  # well under way before the copy starts
            await asyncio.sleep(0.01)
        yield lambda: done["jobs"]
    finally:
        stop.set()
        await task
        await backend.close()


def consistent(counts: tuple[int, int, int, str], head: str) -> int:
    """The copy's job count, after checking it holds whole transactions only."""
    jobs, created, distinct, version = counts
    assert jobs > 0 and jobs % BATCH == 0, counts
    assert created == distinct == jobs, counts  # every job has its one `created` event
    assert version == head
    return jobs


def sqlite_counts(path: Path) -> tuple[int, int, int, str]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        row = conn.execute(COUNTS).fetchone()
    finally:
        conn.close()
    return (row[0], row[1], row[2], row[3])


def sqlite_copies(source: Path, directory: Path) -> list[Path]:
    """`VACUUM INTO` and the online backup API, each through a connection of its own."""
    vacuumed, backed_up = directory / "vacuumed.db", directory / "backed-up.db"
    conn = sqlite3.connect(source, timeout=30)
    try:
        conn.execute("VACUUM INTO ?", (str(vacuumed),))
        target = sqlite3.connect(backed_up)
        with target:
            conn.backup(target)
        target.close()
    finally:
        conn.close()
    return [vacuumed, backed_up]


@pytest.fixture
def sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("sqlite", request, tmp_path) as url:
        yield url


@pytest.fixture
def pg_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", request, tmp_path) as url:
        yield url


async def test_sqlite_copies_of_a_live_database_are_consistent(
    sqlite_url: str, tmp_path: Path
) -> None:
    source = Path(sqlite_url.removeprefix("sqlite:///"))
    head = sqlite_counts(source)[3]
    async with writing(sqlite_url) as written:
        before = written()
        copies = await asyncio.to_thread(sqlite_copies, source, tmp_path)
        during = written()
    for copy in copies:
        assert before <= consistent(sqlite_counts(copy), head) <= during + BATCH


def run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")  # it comes with the PostgreSQL server
    return found


async def pg_counts(url: str) -> tuple[int, int, int, str]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(COUNTS)
    finally:
        await conn.close()
    assert row is not None
    return (row[0], row[1], row[2], row[3])


@pytest.mark.postgres
async def test_pg_dump_of_a_live_database_restores_consistent(
    pg_database: str, tmp_path: Path
) -> None:
    dump, restore = pg_tool("pg_dump"), pg_tool("pg_restore")
    connection = ["-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER]
    head = (await pg_counts(pg_database))[3]
    file = str(tmp_path / "conveyor.dump")
    name = pg_database.rsplit("/", 1)[1]
    async with writing(pg_database) as written:
        before = written()
        await asyncio.to_thread(run, dump, *connection, "-Fc", "-d", name, "-f", file)
        during = written()
    target = f"conveyor_restore_{uuid.uuid4().hex[:12]}"
    admin = await _pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{target}"')
    finally:
        await admin.close()
    try:
        await asyncio.to_thread(run, restore, *connection, "--no-owner", "-d", target, file)
        restored = consistent(await pg_counts(pg_url(target)), head)
    finally:
        await _drop(target)
    assert before <= restored <= during + BATCH
