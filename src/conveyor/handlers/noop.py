"""`noop`: does nothing; the measure of the engine's own overhead."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()


class NoopPayload(BaseModel):
    """Any fields; they are ignored."""

    model_config = ConfigDict(extra="allow")


@blueprint.job("noop", max_attempts=1)
async def noop(ctx: JobContext, payload: NoopPayload) -> dict[str, Any] | None:
    """Finish at once, echoing nothing."""
    return None
