"""Job types for the tracing tests (tests/tracing/): one that fails its first attempt, and
a workflow step that does nothing. Quick retries, so a retried run comes within a second."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from conveyor.domain.retry import RetryPolicy
from conveyor.worker.context import JobContext
from conveyor.worker.registry import job

QUICK = RetryPolicy(base=0.01, cap=0.01, jitter=0)


class Nothing(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job("trace_flaky", max_attempts=3, retry=QUICK)
async def trace_flaky(ctx: JobContext, payload: Nothing) -> int:
    """Fails its first attempt, completes its second."""
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return ctx.attempt


@job("trace_step", max_attempts=1)
async def trace_step(ctx: JobContext, payload: Nothing) -> str:
    return ctx.job_id
