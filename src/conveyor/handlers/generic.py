"""`generic`: reference 003's jobs (a title and a description); the result says what was done."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()


class GenericPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=10_000)


class GenericResult(BaseModel):
    title: str
    message: str
    processed_at: datetime


@blueprint.job("generic", max_attempts=3)
async def generic(ctx: JobContext, payload: GenericPayload) -> GenericResult:
    """Process a titled job: report progress and record when it was done."""
    await ctx.progress(50, "processing")
    return GenericResult(
        title=payload.title,
        message=f"processed {payload.title!r}",
        processed_at=datetime.now(UTC),
    )
