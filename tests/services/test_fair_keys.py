"""A submission's fair key: its type's `fair_key` source, evaluated once at submit."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import select

from conveyor.services.jobs import JobService, Submission
from conveyor.store.backend import QueueBackend
from conveyor.store.tables import jobs
from conveyor.worker.context import JobContext
from conveyor.worker.registry import Registry


class Tenanted(BaseModel):
    tenant: str = "t1"


def registry() -> Registry:
    types = Registry()

    @types.job("by_owner")
    async def by_owner(ctx: JobContext, payload: Tenanted) -> None:
        return None

    @types.job("by_tenant", fair_key="payload.tenant")
    async def by_tenant(ctx: JobContext, payload: Tenanted) -> None:
        return None

    return types


async def stored_key(backend: QueueBackend, job_id: str) -> str | None:
    async with backend.db.read() as conn:
        found = await conn.execute(select(jobs.c.fair_key).where(jobs.c.id == job_id))
        return found.scalar()


async def test_the_fair_key_is_the_owner_by_default_or_the_types_source(
    backend: QueueBackend,
) -> None:
    service = JobService(backend, registry())
    owned = await service.submit(Submission("by_owner"), owner_id="alice")
    tenant = await service.submit(Submission("by_tenant", {"tenant": "acme"}), owner_id="alice")

    assert await stored_key(backend, owned.id) == "alice"
    assert await stored_key(backend, tenant.id) == "acme"


async def test_fair_dispatch_off_stores_no_key(backend: QueueBackend) -> None:
    service = JobService(backend, registry())
    service.fair_dispatch = False
    job = await service.submit(Submission("by_tenant", {"tenant": "acme"}), owner_id="alice")

    assert await stored_key(backend, job.id) is None
