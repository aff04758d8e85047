"""`conveyor.Worker` and `conveyor.run`: a worker embedded in the caller's process runs the
`@job` types (and the blueprints and modules given) against the database, with a scheduler
beside it, and stops gracefully. On SQLite and PostgreSQL."""

from __future__ import annotations

import inspect
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import get_type_hints

import pytest

from conveyor.domain.jobs import JobRecord
from conveyor.domain.states import JobState
from conveyor.errors import Unavailable
from conveyor.library.registry import default
from conveyor.library.worker import Worker, WorkerOptions, run
from conveyor.services.jobs import JobService, Submission
from conveyor.settings import Settings
from conveyor.store.backend import QueueBackend
from conveyor.worker.registry import Registry
from tests.library import lib_handlers
from tests.support.processes import (
    CHILD_PYTHONPATH,
    ROOT,
    clean_environ,
    eventually,
    start,
)
from tests.worker import blueprint_handlers

WAIT = 60.0  # generous: the machine is busy


def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=db_url,
        data_dir=tmp_path,
        secret_key="library-tests-" + "k" * 32,
        poll_interval=0.2,
        scheduler_interval=0.2,
    )


@pytest.fixture
def jobs(backend: QueueBackend) -> JobService:
    assert lib_handlers.lib_greet.__name__ in default  # declared by its module's import
    return JobService(
        backend, Registry(default, blueprint_handlers.blueprint, blueprint_handlers.extra)
    )


async def finished(jobs: JobService, job_id: str) -> JobRecord:
    async def done() -> bool:
        return (await jobs.get(job_id)).state is JobState.COMPLETED

    await eventually(done, timeout=WAIT, what=f"job {job_id} to complete", every=0.1)
    return await jobs.get(job_id)


async def test_an_embedded_worker_runs_the_job_types_declared_with_job(
    jobs: JobService, db_url: str, tmp_path: Path
) -> None:
    async with Worker(settings=settings(db_url, tmp_path)) as worker:
        job = await jobs.submit(Submission("lib_greet", {"name": "Ada"}))
        done = await finished(jobs, job.id)
        assert worker.id is not None and done.worker_id == worker.id
    assert done.result == "hello Ada"


async def test_it_runs_the_blueprints_and_modules_given_on_the_queues_asked(
    jobs: JobService, db_url: str, tmp_path: Path
) -> None:
    given = (blueprint_handlers.extra, f"{blueprint_handlers.__name__}")
    async with Worker(*given, settings=settings(db_url, tmp_path), queues="default,bp"):
        main = await jobs.submit(Submission("bp_main", {}))  # the module's blueprint, queue bp
        extra = await jobs.submit(Submission("bp_extra", {}))  # the blueprint given
        assert (await finished(jobs, main.id)).queue == "bp"
        await finished(jobs, extra.id)


async def test_its_scheduler_brings_a_delayed_job_due(
    jobs: JobService, db_url: str, tmp_path: Path
) -> None:
    run_at = datetime.now(UTC) + timedelta(seconds=1)
    async with Worker(settings=settings(db_url, tmp_path)):
        job = await jobs.submit(Submission("lib_greet", {"name": "later"}, run_at=run_at))
        assert job.state is JobState.SCHEDULED
        done = await finished(jobs, job.id)
    assert done.finished_at is not None and done.finished_at >= run_at


async def test_stop_lets_a_running_job_finish_and_closes(
    jobs: JobService, db_url: str, tmp_path: Path
) -> None:
    worker = Worker(settings=settings(db_url, tmp_path), queues="lib_naps", scheduler=False)
    await worker.start()
    job = await jobs.submit(Submission("lib_nap", {"seconds": 1.0}))

    async def running() -> bool:
        return (await jobs.get(job.id)).state is JobState.RUNNING

    await eventually(running, timeout=WAIT, what="the nap to start", every=0.05)
    assert await worker.stop() == 0
    done = await jobs.get(job.id)  # finished by the time stop() returns: drained, not released
    assert (done.state, done.result, done.attempt) == (JobState.COMPLETED, "rested", 1)
    with pytest.raises(RuntimeError, match="already been started"):
        await worker.start()


async def test_start_raises_when_the_database_is_away_and_may_be_tried_again(
    tmp_path: Path,
) -> None:
    worker = Worker(settings=settings("postgresql://postgres@127.0.0.1:1/none", tmp_path))
    for _ in range(2):  # nothing half-open stays behind to make the second "already started"
        with pytest.raises(Unavailable):
            await worker.start()
    assert worker.id is None


async def test_a_bad_queue_list_is_refused_at_start_and_closes_what_it_opened(
    db_url: str, tmp_path: Path
) -> None:
    worker = Worker(settings=settings(db_url, tmp_path), queues="default,images=two")
    for _ in range(2):
        with pytest.raises(ValueError, match="two"):
            await worker.start()
    assert worker.id is None


async def test_a_worker_not_started_says_so(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not been started"):
        await Worker(settings=settings("sqlite:///unused.db", tmp_path)).wait()


def test_run_takes_the_workers_options() -> None:
    """`WorkerOptions` (run's keywords) are `Worker`'s, with the same types."""
    params = inspect.signature(Worker.__init__).parameters
    keywords = [name for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    hints = get_type_hints(Worker.__init__)
    options = get_type_hints(WorkerOptions)
    assert list(options) == keywords
    assert options == {name: hints[name] for name in keywords}
    assert "configure_logging" in inspect.signature(run).parameters


RUN = """
import sys
import conveyor
from tests.library import lib_handlers
sys.exit(conveyor.run(database_url=sys.argv[1], queues="default,lib_naps", configure_logging=False))
"""


def spawn_run(db_url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """`conveyor.run` in a child process of its own (its output in tmp_path/run.out)."""
    env = clean_environ()
    env.update(
        PYTHONPATH=CHILD_PYTHONPATH,
        CONVEYOR_DATA_DIR=str(tmp_path),
        CONVEYOR_POLL_INTERVAL="0.2",
    )
    argv = [sys.executable, "-c", RUN, db_url]
    return start("run", argv, cwd=ROOT, env=env, out=tmp_path / "run.out").popen


async def test_run_blocks_until_a_signal_then_drains_and_exits_0(
    jobs: JobService, db_url: str, tmp_path: Path
) -> None:
    child = spawn_run(db_url, tmp_path)
    try:
        job = await jobs.submit(Submission("lib_nap", {"seconds": 1.0}))

        async def running() -> bool:
            return (await jobs.get(job.id)).state is JobState.RUNNING

        await eventually(running, timeout=WAIT, what="the nap to start in the child", every=0.05)
        child.send_signal(signal.SIGTERM)
        await eventually(lambda: child.poll() is not None, timeout=WAIT, what="the child to exit")
        assert child.returncode == 0, (tmp_path / "run.out").read_text()
        assert (await jobs.get(job.id)).state is JobState.COMPLETED  # drained, not released
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
