"""Job types for workflow tests (tests/services/test_workflows.py, tests/worker/...).

Load them with ``CONVEYOR_HANDLER_MODULES=tests.support.workflow_handlers``. Each run appends
a line `<step> <job id> <attempt> <pid>` to the file its payload names (O_APPEND: whole lines from
several processes), so a test counts runs from the handlers' own record, not Conveyor's.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.domain.retry import RetryPolicy
from conveyor.domain.workflows import StepSpec
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext, JobInfo

blueprint = Blueprint()


class StepPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str  # the file each run appends its line to
    value: int = 0
    fail: bool = False
    sleep: float = Field(0.0, ge=0, le=600)
    sleep_first: float = Field(0.0, ge=0, le=600)  # the first attempt's sleep, added
    fail_unless: str | None = None  # fail while this file does not exist
    spans: str | None = None  # a file each run appends `<step> <start> <end>` to (time.time())


def _record(ctx: JobContext, path: str) -> None:
    _append(path, f"{ctx.step} {ctx.job_id} {ctx.attempt} {os.getpid()}\n")


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def spans(path: str) -> list[tuple[str, float, float]]:
    """The (step, start, end) of the runs recorded in a `spans` file, as the handlers saw
    them (inside the time each held its slots)."""
    with open(path) as f:
        return [(n, float(a), float(b)) for n, a, b in (line.split() for line in f if line.strip())]


def _missing(path: str) -> bool:
    return not os.path.exists(path)


@blueprint.job("wf_step", max_attempts=1)
async def wf_step(ctx: JobContext, payload: StepPayload) -> dict[str, Any]:
    """Records its run, sleeps, fails if told; returns its value and what it saw."""
    _record(ctx, payload.log)
    began = time.time()
    pause = payload.sleep + (payload.sleep_first if ctx.attempt == 1 else 0.0)
    if pause:
        await asyncio.sleep(pause)
    if payload.spans:
        _append(payload.spans, f"{ctx.step} {began} {time.time()}\n")
    if payload.fail or (payload.fail_unless and _missing(payload.fail_unless)):
        raise RuntimeError(f"step {ctx.step} fails as told")
    return {"value": payload.value, "saw": dict(ctx.results), "workflow": ctx.workflow_id}


def runs(path: str) -> list[str]:
    """The step names of the runs recorded in `path`, in order."""
    try:
        with open(path) as f:
            return [line.split()[0] for line in f if line.strip()]
    except FileNotFoundError:
        return []


def pids(path: str) -> set[str]:
    """The processes that ran the runs recorded in `path`."""
    with open(path) as f:
        return {line.split()[3] for line in f if line.strip()}


class FanOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log: str
    n: int = Field(3, ge=0, le=1000)
    before: tuple[str, ...] = ()
    fail_first: bool = False  # fail the first attempt after appending (a retry appends again)
    sleep: float = Field(0.0, ge=0, le=60)  # each appended part's sleep
    spans: str | None = None  # ... and where it records its span (StepPayload.spans)


@blueprint.job("wf_fanout", max_attempts=2, retry=RetryPolicy(base=0.01, cap=0.01, jitter=0))
async def wf_fanout(ctx: JobContext, payload: FanOut) -> dict[str, Any]:
    """Appends `n` steps (`part<i>`, wf_step) that the steps of `before` then wait for."""
    _record(ctx, payload.log)
    parts = [StepSpec(f"part{i}", "wf_step", {"log": payload.log, "value": i,
                                              "sleep": payload.sleep, "spans": payload.spans})
             for i in range(payload.n)]  # fmt: skip
    added = await ctx.append_steps(parts, before=payload.before)
    if payload.fail_first and ctx.attempt == 1:
        raise RuntimeError("the first attempt fails after appending")
    return {"added": len(added)}


class ProcessPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: int = 0


@blueprint.job("wf_process_step", max_attempts=1, executor="process")
def wf_process_step(info: JobInfo, payload: ProcessPayload) -> dict[str, Any]:
    """A step run in the process pool: it gets `info` (picklable), which carries the step's
    workflow, name and its dependencies' results."""
    return {"value": payload.value, "saw": dict(info.results), "step": info.step}
