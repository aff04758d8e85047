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


# ---- flow control (bench/flow.py): the same no-op, under a tenant's fair key or limit --------
FLOW_ENV = "BENCH_FLOW"  # "" (bench_noop), "fair", "limited" or "starve"
STARVE_B_FROM_ENV = "BENCH_FLOW_B_FROM"  # starve: indices from here on are tenant B's
TENANTS = 1_000
FAIR_TYPE = "bench_fair"
LIMITED_TYPE = "bench_limited"
LIMIT_NAME = "bench_tenant"
LIMIT_PER_TENANT = 2
FLOW_TYPES = {"": JOB_TYPE, "fair": FAIR_TYPE, "limited": LIMITED_TYPE, "starve": FAIR_TYPE}


class TenantPayload(BaseModel):
    """A bench job of one tenant: its key for fair dispatch and for the limit."""

    model_config = ConfigDict(extra="forbid")

    index: int
    enqueued_at: float
    tenant: str


async def bench_tenant_noop(ctx: Any, payload: TenantPayload) -> None:
    """`bench_noop` for a tenant's job."""
    record(payload.index, time.time())


def _declare_flow_types() -> None:
    """`bench_fair` (fair key: the payload's tenant) and `bench_limited` (the same, and at
    most LIMIT_PER_TENANT running per tenant). A limit the claim does not enforce yet shows
    in the records: bench/flow.py labels such a run."""
    job = _job_decorator()
    concurrency = importlib.import_module("conveyor.domain.flow").Concurrency
    job(FAIR_TYPE, queue=QUEUE, max_attempts=1, fair_key="payload.tenant")(bench_tenant_noop)
    job(
        LIMITED_TYPE,
        queue=QUEUE,
        max_attempts=1,
        fair_key="payload.tenant",
        limits=(concurrency(LIMIT_NAME, LIMIT_PER_TENANT, key="payload.tenant"),),
    )(bench_tenant_noop)


_declare_flow_types()
