"""A real worker's log output, as JSON and as text: every line about a job carries its id,
type and attempt (the worker's own lines, a handler's `ctx.log` and plain `logging` lines,
async or in a thread); lines logged while serving an API request carry its request id."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from conveyor.domain.jobs import NewJob
from conveyor.domain.retry import RetryPolicy
from conveyor.domain.states import TERMINAL
from conveyor.logs import setup_logging
from conveyor.store.backend import QueueBackend
from conveyor.worker.context import JobContext
from conveyor.worker.registry import Registry
from conveyor.worker.worker import Worker, WorkerConfig
from tests.api.conftest import api_settings, running_api

TEXT_FIELDS = re.compile(r"  job=(\S+) type=(\S+) attempt=(\d+)")
# Lines about jobs: the worker's, the handlers', the job service's (not start/stop lines).
ABOUT_JOBS = re.compile(r"claimed|started|completed|failed|retrying|said|thread|cancelled")


def about_jobs(logger: str, message: str) -> bool:
    """A line of ours that names a job's step (the worker's own start and stop lines don't)."""
    ours = logger.startswith(("conveyor", "some.library")) and " worker " not in f" {message}"
    return ours and ABOUT_JOBS.search(message) is not None


class Empty(BaseModel):
    pass


def registry() -> Registry:
    reg = Registry()

    @reg.job("chatty")
    async def chatty(ctx: JobContext, payload: Empty) -> None:
        ctx.log.info("said through ctx.log")
        logging.getLogger("some.library").info("said through plain logging")

    @reg.job("threaded", executor="thread")
    def threaded(ctx: JobContext, payload: Empty) -> None:
        logging.getLogger("some.library").info("said from a thread")

    @reg.job("broken", retry=RetryPolicy(base=0.0, jitter=0.0))
    async def broken(ctx: JobContext, payload: Empty) -> None:
        raise RuntimeError("it broke")

    return reg


@pytest.fixture
def log_file(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The process's logging set up as `conveyor` does, in the format of the test's param."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    path = tmp_path / "app.log"
    try:
        setup_logging("DEBUG", request.param, path)
        yield path
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


async def run_jobs(backend: QueueBackend) -> dict[str, str]:
    made = await backend.enqueue(
        [NewJob(type=name, payload={}, max_attempts=2) for name in ("chatty", "threaded", "broken")]
    )
    worker = Worker(backend, registry(), WorkerConfig(queues={"default": None}, poll_interval=0.05))
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            await backend.promote_due()  # the broken job's retry
            states = [(await backend.get(m.id)).state for m in made]
            if all(state in TERMINAL for state in states):
                break
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await task
    return {name: m.id for name, m in zip(("chatty", "threaded", "broken"), made, strict=True)}


def lines(path: Path) -> list[str]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text().splitlines()


@pytest.mark.parametrize("log_file", ["json"], indirect=True)
async def test_json_lines_about_jobs_carry_their_fields(
    backend: QueueBackend, log_file: Path
) -> None:
    ids = await run_jobs(backend)
    entries = [json.loads(line) for line in lines(log_file)]
    about = [e for e in entries if "job_id" in e]
    for entry in about:
        assert {entry["job_id"], entry["job_type"]} <= {*ids.values(), *ids}
        assert entry["attempt"] >= 1
    said = {(e["message"], e["job_type"], e["attempt"]) for e in about}
    assert {
        ("said through ctx.log", "chatty", 1),
        ("said through plain logging", "chatty", 1),
        ("said from a thread", "threaded", 1),
    } <= said
    broken = [(e["level"], e["attempt"]) for e in about if e["job_id"] == ids["broken"]]
    assert ("INFO", 1) in broken and ("WARNING", 2) in broken  # retrying, then failed
    # Nothing about a job went out without its fields.
    strays = [e for e in entries if "job_id" not in e and about_jobs(e["logger"], e["message"])]
    assert strays == []


@pytest.mark.parametrize("log_file", ["text"], indirect=True)
async def test_text_lines_about_jobs_end_with_a_compact_suffix(
    backend: QueueBackend, log_file: Path
) -> None:
    ids = await run_jobs(backend)
    found: dict[str, set[int]] = {}
    for line in lines(log_file):
        match = TEXT_FIELDS.search(line)
        if match is None:
            assert not about_jobs(line.split()[3], line), line
            continue
        job_id, job_type, attempt = match.groups()
        assert ids[job_type] == job_id
        found.setdefault(job_type, set()).add(int(attempt))
    assert found == {"chatty": {1}, "threaded": {1}, "broken": {1, 2}}


@pytest.mark.parametrize("log_file", ["json"], indirect=True)
async def test_api_lines_about_a_job_carry_the_request_id(
    db_url: str, tmp_path: Path, log_file: Path
) -> None:
    async with running_api(api_settings(db_url, tmp_path)) as api:
        headers = {**await api.admin(), "X-Request-ID": "req-4711"}
        r = await api.client.post(
            "/api/v1/jobs",
            json={"type": "noop", "payload": {}, "queue": "nowhere"},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        r = await api.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers)
        assert r.status_code == 200, r.text
    entries = [json.loads(line) for line in lines(log_file)]
    about = [e for e in entries if e.get("job_id") == job_id]
    assert {e["message"].split(" ")[0] for e in about} == {"submitted", "cancelled"}
    assert {e["request_id"] for e in about} == {"req-4711"}
