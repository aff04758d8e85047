"""Conveyor as a library: a job type declared with `@conveyor.job`, a worker running inside
this process, one job submitted through the API and followed until it is done.

    export CONVEYOR_DATABASE_URL=sqlite:///./data/conveyor.db   # or postgresql://...
    export CONVEYOR_ADMIN_PASSWORD='a long admin password'
    conveyor migrate
    PYTHONPATH=. conveyor api --handlers library_example &      # knows send_invoice's payload
    python library_example.py
"""

from __future__ import annotations

import asyncio
import os
import uuid

from pydantic import BaseModel

import conveyor
from conveyor.client import AsyncClient


class Invoice(BaseModel):
    order_id: int
    amount_cents: int


@conveyor.job("send_invoice", max_attempts=5)
async def send_invoice(ctx: conveyor.JobContext, payload: Invoice) -> str:
    """Bill one order (a real one would render a PDF and mail it)."""
    ctx.log.info("billing order %d", payload.order_id)
    return f"order {payload.order_id}: {payload.amount_cents / 100:.2f} EUR billed"


async def main() -> None:
    api = os.environ.get("CONVEYOR_API_URL", "http://127.0.0.1:8080")
    admin = os.environ.get("CONVEYOR_ADMIN_EMAIL", "admin@conveyor.local")
    # The worker reads the settings the server reads (CONVEYOR_DATABASE_URL, ...) and runs
    # every type declared with @conveyor.job, on this process's event loop.
    async with conveyor.Worker(), AsyncClient(api) as client:
        await client.login(admin, os.environ["CONVEYOR_ADMIN_PASSWORD"])
        job = await client.submit(
            "send_invoice",
            {"order_id": 42, "amount_cents": 1999},
            idempotency_key=f"invoice-42-{uuid.uuid4()}",  # a retried submit: the same job
        )
        done = await client.wait(job.id, timeout=60)
    print(f"{done.state}: {done.result}")


if __name__ == "__main__":
    asyncio.run(main())
