"""`sleep`: waits, reporting progress; can fail on purpose to show retries."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.retry import RetryPolicy
from conveyor.errors import NonRetryableError
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()


class SleepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(1.0, ge=0, le=3600, description="How long to sleep.")
    fail: bool = Field(False, description="Fail after sleeping (retried like any error).")
    fail_attempts: int = Field(
        0, ge=0, le=100, description="Fail only the first N attempts, then succeed."
    )
    permanent: bool = Field(False, description="Make the failure non-retryable.")
    steps: int = Field(10, ge=1, le=1000, description="Progress reports while sleeping.")


class SleepResult(BaseModel):
    slept: float
    attempt: int


@blueprint.job("sleep", max_attempts=3, retry=RetryPolicy(base=1.0, cap=60.0))
async def sleep(ctx: JobContext, payload: SleepPayload) -> SleepResult:
    """Sleep `seconds` in `steps`, reporting progress; optionally fail."""
    for step in range(1, payload.steps + 1):
        await asyncio.sleep(payload.seconds / payload.steps)
        await ctx.progress(step * 100 // payload.steps, f"step {step}/{payload.steps}")
    failing = payload.fail or ctx.attempt <= payload.fail_attempts
    if failing and payload.permanent:
        raise NonRetryableError("asked to fail permanently")
    if failing:
        raise RuntimeError(f"asked to fail (attempt {ctx.attempt})")
    return SleepResult(slept=payload.seconds, attempt=ctx.attempt)
