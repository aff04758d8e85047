"""The soak's job types (`make soak`): short work that sometimes fails, pool work, cron ticks.

Loaded with `chaos.handlers` (``CONVEYOR_HANDLER_MODULES=chaos.handlers,chaos.soak_handlers``)
and recorded the same way (`chaos.handlers.record`: one ``O_APPEND`` write per line), so the
soak counts what ran independently of Conveyor's own books, after the pruner has removed the
finished rows. A job's `fail_first` makes its first attempts raise, so retries are part of
the load and every job still completes (its `max_attempts` is above `fail_first`).
"""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel, ConfigDict, Field

from chaos.handlers import QUICK_RETRY, record
from conveyor.worker.context import JobContext, JobInfo
from conveyor.worker.registry import job


class SoakWork(BaseModel):
    """`index`: the soak's number for the job; `seconds` of work; `fail_first` attempts raise."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    seconds: float = Field(0.0, ge=0, le=60)
    fail_first: int = Field(0, ge=0, le=10)


class Tick(BaseModel):
    """`schedule`: which of the soak's cron schedules fired this job."""

    model_config = ConfigDict(extra="forbid")

    schedule: int = Field(ge=0)


class Planned(Exception):
    """The failure a soak job was asked for (a retry follows)."""


@job("soak.work", max_attempts=5, retry=QUICK_RETRY)
async def work(ctx: JobContext, payload: SoakWork) -> int:
    """Sleep `seconds` on the event loop; raise on the first `fail_first` attempts."""
    record("start", payload.index, ctx.job_id, ctx.attempt, os.getpid())
    await asyncio.sleep(payload.seconds)
    if ctx.attempt <= payload.fail_first:
        record("fail", payload.index, ctx.job_id, ctx.attempt, os.getpid())
        raise Planned(f"planned failure {ctx.attempt} of {payload.fail_first}")
    record("end", payload.index, ctx.job_id, ctx.attempt, os.getpid())
    return payload.index


@job("soak.pool", max_attempts=5, retry=QUICK_RETRY, executor="process")
def pool(info: JobInfo, payload: SoakWork) -> int:
    """`soak.work` in the worker's process pool (its children are sampled too)."""
    record("start", payload.index, info.id, info.attempt, os.getppid())
    time.sleep(payload.seconds)
    if info.attempt <= payload.fail_first:
        record("fail", payload.index, info.id, info.attempt, os.getppid())
        raise Planned(f"planned failure {info.attempt} of {payload.fail_first}")
    record("end", payload.index, info.id, info.attempt, os.getppid())
    return payload.index


@job("soak.tick", max_attempts=3, retry=QUICK_RETRY)
async def tick(ctx: JobContext, payload: Tick) -> None:
    """One cron fire, recorded as `tick <schedule> <job id>`."""
    record("tick", payload.schedule, ctx.job_id, ctx.attempt, os.getpid())
