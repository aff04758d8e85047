"""Conveyor through PgBouncer in session mode, for real: a private `pgbouncer` process in
front of the shared PostgreSQL, and `conveyor api`, `worker`, two `scheduler`s and `results`
connected only through it.

Session mode gives each client connection one server session for as long as it lasts,
which is what LISTEN, session advisory locks and asyncpg's prepared statements need; the
flow below uses all three. Transaction mode breaks them (docs/operations.md "Connection
budgets and PgBouncer"); `test_transaction_mode_is_refused_for_sessions` shows how.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import IN_CI, PG_HOST, PG_PORT, fresh_database
from tests.events.conftest import closed_port
from tests.support.pgbouncer import PGBOUNCER, PgBouncer, pgbouncer
from tests.support.processes import Cluster, eventually

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(300)]

ADMIN = ("admin@example.com", "admin-password-123")
STARTUP = 60.0  # seconds for five processes to start on a busy 2-core machine


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgres", request, tmp_path) as url:
        yield url


def bouncer(tmp_path: Path, mode: str) -> contextlib.AbstractContextManager[PgBouncer]:
    """A private PgBouncer in `mode`; skipped without the binary (failed in CI)."""
    if not os.path.exists(PGBOUNCER):
        if IN_CI:
            pytest.fail(f"{PGBOUNCER} is missing: .ci/run installs it")
        pytest.skip("pgbouncer is not installed")
    return pgbouncer(tmp_path / "pgbouncer", server=(PG_HOST, PG_PORT), mode=mode)


def settings(tmp_path: Path) -> dict[str, str]:
    return {
        "secret_key": "pgbouncer-test-secret-key-long-enough-for-hs256",
        "admin_email": ADMIN[0],
        "admin_password": ADMIN[1],
        "mail_url": f"file://{tmp_path / 'mail'}",
        "data_dir": str(tmp_path / "data"),
        "argon2_time_cost": "1",
        "argon2_memory_kib": "1024",
        "scheduler_interval": "0.2",
        # Longer than the test waits for any job: a job done in time was woken by NOTIFY,
        # through PgBouncer, not found by a poll.
        "poll_interval": "60",
    }


@dataclass
class Fleet:
    cluster: Cluster
    api: httpx.AsyncClient
    database: str  # the direct URL, for the checks


@pytest.fixture
async def fleet(database: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    with bouncer(tmp_path, "session") as pool:
        cluster = Cluster(pool.url(database), tmp_path)
        values = settings(tmp_path)
        port = closed_port()
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
        try:
            cluster.spawn("api", ["api", "--port", str(port)], values)
            cluster.worker("worker", concurrency=16, settings=values)
            cluster.scheduler("scheduler-1", values)
            cluster.scheduler("scheduler-2", values)
            cluster.spawn("results", ["results"], values)

            async def ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/ready")).status_code == 200
                return False

            await eventually(ready, timeout=STARTUP, what="the API to be ready")
            yield Fleet(cluster, client, database)
        finally:
            await client.aclose()
            cluster.close()
            print(cluster.report()[-20_000:])
            print(pool.output()[-5_000:])


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/api/v1/auth/login", json={"email": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def submit(fleet: Fleet, auth: dict[str, str], **extra: Any) -> str:
    body = {"type": "record", "payload": {"via": "pgbouncer"}, **extra}
    r = await fleet.api.post("/api/v1/jobs", json=body, headers=auth)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def state(fleet: Fleet, auth: dict[str, str], job: str) -> str:
    r = await fleet.api.get(f"/api/v1/jobs/{job}", headers=auth)
    assert r.status_code == 200, r.text
    return str(r.json()["state"])


async def completed(fleet: Fleet, auth: dict[str, str], jobs: list[str], within: float) -> float:
    """Seconds until every one of `jobs` completed; fails past `within`."""
    started = time.monotonic()

    async def all_done() -> bool:
        return all([await state(fleet, auth, job) == "completed" for job in jobs])

    await eventually(all_done, timeout=within, what=f"{len(jobs)} jobs to complete", every=0.2)
    return time.monotonic() - started


async def sessions(database: str) -> Counter[str]:
    """The server's sessions on the test database, per application_name (read directly,
    not through PgBouncer)."""
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT application_name, count(*) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " GROUP BY application_name"
        )
    finally:
        await conn.close()
    return Counter({row["application_name"]: row["n"] for row in rows})


async def advisory_holders(database: str) -> list[str]:
    """application_name of each session holding an advisory lock in the test database."""
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    finally:
        await conn.close()
    return sorted(row["application_name"] for row in rows)


# The most server sessions each kind of process may hold (docs/operations.md "Connection
# budgets and PgBouncer"): its pool (2 x 10, opened as needed, kept once opened) and its
# dedicated sessions, by application_name; per process (the fleet runs two schedulers).
POOL = 20
BUDGET = {
    "conveyor api": POOL,
    "conveyor api events": 1,  # LISTEN for event streams, while any is open
    "conveyor worker": POOL,
    "conveyor worker listen": 1,
    "conveyor scheduler": POOL,
    "conveyor scheduler lead scheduler": 1,
    "conveyor results": POOL,
    "conveyor results events": 1,
    "conveyor results lead relay:webhooks": 1,
}


class Peaks:
    """The most server sessions seen per application_name, sampled until stopped."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.most: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self.database)
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT application_name, count(*) AS n FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " GROUP BY application_name"
                )
                for row in rows:
                    name = row["application_name"]
                    self.most[name] = max(self.most[name], row["n"])
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample())

    async def stop(self) -> Counter[str]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return self.most


async def sse_events(
    fleet: Fleet, auth: dict[str, str], seen: list[dict[str, Any]], opened: asyncio.Event
) -> None:
    """Every message of `GET /api/v1/events` into `seen` until cancelled."""
    headers = {**auth, "Accept": "text/event-stream"}
    async with fleet.api.stream("GET", "/api/v1/events", headers=headers, timeout=None) as r:
        assert r.status_code == 200
        opened.set()
        fields: dict[str, str] = {}
        async for line in r.aiter_lines():
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif fields:
                seen.append({"event": fields.get("event"), **json.loads(fields["data"])})
                fields = {}


async def test_a_fleet_runs_through_pgbouncer_in_session_mode(fleet: Fleet) -> None:
    """API submits, a worker drains (woken by NOTIFY), one of two schedulers leads and
    promotes, the relay delivers, SSE streams every completion; then a load phase, with
    every kind of process's server sessions sampled against its budget."""
    auth = await login(fleet.api)
    seen: list[dict[str, Any]] = []
    opened = asyncio.Event()
    stream = asyncio.create_task(sse_events(fleet, auth, seen, opened))
    peaks = Peaks(fleet.database)
    peaks.start()
    try:
        await asyncio.wait_for(opened.wait(), 30)
        # Settle: the worker's first poll is behind it, so what follows is woken by NOTIFY.
        await asyncio.sleep(1)
        jobs = [await submit(fleet, auth) for _ in range(10)]
        took = await completed(fleet, auth, jobs, within=40)  # poll_interval is 60
        # A delayed job: only a leading scheduler promotes it (advisory lock via PgBouncer).
        later = await submit(fleet, auth, delay=1)
        took_later = await completed(fleet, auth, [later], within=40)

        def streamed() -> bool:
            done = {m["job"]["id"] for m in seen if m.get("event") == "completed"}
            return done >= {*jobs, later}

        await eventually(streamed, timeout=30, what="every completed event on the SSE stream")
        counts = await sessions(fleet.database)
        holders = await advisory_holders(fleet.database)
        load = await loaded(fleet, auth)
    finally:
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
            await stream
        most = await peaks.stop()
    print(f"load: {load}")
    print("most server sessions per application_name:", dict(sorted(most.items())))
    for name, budget in BUDGET.items():
        processes = 2 if name.startswith("conveyor scheduler") else 1
        assert 1 <= most[name] <= budget * processes, (name, most[name])
    del most[""]  # the test's own connections
    for name in [name for name in most if name.endswith(" check")]:
        del most[name]  # a dedicated session's check of its pooler, a moment at its start
    assert set(most) <= set(BUDGET), most  # nothing unnamed or unexpected
    print(f"10 jobs done in {took:.2f}s, the delayed one in {took_later:.2f}s")
    print("server sessions per application_name:", dict(sorted(counts.items())))
    print("advisory locks held by:", holders)
    # One scheduler leads (the other stands by on its own session); the relay's sinks
    # (webhooks) hold theirs. Each came through PgBouncer with its application_name.
    assert holders.count("conveyor scheduler lead scheduler") == 1, holders
    assert "conveyor results lead relay:webhooks" in holders, holders
    assert counts["conveyor worker listen"] == 1
    assert counts["conveyor scheduler lead scheduler"] == 2
    for name in ("conveyor api", "conveyor worker", "conveyor scheduler", "conveyor results"):
        assert counts[name] >= 1, counts
    # Every process is still running: nothing failed for being behind PgBouncer.
    assert all(proc.running() for proc in fleet.cluster.procs), fleet.cluster.report()[-5000:]


async def test_the_pooled_sessions_keep_their_settings_through_pgbouncer(
    database: str, tmp_path: Path
) -> None:
    """Before: `unsupported startup parameter: idle_in_transaction_session_timeout`, and no
    connection at all. Now the pool connects, and every session has the guard on (and the
    check for a vanished client)."""
    from conveyor.store.database import Database

    with bouncer(tmp_path, "session") as pool:
        db = Database(pool.url(database), application_name="conveyor probe")
        try:
            async with db.read() as conn:
                row = (
                    await conn.exec_driver_sql(
                        "SELECT current_setting('idle_in_transaction_session_timeout'),"
                        " current_setting('application_name'),"
                        " current_setting('client_connection_check_interval')"
                    )
                ).one()
        finally:
            await db.dispose()
    assert tuple(row) == ("30s", "conveyor probe", "1s")


async def test_transaction_mode_is_refused_for_sessions(
    database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind PgBouncer in transaction mode a LISTEN would hear nothing and two schedulers
    would share one advisory lock (seen: both logged "is leader"). The dedicated sessions
    see it when they open: the listener refuses to start, leadership is never taken, and
    the pool's prepared statements meeting another client's say so; each with one line
    naming the cause and the fix (a process exits with it at start)."""
    from conveyor.store.database import SessionPooling
    from conveyor.store.factory import open_backend

    with bouncer(tmp_path, "transaction") as pool:
        backend = open_backend(pool.url(database))
        try:
            with pytest.raises(SessionPooling, match="pool_mode must be `session`"):
                await backend.listen(lambda _queue: None, lambda _job: None)
            leaders = [backend.leadership("scheduler", f"s{n}", 10) for n in (1, 2)]
            with caplog.at_level(logging.INFO, logger="conveyor.store.postgres"):
                for _ in range(3):
                    assert [await lead.acquire() for lead in leaders] == [False, False]
            for lead in leaders:
                await lead.release()
        finally:
            await backend.close()
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 2, refusals  # once per leadership, not once per try
    assert all("not leading scheduler" in line and "session" in line for line in refusals)


async def test_processes_behind_transaction_mode_say_why_in_one_line(
    database: str, tmp_path: Path
) -> None:
    """Started one after the other as an operator would, a worker and a scheduler each say
    what is wrong in one line, without a traceback. The scheduler's pool meets the worker's
    prepared statements on the server session PgBouncer hands it on (asyncpg numbers its
    statements per process from 1); before, that was a traceback ending in
    `prepared statement "__asyncpg_stmt_1__" already exists` and asyncpg's hint."""
    with bouncer(tmp_path, "transaction") as pool:
        cluster = Cluster(pool.url(database), tmp_path)
        try:
            worker = cluster.worker("worker", settings=settings(tmp_path))
            assert await worker.wait_exit(60) == 2  # a clear error, not a crash
            scheduler = cluster.scheduler("scheduler", settings(tmp_path))

            def said() -> bool:
                return "pool_mode must be `session`" in scheduler.output()

            await eventually(said, timeout=60, what="the scheduler to refuse")
        finally:
            cluster.close()
            print(cluster.report()[-10_000:])
    for proc in (worker, scheduler):
        text = proc.output()
        assert "pool_mode must be `session`" in text and "Traceback" not in text, text


async def loaded(fleet: Fleet, auth: dict[str, str]) -> str:
    """Four more event streams, 40 concurrent single submits, then two batches of 500
    jobs, until every job completed: the load the budgets are sampled under."""
    streams = []
    for _ in range(4):
        opened = asyncio.Event()
        streams.append(asyncio.create_task(sse_events(fleet, auth, [], opened)))
        await asyncio.wait_for(opened.wait(), 30)
    try:
        started = time.monotonic()
        await asyncio.gather(*(submit(fleet, auth) for _ in range(40)))
        batch = {"jobs": [{"type": "record", "payload": {"n": n}} for n in range(500)]}
        for _ in range(2):
            r = await fleet.api.post("/api/v1/jobs/batch", json=batch, headers=auth)
            assert r.status_code == 201, r.text

        async def drained() -> bool:
            conn = await asyncpg.connect(fleet.database)
            try:
                left = await conn.fetchval("SELECT count(*) FROM jobs WHERE state <> 'completed'")
            finally:
                await conn.close()
            return bool(left == 0)

        await eventually(drained, timeout=180, what="the load to drain", every=0.5)
        return f"1040 jobs in {time.monotonic() - started:.1f}s, 5 event streams"
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)


async def test_conveyor_run_through_pgbouncer_within_its_budget(
    database: str, tmp_path: Path
) -> None:
    """Everything in one process shares one pool; its dedicated sessions add up."""
    with bouncer(tmp_path, "session") as pool:
        cluster = Cluster(pool.url(database), tmp_path)
        port = closed_port()
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30)
        peaks = Peaks(database)
        try:
            cluster.spawn("run", ["run", "--port", str(port)], settings(tmp_path))

            async def ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/ready")).status_code == 200
                return False

            await eventually(ready, timeout=STARTUP, what="conveyor run to be ready")
            peaks.start()
            fleet = Fleet(cluster, client, database)
            load = await loaded(fleet, await login(client))
            most = await peaks.stop()
            holders = await advisory_holders(database)
        finally:
            await peaks.stop()
            await client.aclose()
            cluster.close()
            print(cluster.report()[-10_000:])
    print(f"conveyor run, load: {load}")
    print("most server sessions per application_name:", dict(sorted(most.items())))
    assert holders == ["conveyor run lead relay:webhooks", "conveyor run lead scheduler"]
    assert 1 <= most["conveyor run"] <= POOL
    for name in ("listen", "events", "lead scheduler", "lead relay:webhooks"):
        assert most[f"conveyor run {name}"] == 1, (name, most)
