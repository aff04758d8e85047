"""`noop`: does nothing; the measure of the engine's own overhead."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.worker.context import JobContext
from conveyor.worker.registry import job


class NoopPayload(BaseModel):
    """Any fields; they are ignored."""

    model_config = ConfigDict(extra="allow")


@job("noop", max_attempts=1)
async def noop(ctx: JobContext, payload: NoopPayload) -> dict[str, Any] | None:
    """Finish at once, echoing nothing."""
    return None
