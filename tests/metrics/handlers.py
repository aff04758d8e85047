"""Job types whose outcomes the metrics tests know in advance: one retried, one failed.

Loaded through `handler_modules`, so only the apps of these tests import them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from conveyor.domain.retry import RetryPolicy
from conveyor.errors import NonRetryableError
from conveyor.worker.context import JobContext
from conveyor.worker.registry import job

MODULE = __name__
AT_ONCE = RetryPolicy(base=0.0, jitter=0.0)  # due again immediately: the test promotes it


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job("metrics_flaky", max_attempts=3, retry=AT_ONCE)
async def flaky(ctx: JobContext, payload: Empty) -> int:
    """Fail the first attempt (so it is retried), succeed the second."""
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return ctx.attempt


@job("metrics_doomed", max_attempts=3)
async def doomed(ctx: JobContext, payload: Empty) -> None:
    """Fail for good at the first attempt."""
    raise NonRetryableError("this job always fails")
