"""Job types declared the library's way (`@conveyor.job`), for tests/library to run in an
embedded worker, in this process or in a `conveyor.run` subprocess."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

import conveyor


class Greeting(BaseModel):
    name: str


class Nap(BaseModel):
    seconds: float


@conveyor.job
async def lib_greet(ctx: conveyor.JobContext, payload: Greeting) -> str:
    """Says hello: its result shows that it ran."""
    return f"hello {payload.name}"


@conveyor.job("lib_nap", queue="lib_naps")
async def nap(ctx: conveyor.JobContext, payload: Nap) -> str:
    """Runs for a while: a stop while it runs lets it finish."""
    await asyncio.sleep(payload.seconds)
    return "rested"
