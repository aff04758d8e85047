"""Unique job types for the tests of unique jobs (docs/flow-control.md, "Unique jobs").

Load them beside tests.support.handlers: ``handler_modules="tests.support.unique_handlers"``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from conveyor.domain.flow import DEFAULT_UNIQUE_STATES, Unique
from conveyor.domain.states import JobState
from conveyor.errors import NonRetryableError
from conveyor.worker.context import JobContext
from conveyor.worker.registry import job

MODULE = "tests.support.unique_handlers"
PERIOD_S = 2.0  # unique_period's period: short, so that a test can wait for the next one


class Order(BaseModel):
    model_config = ConfigDict(extra="allow")

    order_id: str
    fail: bool = False


@job("unique_order", unique=Unique(fields=("order_id",)))
async def unique_order(ctx: JobContext, payload: Order) -> str:
    """One live job per order_id (and owner); fails for good when `fail` is set."""
    if payload.fail:
        raise NonRetryableError("told to fail")
    return payload.order_id


@job("unique_period", unique=Unique(fields=("order_id",), period_s=PERIOD_S))
async def unique_period(ctx: JobContext, payload: Order) -> str:
    """One job per order_id per period of PERIOD_S seconds, while live."""
    return payload.order_id


@job(
    "unique_ever",
    unique=Unique(fields=("order_id",), states=DEFAULT_UNIQUE_STATES | {JobState.COMPLETED}),
)
async def unique_ever(ctx: JobContext, payload: Order) -> str:
    """One job per order_id, completed ones included: a done order is never done again."""
    return payload.order_id
