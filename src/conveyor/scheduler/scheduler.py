"""The scheduler loop. Any number may run; one leads, and cron stays exactly-once regardless."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from conveyor.domain.jobs import RescueReport
from conveyor.logs import job_fields
from conveyor.metrics import count_drift, count_rescued
from conveyor.scheduler.fires import Misfires, fire_due
from conveyor.scheduler.pruning import Pruner, PruneRound, Retention, prune_round
from conveyor.store.backend import QueueBackend
from conveyor.worker.registry import Registry

log = logging.getLogger("conveyor.scheduler")


@dataclass
class SchedulerConfig:
    interval: float = 0.5
    leader_ttl: float = 15.0  # SQLite's lease (CONVEYOR_SCHEDULER_LEASE_SECONDS)
    misfire_grace: float = 60.0  # a fire later than this is missed: policy decides (fires.py)
    catchup_max: int = 100  # at most this many missed fires of one schedule fire (`all`)
    prune_every: float = 60.0  # from the end of one pruning round to the next one's start
    prune_completed_after: float = 24 * 3600.0
    prune_failed_after: float = 7 * 24 * 3600.0
    prune_batch: int = 1000  # rows per slice: one short transaction each
    prune_budget: float = 0.25  # seconds of slices per tick, after its other work (min. one)
    worker_rows_kept: float = 24 * 3600.0
    events_retention: float = 7 * 24 * 3600.0  # outbox rows (docs/events.md, Pruning)
    fair_dispatch: bool = True  # fired jobs get their type's fair key (docs/flow-control.md)
    limits_reconcile_interval: float = 60.0  # slots held by no running job freed, logged
    # The queued quota's default cap (settings.quota_max_queued; 0: none, users' own caps
    # still apply): a fire it cannot take is skipped (fires.py).
    quota_max_queued: int = 0


@dataclass
class TickReport:
    leader: bool = False
    promoted: int = 0
    fired: int = 0
    requeued: int = 0
    failed: int = 0
    pruned: int = 0
    events_pruned: int = 0
    pruning: bool = False  # a pruning round is still under way after this tick
    drift: int = 0  # slots the reconcile freed (held by no running job) or gave (to one without)


class Scheduler:
    def __init__(
        self,
        backend: QueueBackend,
        registry: Registry,  # the job types: a fire's job is checked against its type
        config: SchedulerConfig,
        *,
        pruners: Sequence[Pruner] = (),
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.config = config
        self._pruners = list(pruners)  # other stores' expired rows (e.g. refresh tokens)
        self.id = f"{socket.gethostname()}-{os.getpid()}"
        self._leadership = backend.leadership("scheduler", self.id, config.leader_ttl)
        self._stop = asyncio.Event()
        self._round: PruneRound | None = None
        self._round_ended = -float("inf")  # monotonic time the last pruning round ended
        self._reconciled = -float("inf")  # monotonic time of the last reconcile of limits
        self._swept = -float("inf")  # monotonic time of the last sweep of waiting steps

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
                started = time.monotonic()
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
                # Ticks start `interval` apart; a tick that took longer is followed at once.
                pause = max(0.0, self.config.interval - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stop.wait()
        finally:
            with contextlib.suppress(Exception):
                await self.close()
        return 0

    async def tick(self, now: datetime | None = None) -> TickReport:
        """Promotion, cron and rescue first, every tick; then pruning for what is left of
        the tick's budget (pruning.py), so a large backlog to prune delays them by at most
        `prune_budget` plus one slice. `now` is the cron's clock (the real one unless given:
        tests drive late ticks and outages with it)."""
        report = TickReport(leader=await self._leadership.acquire())
        # Firing is safe without leadership (unique fire rows); leading just avoids waste.
        if not report.leader:
            self._round = None  # the next leader starts its own
            return report
        report.promoted = await self.backend.promote_due()
        misfires = Misfires(self.config.misfire_grace, self.config.catchup_max)
        report.fired = await fire_due(
            self.backend,
            self.registry,
            misfires=misfires,
            now=now,
            fair=self.config.fair_dispatch,
            quota_max_queued=self.config.quota_max_queued,
        )
        rescued = await self.backend.rescue_expired()
        count_rescued(rescued)
        _log_rescued(rescued)
        report.requeued, report.failed = len(rescued.requeued), len(rescued.failed)
        await self._reconcile(report)
        await self._sweep_workflows()
        await self._prune(report)
        return report

    async def _sweep_workflows(self) -> None:
        """Every `limits_reconcile_interval` as well: waiting workflow steps whose
        dependencies all settled are re-checked (a release the trigger should never miss;
        each logged)."""
        if time.monotonic() - self._swept < self.config.limits_reconcile_interval:
            return
        self._swept = time.monotonic()
        for job_id in await self.backend.sweep_waiting():
            log.warning("workflow step %s was waiting with every dependency settled", job_id)

    async def _reconcile(self, report: TickReport) -> None:
        """Every `limits_reconcile_interval`: free the slots no running job holds (a leak
        the release trigger should make impossible), and give a free slot to each running
        job that holds none of one of its limits (the other way), each logged and counted."""
        if time.monotonic() - self._reconciled < self.config.limits_reconcile_interval:
            return
        self._reconciled = time.monotonic()
        for drift in await self.backend.reconcile_limits():
            count_drift(drift.name)
            log.warning(
                "limit %s key %r: freed slot %d held by job %s, which is not running",
                drift.name, drift.key, drift.slot, drift.job_id,
            )  # fmt: skip
            report.drift += 1
        for unheld in await self.backend.reconcile_unheld():
            if unheld.slot is None:
                # Not corrected (so not counted): every slot is held, the key runs over its
                # limit until one of its jobs stops; looked at again next time.
                log.warning(
                    "limit %s key %r: job %s runs without a slot and all %d are held: "
                    "the key runs over its limit", unheld.name, unheld.key, unheld.job_id,
                    unheld.max_running,
                )  # fmt: skip
                continue
            count_drift(unheld.name)
            log.warning(
                "limit %s key %r: gave slot %d to job %s, which was running without one",
                unheld.name, unheld.key, unheld.slot, unheld.job_id,
            )  # fmt: skip
            report.drift += 1

    async def _prune(self, report: TickReport) -> None:
        """A slice or more of the pruning round under way, starting one when it is due."""
        cfg = self.config
        if self._round is None:
            if time.monotonic() - self._round_ended < cfg.prune_every:
                return
            keep = Retention(
                cfg.prune_completed_after,
                cfg.prune_failed_after,
                cfg.worker_rows_kept,
                cfg.events_retention,
            )
            self._round = prune_round(self.backend, keep, cfg.prune_batch, self._pruners)
        deleted = await self._round.run(cfg.prune_budget)
        report.pruned, report.events_pruned = deleted.jobs, deleted.events
        if self._round.done:
            total = self._round.deleted
            if total.jobs or total.events or total.other:
                log.info(
                    "pruned %d finished jobs, %d old events, %d other rows",
                    total.jobs, total.events, total.other,
                )  # fmt: skip
            self._round, self._round_ended = None, time.monotonic()
        report.pruning = self._round is not None


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
