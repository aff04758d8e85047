"""The scheduler loop. Any number may run; one leads, and cron stays exactly-once regardless."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import RescueReport
from conveyor.logs import job_fields
from conveyor.metrics import count_rescued
from conveyor.scheduler.fires import fire_due
from conveyor.store.backend import QueueBackend
from conveyor.worker.registry import Registry

log = logging.getLogger("conveyor.scheduler")


@dataclass
class SchedulerConfig:
    interval: float = 0.5
    leader_ttl: float = 15.0
    prune_every: float = 60.0
    prune_completed_after: float = 24 * 3600.0
    prune_failed_after: float = 7 * 24 * 3600.0
    prune_batch: int = 10_000
    worker_rows_kept: float = 24 * 3600.0
    events_retention: float = 7 * 24 * 3600.0  # outbox rows (docs/events.md, Pruning)


@dataclass
class TickReport:
    leader: bool = False
    promoted: int = 0
    fired: int = 0
    requeued: int = 0
    failed: int = 0
    pruned: int = 0
    events_pruned: int = 0


class Scheduler:
    def __init__(
        self,
        backend: QueueBackend,
        registry: Registry,  # the job types: a fire's job is checked against its type
        config: SchedulerConfig,
        *,
        pruners: Sequence[Callable[[datetime], Awaitable[int]]] = (),
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.config = config
        self._pruners = list(pruners)  # other stores' expired rows (e.g. refresh tokens)
        self.id = f"{socket.gethostname()}-{os.getpid()}"
        self._leadership = backend.leadership("scheduler", self.id, config.leader_ttl)
        self._stop = asyncio.Event()
        self._last_prune = 0.0

    def stop(self) -> None:
        self._stop.set()

    async def close(self) -> None:
        """Give up leadership (and its connection) when ticking by hand, as tests do."""
        await self._leadership.release()

    async def run(self) -> int:
        log.info("scheduler %s started", self.id)
        was_leader = False
        try:
            while not self._stop.is_set():
                try:
                    report = await self.tick()
                except Exception as exc:  # the database may be away; try again next tick
                    log.warning("scheduler tick failed: %s", exc)
                    report = TickReport()
                if report.leader != was_leader:
                    log.info(
                        "scheduler %s is %s", self.id, "leader" if report.leader else "standby"
                    )
                    was_leader = report.leader
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.interval):
                        await self._stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.close()
        return 0

    async def tick(self) -> TickReport:
        report = TickReport(leader=await self._leadership.acquire())
        # Firing is safe without leadership (unique fire rows); leading just avoids waste.
        if not report.leader:
            return report
        report.promoted = await self.backend.promote_due()
        report.fired = await fire_due(self.backend, self.registry)
        rescued = await self.backend.rescue_expired()
        count_rescued(rescued)
        _log_rescued(rescued)
        report.requeued, report.failed = len(rescued.requeued), len(rescued.failed)
        if time.monotonic() - self._last_prune >= self.config.prune_every:
            report.pruned = await self._prune()
            report.events_pruned = await self._prune_events()
            self._last_prune = time.monotonic()
        return report

    async def _prune(self) -> int:
        now = utcnow()
        cfg = self.config
        pruned = await self.backend.prune(
            completed_before=now - timedelta(seconds=cfg.prune_completed_after),
            failed_before=now - timedelta(seconds=cfg.prune_failed_after),
            batch=cfg.prune_batch,
        )
        await self.backend.prune_workers(now - timedelta(seconds=cfg.worker_rows_kept))
        for prune in self._pruners:
            await prune(now)
        if pruned:
            log.info("pruned %d finished jobs", pruned)
        return pruned

    async def _prune_events(self) -> int:
        """Old outbox events, also where no relay runs (then nothing else would delete them);
        those a sink in use has not delivered stay (`prune_events`)."""
        before = utcnow() - timedelta(seconds=self.config.events_retention)
        pruned = await self.backend.prune_events(before, batch=self.config.prune_batch)
        if pruned:
            log.info("pruned %d old events", pruned)
        return pruned


def _log_rescued(report: RescueReport) -> None:
    """One line per job taken back from a worker that stopped heartbeating."""
    for outcome, ids in (("requeued", report.requeued), ("failed for good", report.failed)):
        for job_id in ids:
            _queue, job_type = report.labels.get(job_id, ("", ""))
            attempt = report.attempts.get(job_id, 0)
            log.warning(
                "rescued from an expired lease: %s",
                outcome,
                extra=job_fields(job_id, job_type, attempt),
            )
