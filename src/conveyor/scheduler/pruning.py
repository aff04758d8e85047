"""Pruning in bounded slices, so a large backlog never holds up promotion, cron or rescue.

A round deletes everything past retention at the moment it starts (the cutoffs are fixed
then, so a round always ends): finished jobs, old fire rows, old events, stale worker rows,
then the other stores' expired rows. It advances one slice at a time, each slice a short
transaction of at most `batch` rows, and the scheduler gives it a time budget per tick after
the tick's real work: at least one slice per tick, then more while the budget lasts. A
backlog of a million rows is then many ticks of small deletes instead of one long tick.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

from conveyor.domain.clock import utcnow
from conveyor.store.backend import QueueBackend

M = TypeVar("M")  # where a walk of slices has got to
# One slice: delete up to `batch` rows, return how many went.
Slice = Callable[[int], Awaitable[int]]
# Another store's pruner (e.g. expired refresh tokens): one call deletes what it deletes.
Pruner = Callable[[datetime], Awaitable[int]]


@dataclass(frozen=True)
class Retention:
    """How long rows are kept, in seconds."""

    completed: float
    failed: float
    workers: float
    events: float


@dataclass
class Step:
    kind: str  # "jobs", "events" or "other": what the tick report counts it as
    run: Slice
    sliced: bool = True  # False: one call does all of it


@dataclass
class Slices:
    """Rows deleted by the slices run in one tick."""

    jobs: int = 0
    events: int = 0
    other: int = 0


@dataclass
class PruneRound:
    steps: list[Step]
    batch: int
    deleted: Slices = field(default_factory=Slices, init=False)  # by the whole round so far
    _at: int = field(default=0, init=False)

    @property
    def done(self) -> bool:
        return self._at >= len(self.steps)

    async def run(self, budget: float) -> Slices:
        """Slices until the round ends or `budget` seconds are spent (at least one slice,
        so a round always advances). A failing slice raises; the round resumes there."""
        deleted = Slices()
        started = time.monotonic()
        while not self.done:
            step = self.steps[self._at]
            count = await step.run(self.batch)
            for tally in (deleted, self.deleted):
                setattr(tally, step.kind, getattr(tally, step.kind) + count)
            if not step.sliced or count < self.batch:
                self._at += 1
            if time.monotonic() - started >= budget:
                break
        return deleted


def prune_round(
    backend: QueueBackend,
    keep: Retention,
    batch: int,
    pruners: Sequence[Pruner] = (),
    now: datetime | None = None,
) -> PruneRound:
    """The round that deletes what is past `keep` at `now`. Events that a sink in use has
    not delivered stay (`prune_old_events`), also where no relay runs, as nothing else
    would delete the rest there. Each walk resumes where its previous slice ended."""
    now = now or utcnow()

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    steps = [
        Step("jobs", _walk(partial(backend.prune_finished, state, before)))
        for state, before in backend.retained(ago(keep.completed), ago(keep.failed))
    ]
    steps.append(Step("other", partial(backend.prune_fires, ago(keep.failed))))
    # a settled workflow goes whole, with its steps, once past the longer retention
    settled = ago(max(keep.completed, keep.failed))
    steps.append(Step("other", partial(backend.prune_workflows, settled)))
    events = partial(backend.prune_old_events, ago(keep.events), ())
    steps.append(Step("events", _walk(events)))
    steps.append(Step("other", _one_call(backend.prune_workers, ago(keep.workers)), sliced=False))
    steps += [Step("other", _one_call(prune, now), sliced=False) for prune in pruners]
    return PruneRound(steps, batch)


def _walk(slice_from: Callable[[int, M | None], Awaitable[tuple[int, M | None]]]) -> Slice:
    """A slice that remembers where the previous one ended."""
    mark: M | None = None

    async def run(limit: int) -> int:
        nonlocal mark
        deleted, mark = await slice_from(limit, mark)
        return deleted

    return run


def _one_call(prune: Pruner, at: datetime) -> Slice:
    async def run(_limit: int) -> int:
        return await prune(at)

    return run
