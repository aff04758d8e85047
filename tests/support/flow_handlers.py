"""Job types under flow-control limits, for the tests of quotas and of seeing limits.

Load them with ``handler_modules="tests.support.flow_handlers"``; their jobs are never run by
these tests (no worker), only submitted and read.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from conveyor.domain.flow import Concurrency, Rate
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()


class CustomerPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer: str


@blueprint.job(
    "per_customer",
    limits=(
        Concurrency("customer_slots", 1, key="payload.customer"),
        Rate("customer_calls", 2, 60.0, key="payload.customer"),
    ),
)
async def per_customer(ctx: JobContext, payload: CustomerPayload) -> None:
    """Nothing: its limits are what the tests look at."""


class Account(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account: str = ""


@blueprint.job(
    "partner_sync",
    submit_limits=(Concurrency("per_account", 1), Rate("partner_api", 60, 60.0)),
)
async def partner_sync(ctx: JobContext, payload: Account) -> None:
    """Nothing: a submit chooses which of its limits apply, and with what key."""
