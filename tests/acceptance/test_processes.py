"""Real `conveyor` processes on a real database: crashes, pauses, signals, many workers.

Each test seeds and inspects the database in-process (the `backend` fixture) and runs the
engine as subprocesses (`tests.support.processes.Cluster`), whose output is printed when a
test fails. Job types come from `tests.support.handlers`, which record every start and end
of every attempt to files, so "ran exactly once" is checked against what handlers did, not
only against what the database says.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from conveyor.domain.jobs import JobRecord, NewJob
from conveyor.domain.states import JobState
from conveyor.runtime import load_handlers
from conveyor.store.backend import QueueBackend
from conveyor.worker.worker import Worker, WorkerConfig
from tests.support.processes import (
    CHILD_PYTHONPATH,
    CONVEYOR,
    HANDLERS,
    ROOT,
    Cluster,
    Proc,
    Run,
    clean_environ,
    eventually,
    stopped,
)

pytestmark = pytest.mark.slow

# Short leases so that crashes show within seconds; the scheduler rescues every 0.2 s.
FAST_LEASE = {"lease_seconds": "2", "heartbeat_interval": "0.5"}
FAST_SCHEDULER = {"scheduler_interval": "0.2"}
STARTUP = 20.0  # seconds a process may take to start and claim, on a busy 2-core machine


async def job_reaches(
    backend: QueueBackend, job_id: str, state: JobState, timeout: float
) -> JobRecord:
    async def there() -> bool:
        return (await backend.get(job_id)).state is state

    await eventually(there, timeout=timeout, what=f"job {job_id} to be {state.value}")
    return await backend.get(job_id)


def runs_of(runs: list[Run], job_id: str) -> list[tuple[int, int]]:
    """(attempt, pid) of each recorded run of one job, in attempt order."""
    return sorted((r.attempt, r.pid) for r in runs if r.job_id == job_id)


async def database_writable(db_url: str, job_id: str) -> bool:
    """Whether another client can still write the job's row (no paused process holds a lock)."""
    if db_url.startswith("sqlite:"):
        return await asyncio.to_thread(_sqlite_writable, db_url.removeprefix("sqlite:///"))
    conn = await asyncpg.connect(db_url, timeout=5)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '500ms'")
            await conn.fetchval("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", job_id)
    except asyncpg.exceptions.LockNotAvailableError:
        return False
    finally:
        await conn.close()
    return True


def _sqlite_writable(path: str) -> bool:
    conn = sqlite3.connect(path, timeout=0.5, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
    return True


async def pause(proc: Proc, db_url: str, job_id: str) -> None:
    """SIGSTOP `proc` at a moment it holds no lock on the job (not inside a heartbeat).

    A process frozen inside a transaction would block the rescue (PostgreSQL row lock) or
    every writer (SQLite's write lock): that is a different scenario from the one tested.
    """
    for _ in range(10):
        proc.send(signal.SIGSTOP)
        await eventually(lambda: stopped(proc.pid), timeout=5, what=f"{proc.name} to stop")
        if await database_writable(db_url, job_id):
            return
        proc.send(signal.SIGCONT)
        await asyncio.sleep(0.03)
    raise AssertionError(f"{proc.name} was inside a transaction at every try")


# ---- many workers ------------------------------------------------------------------------------
async def test_three_workers_run_3000_jobs_each_exactly_once(
    cluster: Cluster, backend: QueueBackend
) -> None:
    enqueued = await backend.enqueue(
        [NewJob(type="record", payload={"n": i}, max_attempts=1) for i in range(3000)]
    )
    ids = {e.id for e in enqueued}
    assert len(ids) == 3000

    workers = [cluster.worker(f"worker-{n}", concurrency=32, burst=True) for n in range(3)]
    for worker in workers:
        assert await worker.wait_exit(60) == 0, f"{worker.name} failed"

    everything = await backend.list_jobs(limit=10_000)
    assert Counter(j.state for j in everything) == {JobState.COMPLETED: 3000}
    completed = [j for j in everything if j.id in ids]
    assert len(completed) == 3000
    assert all(j.attempt == 1 and j.errors == [] for j in completed)

    starts, ends = cluster.runs("start"), cluster.runs("end")
    for runs in (starts, ends):
        assert len(runs) == 3000, Counter(r.job_id for r in runs).most_common(3)
        assert {r.job_id for r in runs} == ids
        assert {r.attempt for r in runs} == {1}
    # The stored result comes from the process that ran the job (and only it ran it).
    by_job = {r.job_id: r.pid for r in ends}
    assert all(j.result == {"attempt": 1, "pid": by_job[j.id]} for j in completed)
    pids = {w.pid for w in workers}
    assert set(by_job.values()) <= pids
    assert all(any(w.owns(j.worker_id) for w in workers) for j in completed)
    print("jobs per worker:", Counter(by_job.values()))
    assert await backend.list_workers(alive_within=3600) == []  # all three signed off


# ---- crashes and leases --------------------------------------------------------------------
async def test_killed_worker_job_is_rescued_and_completed_by_another(
    cluster: Cluster, backend: QueueBackend
) -> None:
    doomed, last_chance, *others = await backend.enqueue(
        [
            NewJob(type="record_sleep", payload={"seconds": 3}),
            NewJob(type="record_sleep", payload={"seconds": 3}, max_attempts=1),
        ]
        + [NewJob(type="record", payload={"n": n}) for n in range(5)]
    )
    first = cluster.worker("worker-a", concurrency=2, settings=FAST_LEASE)
    cluster.scheduler(settings=FAST_SCHEDULER)
    await eventually(
        lambda: (
            [runs_of(cluster.runs("start"), j.id) for j in (doomed, last_chance)]
            == [[(1, first.pid)]] * 2
        ),
        timeout=STARTUP,
        what="worker-a to start both sleeping jobs",
    )
    second = cluster.worker("worker-b", concurrency=2, settings=FAST_LEASE)
    first.send(signal.SIGKILL)
    assert await first.wait_exit(5) == -signal.SIGKILL

    done = await job_reaches(backend, doomed.id, JobState.COMPLETED, timeout=STARTUP + 10)
    assert done.attempt == 2
    assert done.result == {"attempt": 2, "pid": second.pid}
    assert second.owns(done.worker_id)
    assert [(e["attempt"], e["type"]) for e in done.errors] == [(1, "LeaseExpired")]
    assert runs_of(cluster.runs("start"), doomed.id) == [(1, first.pid), (2, second.pid)]
    assert runs_of(cluster.runs("end"), doomed.id) == [(2, second.pid)]

    # Its attempts spent, the other one fails instead of running again.
    failed = await backend.get(last_chance.id)
    assert (failed.state, failed.attempt) == (JobState.FAILED, 1)
    assert [(e["attempt"], e["type"]) for e in failed.errors] == [(1, "LeaseExpired")]
    assert runs_of(cluster.runs("start"), last_chance.id) == [(1, first.pid)]
    assert runs_of(cluster.runs("end"), last_chance.id) == []

    # Nothing lost: the jobs queued behind them ran too, once each.
    for other in others:
        finished = await job_reaches(backend, other.id, JobState.COMPLETED, timeout=10)
        assert finished.attempt == 1
        assert runs_of(cluster.runs("end"), other.id) == [(1, second.pid)]


async def test_job_three_times_longer_than_its_lease_runs_once(
    cluster: Cluster, backend: QueueBackend
) -> None:
    lease = {"lease_seconds": "1", "heartbeat_interval": "0.25"}
    jobs = await backend.enqueue(
        [
            NewJob(type="record_sleep", payload={"seconds": 3.5}),
            NewJob(type="record_sleep_sync", payload={"seconds": 3.5}),
        ]
    )
    worker = cluster.worker("worker", concurrency=2, settings=lease)
    scheduler = cluster.scheduler(settings=FAST_SCHEDULER)

    for enqueued in jobs:
        done = await job_reaches(backend, enqueued.id, JobState.COMPLETED, timeout=STARTUP + 5)
        assert done.attempt == 1
        assert done.errors == []
        assert done.result == {"attempt": 1, "pid": worker.pid}
        assert runs_of(cluster.runs("start"), enqueued.id) == [(1, worker.pid)]
        assert runs_of(cluster.runs("end"), enqueued.id) == [(1, worker.pid)]
    assert "rescued" not in scheduler.output()
    assert "stopped: lost" not in worker.output()
    scheduler.send(signal.SIGTERM)
    assert await scheduler.wait_exit(10) == 0


async def test_paused_worker_loses_its_job_and_its_late_result_is_dropped(
    cluster: Cluster, backend: QueueBackend
) -> None:
    lease = {"lease_seconds": "1", "heartbeat_interval": "0.25"}
    (enqueued,) = await backend.enqueue([NewJob(type="record_sleep", payload={"seconds": 2})])
    paused = cluster.worker("worker-paused", concurrency=1, settings=lease)
    cluster.scheduler(settings=FAST_SCHEDULER)
    await eventually(
        lambda: runs_of(cluster.runs("start"), enqueued.id) == [(1, paused.pid)],
        timeout=STARTUP,
        what="the first worker to start the job",
    )
    await pause(paused, cluster.db_url, enqueued.id)
    other = cluster.worker("worker-other", concurrency=1, settings=lease)

    done = await job_reaches(backend, enqueued.id, JobState.COMPLETED, timeout=STARTUP + 10)
    assert done.attempt == 2
    assert done.result == {"attempt": 2, "pid": other.pid}
    assert stopped(paused.pid)  # it was frozen the whole time

    paused.send(signal.SIGCONT)
    # The first attempt does finish in the handler, and its result reaches the database...
    await eventually(
        lambda: runs_of(cluster.runs("end"), enqueued.id) == [(1, paused.pid), (2, other.pid)],
        timeout=10,
        what="the resumed worker's handler to finish",
    )
    # ...where the fence rejects it.
    await eventually(
        lambda: "late results dropped" in paused.output() and enqueued.id in paused.output(),
        timeout=10,
        what="the resumed worker to log the dropped result",
    )
    after = await backend.get(enqueued.id)
    assert after.state is JobState.COMPLETED
    assert after.attempt == 2
    assert after.result == {"attempt": 2, "pid": other.pid}
    assert after.finished_at == done.finished_at
    assert [(e["attempt"], e["type"]) for e in after.errors] == [(1, "LeaseExpired")]
    assert paused.running()  # losing a job is not a reason to die


# ---- signals -------------------------------------------------------------------------------
async def test_sigterm_lets_running_jobs_finish_and_claims_no_more(
    cluster: Cluster, backend: QueueBackend
) -> None:
    enqueued = await backend.enqueue(
        [NewJob(type="record_sleep", payload={"seconds": 1.5}) for _ in range(5)]
    )
    worker = cluster.worker("worker", concurrency=2)
    await eventually(
        lambda: len(cluster.runs("start")) == 2, timeout=STARTUP, what="two jobs to start"
    )
    worker.send(signal.SIGTERM)
    signalled = time.monotonic()
    assert await worker.wait_exit(15) == 0
    assert time.monotonic() - signalled < 10

    started = {r.job_id for r in cluster.runs("start")}
    assert len(started) == 2
    assert {r.job_id for r in cluster.runs("end")} == started
    for e in enqueued:
        record = await backend.get(e.id)
        if e.id in started:
            assert (record.state, record.attempt) == (JobState.COMPLETED, 1)
        else:  # never claimed after the signal
            assert (record.state, record.attempt) == (JobState.QUEUED, 0)
            assert record.worker_id is None
    assert "(2 claimed, 2 finished)" in worker.output()
    assert await backend.list_workers(alive_within=3600) == []


async def test_sigterm_past_the_grace_releases_jobs_without_spending_an_attempt(
    cluster: Cluster, backend: QueueBackend
) -> None:
    """Grace 0.5 s runs out; and a second signal does not wait for a 30 s grace at all."""
    kinds = ("record_sleep", "record_sleep_sync")
    graced = await backend.enqueue(
        [NewJob(type=kind, payload={"seconds": 60}, queue="graced") for kind in kinds]
    )
    forced = await backend.enqueue(
        [NewJob(type=kind, payload={"seconds": 60}, queue="forced") for kind in kinds]
    )
    short = cluster.worker(
        "worker-short-grace", concurrency=2, queues="graced", settings={"shutdown_grace": "0.5"}
    )
    long = cluster.worker(
        "worker-long-grace", concurrency=2, queues="forced", settings={"shutdown_grace": "30"}
    )
    await eventually(
        lambda: len(cluster.runs("start")) == 4, timeout=STARTUP, what="all four jobs to start"
    )
    short.send(signal.SIGTERM)
    long.send(signal.SIGTERM)
    await eventually(
        lambda: "waiting up to 30 s" in long.output(), timeout=5, what="the long grace to begin"
    )
    long.send(signal.SIGTERM)
    signalled = time.monotonic()
    assert await short.wait_exit(10) == 0
    # Its exit code is racy (0, or 1 after "the finisher stopped"): see
    # test_a_forced_stop_is_not_a_failure below.
    await long.wait_exit(10)
    assert time.monotonic() - signalled < 10  # not the 30 s grace

    for e in graced + forced:
        record = await backend.get(e.id)
        assert record.state is JobState.QUEUED
        assert record.attempt == 0
        assert record.worker_id is None and record.lease_expires_at is None
        assert record.errors == []
    assert cluster.runs("end") == []
    for worker in (short, long):
        assert "released 2 jobs" in worker.output()


async def test_a_forced_stop_is_not_a_failure(
    backend: QueueBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process, to be deterministic: the CLI's second signal is `Worker.stop(force=True)`.

    The monitor ticks every 0.2 s. When the finisher closes before its first tick after the
    stop and the rest of the shutdown (here: a release on a slow database) lasts past that
    tick, `run()` returns 1. With real signals this happens in some runs only.
    """
    (e,) = await backend.enqueue([NewJob(type="record_sleep", payload={"seconds": 60})])
    config = WorkerConfig(queues={"default": None}, concurrency=1, grace=30)
    worker = Worker(backend, load_handlers([HANDLERS]), config)
    release = backend.release

    async def slow_release(worker_id: str, job_ids: Sequence[str]) -> set[str]:
        await asyncio.sleep(0.5)
        return await release(worker_id, job_ids)

    monkeypatch.setattr(backend, "release", slow_release)
    running = asyncio.create_task(worker.run())
    try:
        await eventually(lambda: worker.running_ids == {e.id}, timeout=10, what="the claim")
        worker.stop(force=True)
        code = await asyncio.wait_for(asyncio.shield(running), 10)
    finally:
        worker.stop(force=True)
        await asyncio.wait_for(running, 10)
    record = await backend.get(e.id)
    assert (record.state, record.attempt) == (JobState.QUEUED, 0)
    assert code == 0


# ---- the command line's errors ---------------------------------------------------------------
@dataclass(frozen=True)
class CliCase:
    args: tuple[str, ...]
    says: str  # what stderr must contain (whitespace-normalised: rich wraps long lines)
    env: dict[str, str] = field(default_factory=dict)


UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"
CLI_ERRORS = {
    "unknown-type": CliCase(("enqueue", "nope"), "unknown job type 'nope'"),
    "invalid-json": CliCase(("enqueue", "sleep", "--payload", "{bad"), "not valid JSON"),
    "invalid-payload": CliCase(
        ("enqueue", "sleep", "--payload", '{"seconds": -1}'), "invalid payload for job type"
    ),
    "unreachable": CliCase(
        ("enqueue", "noop"), "not reachable", {"CONVEYOR_DATABASE_URL": UNREACHABLE}
    ),
    "bad-queues": CliCase(("worker", "--queues", "a=notanumber"), "--queues"),
}


@dataclass(frozen=True)
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def said(self) -> str:
        return " ".join(self.stderr.split())


def _cli_env(db_url: str, logs: Path, name: str, extra: dict[str, str]) -> dict[str, str]:
    env = clean_environ()
    env.update(
        PYTHONPATH=CHILD_PYTHONPATH,
        CONVEYOR_DATABASE_URL=db_url,
        CONVEYOR_LOG_FILE=str(logs / f"{name}.log"),
    )
    env.update(extra)
    return env


def _run_all(commands: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, CliRun]:
    """Run the commands concurrently (each startup costs a second of CPU), bounded in time."""
    procs = {
        name: subprocess.Popen(
            [CONVEYOR, *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, env) in commands.items()
    }
    results: dict[str, CliRun] = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=60)
            results[name] = CliRun(proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


@pytest.fixture(scope="module")
def sqlite_file(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Path:
    target = tmp_path_factory.mktemp("cli") / "cli.db"
    shutil.copy(sqlite_template, target)
    return target


@pytest.fixture(scope="module")
def cli_runs(sqlite_file: Path) -> dict[str, CliRun]:
    url = f"sqlite:///{sqlite_file}"
    logs = sqlite_file.parent
    commands = {
        name: (list(case.args), _cli_env(url, logs, name, case.env))
        for name, case in CLI_ERRORS.items()
    }
    commands["enqueue-ok"] = (
        ["enqueue", "record", "--handlers", HANDLERS, "--payload", '{"n": 1}'],
        _cli_env(url, logs, "enqueue-ok", {}),
    )
    # Documented as "a path or empty": empty means no log file.
    commands["no-log-file"] = (
        ["worker", "--burst", "--queues", "nothing-here"],
        _cli_env(url, logs, "no-log-file", {"CONVEYOR_LOG_FILE": ""}),
    )
    return _run_all(commands)


@pytest.mark.parametrize("name", sorted(CLI_ERRORS))
def test_cli_errors_are_one_clear_line(name: str, cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs[name]
    assert run.code != 0, run
    assert "error: " in run.said, run
    assert CLI_ERRORS[name].says in run.said.split("error: ", 1)[1], run
    assert "Traceback" not in run.stderr + run.stdout, run


def test_cli_invalid_payload_names_the_field(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["invalid-payload"]
    assert "seconds" in run.said, run


def test_cli_unreachable_database_says_only_the_error(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["unreachable"]
    assert run.said.startswith("error: "), run


async def test_cli_failures_change_nothing(cli_runs: dict[str, CliRun], sqlite_file: Path) -> None:
    from conveyor.store.factory import open_backend

    backend = open_backend(f"sqlite:///{sqlite_file}")
    try:
        jobs = await backend.list_jobs(limit=100)
    finally:
        await backend.close()
    assert [j.type for j in jobs] == ["record"]  # only the successful enqueue's job


def test_cli_enqueue_prints_its_job(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["enqueue-ok"]
    assert run.code == 0, run
    printed = json.loads(run.stdout)
    assert printed["state"] == "queued" and printed["created"] is True


def test_cli_enqueue_prints_one_json_line(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["enqueue-ok"]
    assert len(run.stdout.splitlines()) == 1, run


def test_cli_empty_log_file_setting_means_no_log_file(cli_runs: dict[str, CliRun]) -> None:
    run = cli_runs["no-log-file"]
    assert run.code == 0, run
    assert "Traceback" not in run.stderr, run
