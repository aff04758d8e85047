"""Job types for workflow tests (tests/services/test_workflows.py, tests/worker/...).

Load them with ``CONVEYOR_HANDLER_MODULES=tests.support.workflow_handlers``. Each run appends
a line `<step> <job id> <attempt>` to the file its payload names (O_APPEND: whole lines from
several processes), so a test counts runs from the handlers' own record, not Conveyor's.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()


class StepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str  # the file each run appends its line to
    value: int = 0
    fail: bool = False
    sleep: float = Field(0.0, ge=0, le=600)


def _record(ctx: JobContext, path: str) -> None:
    line = f"{ctx.step} {ctx.job_id} {ctx.attempt}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@blueprint.job("wf_step", max_attempts=1)
async def wf_step(ctx: JobContext, payload: StepPayload) -> dict[str, Any]:
    """Records its run, sleeps, fails if told; returns its value and what it saw."""
    _record(ctx, payload.log)
    if payload.sleep:
        await asyncio.sleep(payload.sleep)
    if payload.fail:
        raise RuntimeError(f"step {ctx.step} fails as told")
    return {"value": payload.value, "saw": dict(ctx.results), "workflow": ctx.workflow_id}


def runs(path: str) -> list[str]:
    """The step names of the runs recorded in `path`, in order."""
    try:
        with open(path) as f:
            return [line.split()[0] for line in f if line.strip()]
    except FileNotFoundError:
        return []
