"""Job types for the workflow doors' tests: one that completes with what it was given and
one that always fails (one attempt). Load with ``handler_modules=MODULE``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from conveyor.domain.nesting import Nested
from conveyor.domain.workflows import StepSpec
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

MODULE = "tests.support.workflow_door_handlers"
blueprint = Blueprint()


class AnyPayload(BaseModel):
    model_config = ConfigDict(extra="allow")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int


@blueprint.job("wf_ok", max_attempts=1)
async def wf_ok(ctx: JobContext, payload: AnyPayload) -> dict[str, Any]:
    return {"got": payload.model_dump()}


@blueprint.job("wf_strict", max_attempts=1)
async def wf_strict(ctx: JobContext, payload: Strict) -> dict[str, Any]:
    return {"n": payload.n}


@blueprint.job("wf_fail", max_attempts=1)
async def wf_fail(ctx: JobContext, payload: AnyPayload) -> None:
    raise RuntimeError("this step always fails")


class FanOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: int
    before: list[str] = []


@blueprint.job("wf_fan_out", max_attempts=1)
async def wf_fan_out(ctx: JobContext, payload: FanOut) -> dict[str, Any]:
    """Appends `width` `wf_ok` steps (part-0 ...) that the steps in `before` wait for."""
    parts = [StepSpec(f"part-{i}", "wf_ok", {"i": i}) for i in range(payload.width)]
    added = await ctx.append_steps(parts, before=payload.before)
    return {"added": len(added)}


@blueprint.job("wf_seen", max_attempts=1)
async def wf_seen(ctx: JobContext, payload: AnyPayload) -> dict[str, Any]:
    """Completes with its dependencies' results as it read them, by step name."""
    return {"saw": dict(ctx.results)}


@blueprint.job("wf_fan_out_nested", max_attempts=1)
async def wf_fan_out_nested(ctx: JobContext, payload: FanOut) -> dict[str, Any]:
    """Appends `width` sub-workflows (file-0 ...), each `fetch` then `parse`, that the steps
    in `before` wait for."""
    parts = [
        Nested(f"file-{i}", (StepSpec("fetch", "wf_ok", {"i": i}),
                             StepSpec("parse", "wf_ok", {"i": i}, ("fetch",))))
        for i in range(payload.width)
    ]  # fmt: skip
    added = await ctx.append_steps(parts, before=payload.before)
    return {"added": len(added)}
