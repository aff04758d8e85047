"""Job types under limits for process-level tests (tests/worker/test_limits_processes.py).

Load them with ``CONVEYOR_HANDLER_MODULES=tests.support.limit_handlers``. Each returns the
`time.time()` of its own start and end: the tests check the limits from these intervals, not
from Conveyor's own counters. Starts are also recorded as tests.support.handlers records them.
"""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.flow import Concurrency, Rate
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext
from tests.support.handlers import QUICK_RETRY, _append

blueprint = Blueprint()


class Keyed(BaseModel):
    model_config = ConfigDict(extra="forbid")

    k: str
    seconds: float = Field(0.002, ge=0, le=600)  # the first attempt's sleep
    again: float = Field(0.002, ge=0, le=600)  # later attempts' sleep


class Interval(BaseModel):
    start: float
    end: float
    pid: int
    attempt: int


async def _run(ctx: JobContext, payload: Keyed) -> Interval:
    start = time.time()
    _append("start", ctx)
    await asyncio.sleep(payload.seconds if ctx.attempt == 1 else payload.again)
    end = time.time()
    _append("end", ctx)
    return Interval(start=start, end=end, pid=os.getpid(), attempt=ctx.attempt)


@blueprint.job(
    "limited_one", max_attempts=3, retry=QUICK_RETRY,
    limits=(Concurrency("lim_one", 1, key="payload.k"),),
)  # fmt: skip
async def limited_one(ctx: JobContext, payload: Keyed) -> Interval:
    """At most one running per key."""
    return await _run(ctx, payload)


@blueprint.job(
    "limited_two", max_attempts=3, retry=QUICK_RETRY,
    limits=(Concurrency("lim_two", 2, key="payload.k"),),
)  # fmt: skip
async def limited_two(ctx: JobContext, payload: Keyed) -> Interval:
    """At most two running per key."""
    return await _run(ctx, payload)


@blueprint.job(
    "rated", max_attempts=3, retry=QUICK_RETRY,
    limits=(Rate("rate_two", 2, per_s=1, key="payload.k", burst=1), Concurrency("rated_c", 5)),
)  # fmt: skip
async def rated(ctx: JobContext, payload: Keyed) -> Interval:
    """Two starts a second per key, one at a time at most (a bucket of one token)."""
    return await _run(ctx, payload)
