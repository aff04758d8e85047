"""Conveyor's benchmark job type ``bench_noop`` (queue ``bench``): records and returns.

NotImplemented until the engine lands: nothing runs this until
``bench.conveyor_systems.engine_ready()`` is true. Loaded by the worker with
``conveyor worker --queues bench --concurrency N --handlers bench.conveyor_handlers`` (and
``CONVEYOR_HANDLER_MODULES=bench.conveyor_handlers``), and by the enqueueing client so that
submissions validate against :class:`BenchPayload`.

The engine is reached through ``importlib`` rather than a static import on purpose: while the
engine's modules are still moving, ``mypy bench`` must not break on them. Once the Conveyor
systems are enabled, replace :func:`_job_decorator` with
``from conveyor.worker.registry import job``.
"""

from __future__ import annotations

import importlib
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from bench.peers.record import record

JOB_TYPE = "bench_noop"
QUEUE = "bench"


class BenchPayload(BaseModel):
    """The job index (what the records count) and when it was enqueued (for inspection)."""

    model_config = ConfigDict(extra="forbid")

    index: int
    enqueued_at: float


async def bench_noop(ctx: Any, payload: BenchPayload) -> None:
    """Do nothing but record the execution, exactly as the peers' no-op tasks do."""
    record(payload.index, time.time())


def _job_decorator() -> Any:
    """The engine's ``@job`` (assumed: ``conveyor.worker.registry.job``)."""
    return importlib.import_module("conveyor.worker.registry").job


_job_decorator()(JOB_TYPE, queue=QUEUE, max_attempts=1)(bench_noop)
