"""Job types for process-level tests: each execution is recorded durably to a directory.

Load them in a worker with ``--handlers tests.support.handlers`` (cwd and PYTHONPATH at the
repository root). Records go to ``$CONVEYOR_TEST_RECORD_DIR``: every start appends
``job_id attempt pid`` to ``start-<pid>.log`` and every finish to ``end-<pid>.log``, one
``write(2)`` per line on an ``O_APPEND`` descriptor, so a process killed with SIGKILL keeps
every line it wrote. Without the variable nothing is recorded.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.retry import RetryPolicy
from conveyor.worker.context import JobContext
from conveyor.worker.registry import job

RECORD_DIR_ENV = "CONVEYOR_TEST_RECORD_DIR"
QUICK_RETRY = RetryPolicy(base=0.1, cap=0.5)


class RecordPayload(BaseModel):
    """Any fields (e.g. an index to tell jobs apart); ignored."""

    model_config = ConfigDict(extra="allow")


class SleepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(1.0, ge=0, le=600)


class Execution(BaseModel):
    """Who ran the attempt that produced this result."""

    attempt: int
    pid: int


def _append(event: str, ctx: JobContext) -> None:
    directory = os.environ.get(RECORD_DIR_ENV)
    if not directory:
        return
    path = Path(directory) / f"{event}-{os.getpid()}.log"
    line = f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _done(ctx: JobContext) -> Execution:
    _append("end", ctx)
    return Execution(attempt=ctx.attempt, pid=os.getpid())


@job("record", max_attempts=3, retry=QUICK_RETRY)
async def record(ctx: JobContext, payload: RecordPayload) -> Execution:
    """Record the start and the end of the execution; nothing in between."""
    _append("start", ctx)
    return _done(ctx)


@job("record_sleep", max_attempts=3, retry=QUICK_RETRY)
async def record_sleep(ctx: JobContext, payload: SleepPayload) -> Execution:
    """Record the start, sleep `seconds` on the event loop, record the end."""
    _append("start", ctx)
    await asyncio.sleep(payload.seconds)
    return _done(ctx)


@job("record_sleep_sync", max_attempts=3, retry=QUICK_RETRY)
def record_sleep_sync(ctx: JobContext, payload: SleepPayload) -> Execution:
    """`record_sleep` as a plain function: it runs in the worker's thread pool."""
    _append("start", ctx)
    time.sleep(payload.seconds)
    return _done(ctx)
