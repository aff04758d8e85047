"""Conveyor as a library: a job type declared with `@conveyor.job`, a worker running inside
this process, and a job enqueued in the same transaction as the application's own row.

    export CONVEYOR_DATABASE_URL=sqlite:///./data/conveyor.db   # or postgresql://...
    conveyor migrate
    python library_example.py
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from typing import Any

from pydantic import BaseModel

import conveyor


class Invoice(BaseModel):
    order_id: int
    amount_cents: int


billed: asyncio.Queue[str] = asyncio.Queue()  # what the worker billed (for this demo's print)


@conveyor.job("send_invoice", max_attempts=5)
async def send_invoice(ctx: conveyor.JobContext, payload: Invoice) -> str:
    """Bill one order (a real one would render a PDF and mail it)."""
    ctx.log.info("billing order %d", payload.order_id)
    line = f"order {payload.order_id}: {payload.amount_cents / 100:.2f} EUR billed"
    billed.put_nowait(line)
    return line


def connect(url: str) -> Any:
    """The application's own connection to the database Conveyor uses."""
    if url.startswith("sqlite"):
        return sqlite3.connect(url.split(":///", 1)[1])  # its transaction opens at a write
    import psycopg

    return psycopg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))


async def main() -> None:
    # The worker reads the settings the server reads (CONVEYOR_DATABASE_URL, ...) and runs
    # every type declared with @conveyor.job, on this process's event loop.
    async with conveyor.Worker():
        conn = connect(os.environ["CONVEYOR_DATABASE_URL"])
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS shop_orders (id text PRIMARY KEY)")
            order = str(uuid.uuid4())
            conn.execute(f"INSERT INTO shop_orders VALUES ('{order}')")
            conveyor.enqueue(
                conn, "send_invoice", {"order_id": 42, "amount_cents": 1999},
                owner="svc-shop", idempotency_key=f"invoice-{order}",
            )  # fmt: skip
            conn.commit()  # the order and its job together (a rollback: neither)
        finally:
            conn.close()
        line = await asyncio.wait_for(billed.get(), timeout=60)
    print(f"completed: {line}")  # the worker stopped after recording the job's completion


if __name__ == "__main__":
    asyncio.run(main())
