"""Batch outcomes into few transactions: the hot path's one durable commit covers many jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from conveyor.domain.jobs import Outcome
from conveyor.store.backend import QueueBackend

log = logging.getLogger("conveyor.worker")


class Finisher:
    """Collects outcomes and persists them in batches; `close` flushes what is left.

    `unrecorded` counts the outcomes not yet committed (waiting or in the statement under
    way): the worker claims new work only while it stays under its bound, so a batch is
    never larger than that bound, and a crash re-runs at most that many finished jobs.
    The finisher lingers (a couple of milliseconds, to gather a batch) only when it was
    idle; when outcomes arrived while it was writing, it is behind and writes them at once.
    """

    def __init__(
        self,
        backend: QueueBackend,
        worker_id: str,
        *,
        max_batch: int = 500,
        linger: float = 0.002,
        on_persisted: Callable[[list[Outcome], set[str]], None] | None = None,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id
        self._max_batch = max_batch
        self._linger = linger
        self._pending: list[Outcome] = []
        self._writing = 0
        self._batch: list[Outcome] = []  # the outcomes being written now
        self._ready = asyncio.Event()
        self._closing = False
        self._on_persisted = on_persisted
        self.task: asyncio.Task[None] | None = None

    @property
    def unrecorded(self) -> int:
        """Outcomes handed in whose commit has not yet happened."""
        return len(self._pending) + self._writing

    def holds(self) -> set[str]:
        """The jobs whose outcome is handed in but not yet committed."""
        return {o.job_id for o in self._pending} | {o.job_id for o in self._batch}

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="finisher")

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._ready.set()

    async def _run(self) -> None:
        behind = False
        while not (self._closing and not self._pending):
            await self._ready.wait()
            if not behind and len(self._pending) < self._max_batch and not self._closing:
                await asyncio.sleep(self._linger)
            await self._flush()
            behind = bool(self._pending)  # outcomes arrived while writing: no linger

    async def _flush(self) -> None:
        batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
        if not self._pending:
            self._ready.clear()
        if not batch:
            return
        self._writing, self._batch = len(batch), batch
        delay, failed = 0.05, 0
        while True:
            try:
                accepted = await self._backend.finish(self._worker_id, batch)
                break
            except Exception as exc:  # keep the outcomes; the database may come back
                failed += 1  # said once per outage, not once per retry
                level = logging.WARNING if failed == 1 else logging.DEBUG
                log.log(level, "could not persist %d outcomes (%s); retrying", len(batch), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        if failed:
            log.info("persisted %d outcomes after %d failed tries", len(batch), failed)
        self._writing, self._batch = 0, []
        dropped = [o.job_id for o in batch if o.job_id not in accepted]
        if dropped:
            log.warning("late results dropped (lease lost or job cancelled): %s", dropped)
        if self._on_persisted is not None:
            self._on_persisted(batch, accepted)

    async def close(self) -> None:
        """Flush everything; returns when all outcomes are persisted."""
        self._closing = True
        self._ready.set()
        if self.task is not None:
            await self.task
