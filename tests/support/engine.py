"""Running an engine's worker and scheduler in-process, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conveyor.runtime import Engine


@asynccontextmanager
async def processing(engine: Engine, concurrency: int = 4) -> AsyncIterator[None]:
    """A worker on every queue and a scheduler (it promotes due jobs), stopped afterwards."""
    worker = engine.worker("*", concurrency=concurrency)
    scheduler = engine.scheduler()
    running = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
    try:
        yield
    finally:
        worker.stop(force=True)
        scheduler.stop()
        await asyncio.gather(*running)
