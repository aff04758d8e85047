"""Job types the library tests enqueue: their own blueprint, as a user's application has."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor.domain.flow import Concurrency, Unique
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()


class Order(BaseModel):
    order_id: int


@blueprint.job("lib_order", queue="library")
async def ship(ctx: JobContext, payload: Order) -> dict[str, int]:
    """Ships an order (here: says which)."""
    return {"shipped": payload.order_id}


@blueprint.job("lib_unique", queue="library", unique=Unique(fields=("order_id",)))
async def invoice(ctx: JobContext, payload: Order) -> None:
    """One live invoice job per order."""


@blueprint.job(
    "lib_packing", queue="library", limits=(Concurrency("packers", 1, key="payload.order_id"),)
)
async def pack(ctx: JobContext, payload: Order) -> None:
    """One packing at a time per order."""
