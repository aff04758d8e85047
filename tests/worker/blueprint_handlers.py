"""Job types on blueprints, for tests/worker/test_registry.py to load by module name."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor.worker.blueprint import Blueprint
from conveyor.worker.context import JobContext

blueprint = Blueprint()
extra = Blueprint()


class Empty(BaseModel):
    pass


@blueprint.job("bp_main", queue="bp")
async def main(ctx: JobContext, payload: Empty) -> None:
    """On the module's `blueprint`."""


@extra.job("bp_extra", max_attempts=2)
async def other(ctx: JobContext, payload: Empty) -> None:
    """On `extra`, named as `module:extra`."""
