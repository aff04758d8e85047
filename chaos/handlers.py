"""The suite's job types: each execution recorded to a file, independent of Conveyor's books.

Loaded by the processes the suite starts (``CONVEYOR_HANDLER_MODULES=chaos.handlers``). Each
start and each end of each attempt appends one line to ``$CHAOS_RECORD_DIR/exec-<pid>.log``:
``start|end index job_id attempt owner_pid unix_time``, with one ``write(2)`` on an
``O_APPEND`` descriptor, so a process killed with SIGKILL keeps every line it wrote. The
owner is the worker process that holds the job (a process-pool child records its parent), so
a duplicate can be traced to the worker that was killed. Without the variable nothing is
recorded.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.flow import Concurrency
from conveyor.domain.retry import RetryPolicy
from conveyor.worker.context import JobContext, JobInfo
from conveyor.worker.registry import job

RECORD_DIR_ENV = "CHAOS_RECORD_DIR"
QUICK_RETRY = RetryPolicy(base=0.1, cap=0.5)
# The limited scenario's concurrency limit: a submit names the key (`limits`), at most
# PER_KEY running per key across every worker.
PER_KEY_LIMIT, PER_KEY = "chaos.per_key", 2


class Work(BaseModel):
    """`index`: the submitter's number for the job; `seconds`: how long it works."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    seconds: float = Field(0.0, ge=0, le=600)


class Crash(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    code: int = Field(13, ge=0, le=255)


def record(event: str, index: int, job_id: str, attempt: int, owner: int) -> None:
    directory = os.environ.get(RECORD_DIR_ENV)
    if not directory:
        return
    line = f"{event} {index} {job_id} {attempt} {owner} {time.time():.6f}\n".encode()
    fd = os.open(
        Path(directory) / f"exec-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
    )
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@job("chaos.work", max_attempts=20, retry=QUICK_RETRY)
async def work(ctx: JobContext, payload: Work) -> int:
    """Record the start, sleep `seconds` on the event loop, record the end."""
    record("start", payload.index, ctx.job_id, ctx.attempt, os.getpid())
    await asyncio.sleep(payload.seconds)
    record("end", payload.index, ctx.job_id, ctx.attempt, os.getpid())
    return payload.index


@job(
    "chaos.limited",
    max_attempts=20,
    retry=QUICK_RETRY,
    submit_limits=(Concurrency(PER_KEY_LIMIT, PER_KEY),),
)
async def limited(ctx: JobContext, payload: Work) -> int:
    """`chaos.work` under the per-key limit its submit chose (chaos.scenarios.limited_kills)."""
    record("start", payload.index, ctx.job_id, ctx.attempt, os.getpid())
    await asyncio.sleep(payload.seconds)
    record("end", payload.index, ctx.job_id, ctx.attempt, os.getpid())
    return payload.index


@job("chaos.pool", max_attempts=3, retry=QUICK_RETRY, executor="process")
def pool(info: JobInfo, payload: Work) -> int:
    """`chaos.work` in the worker's process pool (the owner is the worker, the parent)."""
    record("start", payload.index, info.id, info.attempt, os.getppid())
    time.sleep(payload.seconds)
    record("end", payload.index, info.id, info.attempt, os.getppid())
    return payload.index


@job("chaos.crash", max_attempts=1, executor="process")
def crash(info: JobInfo, payload: Crash) -> None:
    """A process-pool child that dies: ``os._exit`` (no cleanup, as a segfault or the OOM
    killer would leave it)."""
    record("start", payload.index, info.id, info.attempt, os.getppid())
    os._exit(payload.code)


@job("chaos.block", max_attempts=3, retry=QUICK_RETRY)
async def block(ctx: JobContext, payload: Work) -> int:
    """An ``async def`` that blocks its event loop for `seconds` (a sync call by mistake)."""
    record("start", payload.index, ctx.job_id, ctx.attempt, os.getpid())
    time.sleep(payload.seconds)  # noqa: ASYNC251 - blocking the loop is the fault
    record("end", payload.index, ctx.job_id, ctx.attempt, os.getpid())
    return payload.index
