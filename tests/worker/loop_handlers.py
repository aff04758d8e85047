"""A job type that blocks its worker's event loop, for tests/worker/test_blocked_loop.py.

Loaded beside tests.support.handlers (whose records it writes too), by module name.
"""

from __future__ import annotations

import time

from conveyor.worker.context import JobContext
from conveyor.worker.registry import job
from tests.support.handlers import SleepPayload, _append


@job("block_loop", max_attempts=1)
async def block_loop(ctx: JobContext, payload: SleepPayload) -> None:
    """An ``async def`` making a blocking call by mistake: the whole loop stops with it."""
    _append("start", ctx)
    time.sleep(payload.seconds)  # noqa: ASYNC251 - blocking the loop is the point
    _append("end", ctx)
