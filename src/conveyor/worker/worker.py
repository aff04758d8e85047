"""The worker loop: claim what fits, run it, persist outcomes in batches, stop cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from conveyor import tracing
from conveyor.domain.clock import utcnow
from conveyor.domain.flow import Rate
from conveyor.domain.ids import uuid7
from conveyor.domain.jobs import ClaimedJob, ErrorInfo, Outcome
from conveyor.domain.workflows import StepSpec, WorkflowSpec, idempotency_key_of, validate
from conveyor.errors import Unavailable
from conveyor.logs import job_context
from conveyor.metrics import JobMetrics
from conveyor.scheduler.workflow_rows import appended_rows
from conveyor.store.backend import QueueBackend
from conveyor.store.driver import Listener
from conveyor.worker import spans
from conveyor.worker.context import JobContext, JobInfo
from conveyor.worker.executor import Pools, execute
from conveyor.worker.finisher import Finisher
from conveyor.worker.process_pool import ChildLimits
from conveyor.worker.registry import Registry
from conveyor.worker.resources import Resources
from conveyor.worker.spans import Parents
from conveyor.worker.watchdog import Blocker, LoopWatchdog

log = logging.getLogger("conveyor.worker")

# How long an idle worker whose last wake-up claim was outrun waits before the next one
# (`Worker._yield_to_others`): longer than another worker's claim round trip, short beside
# the idle latency's p99 bound when it is this worker's turn after all.
HERD_YIELD_S = 0.002


# A claim's steps' inputs (store/workflows.py `steps_inputs`), read once for all of them.
_StepInputs = asyncio.Future[dict[str, tuple[str, str, dict[str, Any]]]]


@dataclass
class WorkerConfig:
    queues: dict[str, int | None]  # queue name -> its own concurrency cap, or None
    concurrency: int = 16
    poll_interval: float = 1.0
    lease_s: float = 60.0
    heartbeat_interval: float = 5.0
    grace: float = 30.0
    burst: bool = False  # drain what is queued, then exit
    threads: int = 8
    processes: int | None = None
    child_limits: ChildLimits = field(default_factory=ChildLimits)  # process-pool recycling
    # At most this many jobs running or run with their outcome not yet committed; None:
    # the concurrency. Claims wait while the finisher is behind, so a crash re-runs at most
    # this many finished jobs and a finish batch is never larger.
    max_unrecorded: int | None = None
    # Threads started in the place of sync handlers' threads that outlived their jobs.
    spare_threads: int = 16
    # A blocked event loop's leases are kept by the watchdog thread for this long, then
    # given up so its jobs are rescued (worker/watchdog.py).
    loop_block_limit: float = 300.0
    # The running quota's default cap, stored at start (settings.quota_max_running; None:
    # leave the stored one; docs/flow-control.md).
    running_quota: int | None = None
    # Steps appended at run time take their type's fair key (settings.fair_dispatch).
    fair_dispatch: bool = True

    @property
    def unrecorded_bound(self) -> int:
        return max(1, self.max_unrecorded or self.concurrency)

    @staticmethod
    def parse_queues(spec: str) -> dict[str, int | None]:
        """`"a,b=2"`: queue a unbounded, queue b at most 2 jobs at once on this worker."""
        queues: dict[str, int | None] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            name, _, cap = part.partition("=")
            queues[name.strip()] = int(cap) if cap else None
        if not queues:
            raise ValueError("at least one queue is needed")
        return queues


@dataclass
class _Running:
    job: ClaimedJob
    ctx: JobContext
    task: asyncio.Task[None]
    claimed_at: float
    committed: asyncio.Event  # its claim is committed (set at once unless started early)
    interrupted: str | None = None  # why the worker stopped it: "cancelled", "lost", "released"


@dataclass
class _Stats:
    claimed: int = 0
    finished: int = 0
    dropped: int = 0
    started: float = field(default_factory=time.monotonic)


class Worker:
    """One worker process's engine; `run()` returns an exit code."""

    def __init__(
        self,
        backend: QueueBackend,
        registry: Registry,
        config: WorkerConfig,
        resources: Resources | None = None,
    ) -> None:
        self.backend = backend
        self.registry = registry
        self.config = config
        self.resources = resources
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid7()[-12:]}"
        self.stats = _Stats()
        self._running: dict[str, _Running] = {}
        # Older attempts of jobs claimed again while they still ran here, by (id, attempt):
        # taken back by the rescuer while this worker's loop was blocked past its limit.
        self._superseded: dict[tuple[str, int], _Running] = {}
        self._per_queue: dict[str, int] = dict.fromkeys(config.queues, 0)
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._failure: str | None = None
        self._pools = Pools(
            config.threads, config.processes, config.child_limits, config.spare_threads
        )
        self._metrics = JobMetrics()
        self._finisher = Finisher(
            backend,
            self.id,
            max_batch=min(500, config.unrecorded_bound),
            on_persisted=self._persisted,
        )
        self._listener: Listener | None = None
        self._claiming = 0  # claim statements in flight
        # A NOTIFY wakes every idle worker; one claim takes the jobs. `_notified`: the
        # pending wake-up is a NOTIFY's; `_outrun`: this worker's last such claim, made
        # while idle, found nothing (another worker took them), so it lets the next one go
        # first (`_yield_to_others`).
        self._notified = False
        self._outrun = False
        # Flow control: the limits of the types run here (their values stored at start), and
        # the rates among them, whose next token this worker wakes up for.
        self._limits = [limit for spec in registry for limit in spec.all_limits]
        self._rates = sorted({limit.name for limit in self._limits if isinstance(limit, Rate)})
        self._retry_in: float | None = None  # seconds to a refused rate's next token
        self._db_away: float | None = None  # monotonic time the database went away, if it has
        self._watchdog = LoopWatchdog(
            url=backend.db.url,
            schema=backend.db.schema,
            worker_id=self.id,
            lease_s=config.lease_s,
            heartbeat_interval=config.heartbeat_interval,
            limit=config.loop_block_limit,
            blocker=self._blocker,
        )

    # ---- control ---------------------------------------------------------------------------
    def stop(self, force: bool = False) -> None:
        """First call: finish running jobs within the grace period. Second: stop at once."""
        if self._stop.is_set() or force:
            self._force.set()
        self._stop.set()
        self._wake.set()

    @property
    def running_ids(self) -> set[str]:
        return set(self._running)

    @property
    def unrecorded(self) -> int:
        """Jobs run whose outcome is not yet committed."""
        return self._finisher.unrecorded

    # ---- main ------------------------------------------------------------------------------
    async def run(self) -> int:
        cfg = self.config
        await self.backend.register_worker(
            self.id, socket.gethostname(), os.getpid(), list(cfg.queues), cfg.concurrency
        )
        await self.backend.define_limits(self._limits)
        if cfg.running_quota is not None:
            await self.backend.define_running_quota(cfg.running_quota)
        self._listener = await self.backend.listen(self._on_jobs, self._on_cancel)
        self._finisher.start()
        self._watchdog.start()
        pulse = asyncio.create_task(self._watchdog.pulse(), name="loop-pulse")
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        monitor = asyncio.create_task(self._monitor(heartbeat), name="monitor")
        log.info(
            "worker %s started: queues=%s concurrency=%d", self.id, cfg.queues, cfg.concurrency
        )
        try:
            await self._claim_loop()
        finally:
            await self._shutdown(heartbeat, monitor, pulse)
        return 1 if self._failure else 0

    async def _claim_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            notified, self._notified = self._notified, False
            idle = notified and self._quiet()
            if idle and self._outrun:
                await self._yield_to_others()
            want = self._free_slots()
            tried = want >= self._claim_threshold()
            got = await self._claim(want) if tried else 0
            if idle and tried:
                self._outrun = not got
            if self.config.burst and tried and got == 0 and not self._running:
                log.info("burst mode: queue drained")
                return
            if got and got == want:
                continue  # there may be more waiting
            if tried and not got and self._quiet():
                await self._arm_claim()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(await self._pause(tried)):
                    await self._wake.wait()

    async def _yield_to_others(self) -> None:
        """Wait HERD_YIELD_S before an idle wake-up's claim, once the last one found its jobs
        taken: the idle workers' claims for one NOTIFY ran at the same instant, on the
        same cores as the one that won, and the loser's claim, COMMIT and next BEGIN
        delayed the winner's start (bench/README, session 14). The claim still follows: if
        the other worker did not take the jobs (busy, gone), this one starts them late by
        that much, and is first again from then on."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HERD_YIELD_S):
                await self._stop.wait()

    def _quiet(self) -> bool:
        """Nothing running, nothing waiting to be recorded, not stopping: the next claim is
        a wake-up's, the one whose round trips the idle latency is made of."""
        return not (self._running or self._finisher.unrecorded or self._stop.is_set())

    async def _arm_claim(self) -> None:
        """Send the next claim's BEGIN now, while idle (store/claims.py `arm_claim`)."""
        try:
            await self.backend.arm_claim()
        except Exception as exc:  # the claim opens its own transaction then
            log.debug("could not open the next claim's transaction ahead: %s", exc)

    async def _pause(self, tried: bool) -> float:
        """How long to wait for a wake-up: the poll interval, or less when a job held back
        by a rate limit gets its next token sooner (computed, not polled for)."""
        pause = self.config.poll_interval
        if not (tried and self._rates):
            return pause
        soonest = self._retry_in
        if soonest is None:
            with contextlib.suppress(Exception):  # the database away: the claim says so
                soonest = await self.backend.next_token_in(self._rates)
        if soonest is not None:
            pause = min(pause, max(soonest, 0.005))
        return pause

    def _free_slots(self) -> int:
        """Room for new jobs: within the concurrency, and within the bound on jobs whose
        outcome is not yet durable (running, or run and waiting for the finisher)."""
        running = len(self._running)
        behind = self.config.unrecorded_bound - running - self._finisher.unrecorded
        return min(self.config.concurrency - running, behind)

    def _claim_threshold(self) -> int:
        """Claim in batches while busy; claim a single job at once when idle."""
        if not self._running:
            return 1
        return max(1, min(self.config.concurrency, self.config.unrecorded_bound) // 4)

    async def _claim(self, free: int) -> int:
        got = 0
        self._retry_in = None
        capped = [name for name, cap in self.config.queues.items() if cap is not None]
        for queues, limit in self._claim_plan(free):
            taken = await self._claim_some(queues, limit, capped)
            if taken is None:
                return got
            got += taken
        return got

    async def _claim_some(self, queues: list[str], limit: int, capped: list[str]) -> int | None:
        """One claim statement; None when it failed. Idle, the jobs start as soon as the
        claim returns them, while its commit is made durable (the wake-up's latency); busy,
        one statement, the jobs started after it."""
        started: list[ClaimedJob] = []
        committed = asyncio.Event()

        def start_early(jobs: list[ClaimedJob]) -> None:
            started.extend(jobs)
            self._start_all(jobs, committed)

        self._claiming += 1
        try:
            began = spans.claim_began()
            jobs = await self.backend.claim(
                self.id, queues, limit, self.config.lease_s, exclude=capped,
                early=None if self._running else start_early,
            )  # fmt: skip
            spans.claimed(began, queues, limit, len(jobs))
        except Exception as exc:
            self._db_trouble("claim", exc)
            self._claim_unanswered(started, exc)
            return None
        finally:
            self._claiming -= 1
            committed.set()
        if jobs.retry_in is not None:
            self._retry_in = min(jobs.retry_in, self._retry_in or jobs.retry_in)
        if not started:
            self._start_all(jobs, committed)
        else:  # held from the commit on: a heartbeat that read before it did not see them
            now = time.monotonic()
            for job in started:
                if (entry := self._running.get(job.id)) is not None:
                    entry.claimed_at = now
        self._db_fine("claims")
        return len(jobs)

    def _claim_unanswered(self, started: list[ClaimedJob], exc: Exception) -> None:
        """Jobs started early whose claim then failed. Early jobs are told after the claim's
        last statement, so the failure was its COMMIT's: a lost connection leaves its fate
        unknown, and it usually did commit (it was on the wire). They run on, as claimed:
        their fenced finish records them if the claim committed and drops them if not, and
        the first heartbeat that answers stops them if the database does not list them as
        ours. Stopping them at once made every such job run twice (the heartbeat then gave
        the committed claim's jobs back to the queue as never started). Any other error
        rolled the claim back: they are stopped."""
        if not started:
            return
        if not isinstance(exc, Unavailable):
            for job in started:
                self._interrupt(job.id, "lost")
            return
        now = time.monotonic()
        for job in started:
            if (entry := self._running.get(job.id)) is not None:
                entry.claimed_at = now  # judged by a heartbeat that reads after this
        log.warning(
            "the answer to a claim of %d jobs was lost (%s); they run on, and the database "
            "decides whether they were claimed: %s",
            len(started), exc, ", ".join(job.id for job in started),
        )  # fmt: skip

    def _db_trouble(self, what: str, exc: Exception) -> None:
        """Say once that the database is away, not once per poll of an outage."""
        if self._db_away is None:
            log.warning(
                "database unreachable (%s failed: %s); retrying until it is back", what, exc
            )
            self._db_away = time.monotonic()
        else:
            log.debug("%s failed: %s", what, exc)

    def _db_fine(self, what: str) -> None:
        if self._db_away is not None:
            away = time.monotonic() - self._db_away
            log.info("database reachable again after %.1fs: %s resumed", away, what)
            self._db_away = None

    def _start_all(self, jobs: list[ClaimedJob], committed: asyncio.Event) -> None:
        # A claim's workflow steps with dependencies read their results in one query,
        # shared; a step without any (a fan-out's) needs none: its claim said its workflow
        # and its name (a query per claim of such steps slowed a 10,000-step fan-out's
        # drain on PostgreSQL by half, docs/workflows.md "Results").
        steps = [j.id for j in jobs if j.depends]
        inputs = asyncio.ensure_future(self.backend.steps_inputs(steps)) if steps else None
        # Traced, their run spans link to their dependencies' runs: one more query, shared.
        parents: Parents | None = None
        if steps and tracing.enabled():
            parents = asyncio.ensure_future(self.backend.dependency_runs(steps))
        for job in jobs:
            self._start(job, committed, inputs, parents)

    def _claim_plan(self, free: int) -> list[tuple[list[str], int]]:
        """Capped queues are claimed one by one within their cap; the rest together.

        A `*` takes every other queue; capped queues are excluded from it.
        """
        plan: list[tuple[list[str], int]] = []
        open_queues: list[str] = []
        for name, cap in self.config.queues.items():
            if cap is None:
                open_queues.append(name)
            elif (room := min(free, cap - self._per_queue.get(name, 0))) > 0:
                plan.append(([name], room))
                free -= room
        if open_queues and free > 0:
            plan.append((["*"] if "*" in open_queues else open_queues, free))
        return plan

    def _start(
        self,
        job: ClaimedJob,
        committed: asyncio.Event,
        inputs: _StepInputs | None = None,
        parents: Parents | None = None,
    ) -> None:
        info = JobInfo(
            id=job.id,
            type=job.type,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            owner_id=job.owner_id,
            idempotency_key=idempotency_key_of(job.idempotency_key, job.workflow_id, job.step)
            or job.id,
        )
        ctx = JobContext(info, self._progress, asyncio.get_running_loop(), self.resources)
        older = self._running.get(job.id)
        if older is not None:  # rescued from us, claimed again before a heartbeat said so
            self._interrupt(job.id, "lost")
            self._superseded[(job.id, older.job.attempt)] = self._running.pop(job.id)
        with job_context(job.id, job.type, job.attempt):  # the task keeps the job's fields
            log.debug("claimed from queue %s", job.queue)
            run = self._run_job(job, ctx, committed, inputs, parents)
            task = asyncio.create_task(run, name=f"job-{job.id}")
        self._running[job.id] = _Running(job, ctx, task, time.monotonic(), committed)
        self._per_queue[job.queue] = self._per_queue.get(job.queue, 0) + 1
        self.stats.claimed += 1
        self._metrics.started(job)

    async def _run_job(
        self,
        job: ClaimedJob,
        ctx: JobContext,
        committed: asyncio.Event,
        inputs: _StepInputs | None = None,
        parents: Parents | None = None,
    ) -> None:
        began = time.perf_counter()
        log.debug("started (attempt %d of %d)", job.attempt, job.max_attempts)
        spans.waited(job)
        links = await spans.parents_of(job, parents)  # None: cancelled while reading them
        with spans.run(job, links or ()) as span:
            outcome = None if links is None else await self._outcome(job, ctx, inputs)
            spans.finished(span, outcome)
        try:  # a finish whose snapshot predates the claim's commit would not see the claim
            await committed.wait()
        except asyncio.CancelledError:
            outcome = None
        entry = self._superseded.pop((job.id, job.attempt), None)
        if entry is None:
            entry = self._running.pop(job.id, None)
        self._per_queue[job.queue] -= 1
        if outcome is not None and (entry is None or entry.interrupted is None):
            seconds = time.perf_counter() - began
            self._metrics.ran(job, seconds)
            self._finisher.add(outcome)
            _log_outcome(outcome, seconds)
        elif entry is not None:
            _log_interrupted(entry.interrupted)
        self._wake.set()

    async def _outcome(
        self, job: ClaimedJob, ctx: JobContext, inputs: _StepInputs | None
    ) -> Outcome | None:
        """The run's outcome; None when it was cancelled (interrupted or shut down)."""
        try:
            spec = self.registry.get(job.type)
        except Exception as exc:
            return Outcome(
                job.id, job.attempt, "failed", error=ErrorInfo("UnknownJobType", str(exc))
            )
        try:
            outcome = await self._step_inputs(job, ctx, inputs)
            if outcome is None:
                outcome = await execute(spec, job, ctx, self._pools)
        except asyncio.CancelledError:
            return None
        return outcome

    async def _step_inputs(
        self, job: ClaimedJob, ctx: JobContext, inputs: _StepInputs | None
    ) -> Outcome | None:
        """A workflow step's workflow, name and dependencies' results, put in its context
        before it runs (its claim says whether it is a step and has dependencies: no query
        for other jobs; the claim's steps with dependencies share one, `inputs`); a failed
        outcome if they cannot be read."""
        if job.workflow_id is None or job.step is None:
            return None
        if not job.depends:
            appender = partial(self._append_steps, job, job.workflow_id)
            ctx.set_step(job.workflow_id, job.step, {}, appender=appender)
            return None
        if inputs is None:  # not from `_start_all`, which reads a claim's in one query
            inputs = asyncio.ensure_future(self.backend.steps_inputs([job.id]))
        try:  # shielded: one step cancelled does not cancel its claim-mates' read
            found = (await asyncio.shield(inputs)).get(job.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return Outcome(job.id, job.attempt, "failed", error=ErrorInfo("StepInputs", str(exc)))
        if found is not None:
            ctx.set_step(*found, appender=partial(self._append_steps, job, found[0]))
        return None

    async def _append_steps(
        self, job: ClaimedJob, workflow_id: str, steps: Sequence[StepSpec], before: Sequence[str]
    ) -> list[str]:
        """`ctx.append_steps`: the steps checked as a workflow's are at submit (their
        payloads against their types' models), then stored waiting for `job`."""
        mine = {s.name for s in steps}
        elsewhere = {d for s in steps for d in s.depends_on if d not in mine}
        validate(WorkflowSpec("appended", tuple(steps)), existing=elsewhere)
        rows, limits = appended_rows(
            self.registry, steps, job.owner_id, workflow_id, utcnow(), self.config.fair_dispatch
        )
        deps = {s.name: s.depends_on for s in steps}
        return await self.backend.append_steps(job.id, rows, deps, before, limits)

    async def _progress(self, job_id: str, attempt: int, percent: int, message: str | None) -> bool:
        entry = self._running.get(job_id)
        if entry is not None:  # started early: its fenced update must see the claim
            await entry.committed.wait()
        return await self.backend.set_progress(self.id, job_id, attempt, percent, message)

    def _persisted(self, batch: list[Outcome], accepted: set[str]) -> None:
        self.stats.finished += len(accepted)
        self.stats.dropped += len(batch) - len(accepted)
        self._metrics.persisted(batch, accepted)
        self._wake.set()  # room to claim again

    # ---- interruptions ---------------------------------------------------------------------
    def _on_jobs(self, queue: str) -> None:
        # Only a wake-up naming a queue this worker claims from says it had jobs to take:
        # "*" (SQLite's watch of other processes' commits: any write, another worker's
        # claim or finish too), "" (the listener back from an outage) and another queue's
        # NOTIFY may mean nothing was there, and a claim that then finds nothing was not
        # outrun (counting SQLite's made both its workers yield on every wake-up: idle
        # latency 6.6 -> 9.2 ms, bench/README session 14).
        served = self.config.queues
        if queue not in ("", "*") and (queue in served or "*" in served):
            self._notified = True
        self._wake.set()

    def _on_cancel(self, job_id: str) -> None:
        self._interrupt(job_id, "cancelled")

    def _interrupt(self, job_id: str, reason: str) -> None:
        entry = self._running.get(job_id)
        if entry is None or entry.interrupted:
            return
        entry.interrupted = reason
        # Async handlers get CancelledError; a sync handler's thread cannot be killed, so it
        # is told through ctx and its result, if any, is dropped. Either way the slot frees.
        entry.ctx.cancel()
        entry.task.cancel()

    # ---- background ------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        """Renew the leases every interval, and stop the jobs the database says are no longer
        ours. While a handler blocks the loop the watchdog's thread renews them instead; its
        renewals count here as this loop's own (`renewed_at`)."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            started = time.monotonic()
            try:
                owned = await self.backend.heartbeat(self.id, self.config.lease_s)
            except Exception as exc:
                self._db_trouble("heartbeat", exc)
                now, last_ok = time.monotonic(), self._watchdog.renewed_at
                for job_id, entry in list(self._running.items()):
                    # Its lease runs from the last renewal, or from its claim if that came
                    # later: once it may have run out, another worker may get the job.
                    if now - max(last_ok, entry.claimed_at) > self.config.lease_s:
                        self._interrupt(job_id, "lost")
                continue
            self._watchdog.renewed(started)
            self._db_fine("heartbeats")
            await self._release_orphans(owned)
            for job_id, entry in list(self._running.items()):
                # Only jobs whose claim had committed when this heartbeat began: it cannot
                # list one started early whose COMMIT was still on its way.
                if job_id not in owned and entry.committed.is_set() and entry.claimed_at < started:
                    self._interrupt(job_id, "lost")

    async def _release_orphans(self, owned: set[str]) -> None:
        """Give back jobs the database says are ours but this worker never started: a claim
        whose commit reached the server while its answer was lost (a connection cut) leaves
        them, and the heartbeat would otherwise extend their leases for as long as we live.
        Not while a claim is in flight (its jobs are ours but not started yet)."""
        if self._claiming:
            return
        held = self._finisher.holds()
        orphans = [j for j in owned if j not in self._running and j not in held]
        if not orphans:
            return
        released = await self.backend.release(self.id, orphans)
        if released:
            log.warning(
                "released %d jobs claimed by an answer that never came: %s",
                len(released), ", ".join(sorted(released)),
            )  # fmt: skip

    async def _monitor(self, heartbeat: asyncio.Task[None]) -> None:
        """Stop the worker instead of running half-broken when a side task dies."""
        while True:
            await asyncio.sleep(0.2)
            if self._stop.is_set():
                return  # stopping on purpose: side tasks ending now is expected
            if heartbeat.done():
                self._fail(f"heartbeat stopped: {_describe(heartbeat)}")
            elif self._listener is not None and not self._listener.alive():
                self._fail("the wake-up listener stopped")
            elif self._finisher.task is not None and self._finisher.task.done():
                self._fail(f"the finisher stopped: {_describe(self._finisher.task)}")

    def _blocker(self, task: asyncio.Task[Any] | None) -> Blocker:
        """Name the task the loop runs while blocked (called on the watchdog's thread, while
        this loop, and so every change to `_running`, is stopped)."""
        name = task.get_name() if task is not None else ""
        entry = self._running.get(name.removeprefix("job-")) if name.startswith("job-") else None
        if entry is None:
            return Blocker(None, f"task {name}" if name else "a callback outside any task", 0)
        return Blocker(entry.job.id, entry.job.type, entry.job.attempt)

    def _fail(self, reason: str) -> None:
        if self._stop.is_set():
            return
        log.error("worker %s stopping: %s", self.id, reason)
        self._failure = reason
        self.stop()

    # ---- shutdown --------------------------------------------------------------------------
    async def _shutdown(
        self, heartbeat: asyncio.Task[None], monitor: asyncio.Task[None], pulse: asyncio.Task[None]
    ) -> None:
        monitor.cancel()  # from here on, side tasks stop because we stop them
        with contextlib.suppress(Exception):  # an armed claim's connection back to the pool
            await self.backend.disarm_claim()
        await self._drain_running()
        leftover = [job_id for job_id in self._running]
        for job_id in leftover:
            self._interrupt(job_id, "released")
        if leftover:
            await asyncio.gather(
                *(self._running[j].task for j in leftover if j in self._running),
                return_exceptions=True,
            )
        with contextlib.suppress(Exception):
            await self._finisher.close()
        if leftover:
            released = await self.backend.release(self.id, leftover)
            log.info("released %d jobs back to the queue", len(released))
        await self._watchdog.stop()
        for task in (heartbeat, monitor, pulse):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._listener is not None:
            await self._listener.close()
        self._pools.shutdown()
        with contextlib.suppress(Exception):
            await self.backend.unregister_worker(self.id)
        log.info(
            "worker %s stopped (%d claimed, %d finished)",
            self.id,
            self.stats.claimed,
            self.stats.finished,
        )

    async def _drain_running(self) -> None:
        """Let running jobs finish within the grace period, unless told to stop at once."""
        tasks = [entry.task for entry in self._running.values()]
        if not tasks or self._force.is_set():
            return
        log.info("waiting up to %.0f s for %d running jobs", self.config.grace, len(tasks))
        force = asyncio.create_task(self._force.wait())
        pending: set[asyncio.Task[Any]] = set(tasks)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.grace):
                while pending and not force.done():
                    _, pending = await asyncio.wait(
                        {force, *pending}, return_when=asyncio.FIRST_COMPLETED
                    )
                    pending.discard(force)
        force.cancel()


def _log_outcome(outcome: Outcome, seconds: float) -> None:
    """One line per attempt's end; a success at DEBUG (as many lines as jobs), trouble above."""
    error = outcome.error
    reason = f"{error.type}: {error.message}" if error else ""
    if outcome.kind == "completed":
        log.debug("completed in %.3f s", seconds)
    elif outcome.kind == "retry":
        at = outcome.retry_at.isoformat() if outcome.retry_at else "?"
        log.info("failed after %.3f s, retrying at %s: %s", seconds, at, reason)
    else:
        log.warning("failed after %.3f s, for good: %s", seconds, reason)


_INTERRUPTED = {
    "cancelled": (logging.INFO, "cancelled while running: stopped"),
    "lost": (logging.WARNING, "lease lost (another worker may run it): stopped"),
    "released": (logging.INFO, "released to the queue at shutdown"),
}


def _log_interrupted(reason: str | None) -> None:
    level, message = _INTERRUPTED.get(reason or "", (logging.INFO, f"stopped: {reason}"))
    log.log(level, message)


def _describe(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return repr(exc) if exc else "returned"
