"""The garbage collector's settings for a long-running Conveyor process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

# The collector's first threshold (Python's default: 700). A 500-job batch submit allocates
# some 20,000 tracked objects (models, dicts, records), alive until it is answered: at 700,
# about 15 young collections ran per request and each moved what it found alive to an older
# generation, to be traversed again there; at this threshold a request mostly ends (and its
# objects are freed by their counts) before one runs.
YOUNG_THRESHOLD = 25_000
# ... so the young and middle generations are also collected on a timer: the threshold counts
# allocations not yet freed, and a process that makes little (a scheduler between its ticks,
# an idle worker) reached it only after half an hour or more, keeping every cycle it made
# meanwhile (SQLAlchemy statements built per call: 15 MiB in a 30-minute soak).
COLLECT_EVERY_S = 10.0
FULL_EVERY = 6  # timed collections per full one (a minute): what lived long, then died


def settle() -> None:
    """Once a process has built what it keeps for its life (the app, its routes and
    schemas, the engine, the handlers: 130,000-190,000 objects), move all of it out of the
    collector's sight (`gc.freeze`) and raise the first threshold. Each full collection
    traversed them all again: in an API process it took longer than the requests it
    interrupted (two per 5 s of batch submits), and 15-20 % of a 10,000-step workflow's
    submit. Not for code inside another program (tests, a library user's app): what is
    frozen is never collected."""
    gc.collect()  # what is garbage already is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@contextlib.asynccontextmanager
async def settled(every: float = COLLECT_EVERY_S) -> AsyncIterator[None]:
    """`settle`, and for as long as the process runs, a collection every `every` seconds
    on its event loop (a full one every `FULL_EVERY`th: the frozen start-up objects are not
    traversed, so it is cheap). Bounds how long cyclic garbage waits whatever the process's
    pace."""
    settle()
    collector = asyncio.create_task(_collect_every(every), name="conveyor-gc")
    try:
        yield
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector


async def _collect_every(every: float) -> None:
    rounds = 0
    while True:
        await asyncio.sleep(every)
        rounds += 1
        gc.collect(2 if rounds % FULL_EVERY == 0 else 1)
