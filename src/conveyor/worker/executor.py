"""Run one attempt of one job and turn what happened into an `Outcome`."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, ErrorInfo, Outcome
from conveyor.errors import JobFailed, JobTimeout, NonRetryableError
from conveyor.metrics.families import WORKER_ABANDONED_THREADS
from conveyor.worker.blueprint import HandlerSpec
from conveyor.worker.context import JobCancelled, JobContext
from conveyor.worker.process_pool import ChildLimits, ProcessDied, ProcessPool

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")


class ThreadPool:
    """The threads of plain `def` handlers: `size` jobs at once, and a spare thread in the
    place of each abandoned one.

    A sync handler that timed out, or whose job was cancelled or lost, cannot be killed: its
    thread runs on until the function returns (it is told through `ctx.cancelled`). Such a
    thread is abandoned: its job's slot is freed at once, it is counted (the log and the
    `conveyor_worker_abandoned_threads` gauge), and the executor, sized `size + spares`,
    has a thread for the next job all the same. Without the spares, threads sleeping past
    their timeouts silently ate the pool: a job waited for a thread that never came. Beyond
    `spares` abandoned threads at once the pool does shrink, and the log says so.
    """

    def __init__(self, size: int, spares: int) -> None:
        self.size = size
        self.spares = spares
        self._executor = ThreadPoolExecutor(size + spares, thread_name_prefix="job")
        self._slots = asyncio.Semaphore(size)  # jobs whose thread is not abandoned
        self._lock = threading.Lock()  # `abandoned` goes down on the thread that returns
        self.abandoned = 0

    async def run(self, call: Callable[[], T]) -> T:
        async with self._slots:
            future = self._executor.submit(call)
            try:
                return await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                if not future.cancel() and not future.done():  # running: it goes on
                    self._abandon(future)
                raise

    def _abandon(self, future: Future[T]) -> None:
        with self._lock:
            self.abandoned += 1
            abandoned = self.abandoned
        WORKER_ABANDONED_THREADS.inc()
        future.add_done_callback(self._returned)
        if abandoned > self.spares:
            log.warning(
                "%d sync handler threads still run after their jobs ended (timed out or "
                "stopped), more than the %d spares: the pool runs %d threads of %d until "
                "they return (CONVEYOR_WORKER_SPARE_THREADS)",
                abandoned, self.spares, self.size - (abandoned - self.spares), self.size,
            )  # fmt: skip
        else:
            log.warning(
                "a sync handler's thread still runs after its job ended (timed out or "
                "stopped); a spare thread takes its place (%d abandoned, %d spares)",
                abandoned, self.spares,
            )  # fmt: skip

    def _returned(self, _future: Future[Any]) -> None:
        """On the abandoned thread, when its function finally returned."""
        with self._lock:
            self.abandoned -= 1
        WORKER_ABANDONED_THREADS.dec()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class Pools:
    """The thread pool and the process pool of sync handlers, created on first use."""

    def __init__(
        self,
        threads: int,
        processes: int | None = None,
        limits: ChildLimits | None = None,
        spare_threads: int = 16,
    ) -> None:
        self._threads = threads
        self._spares = spare_threads
        self._processes = processes
        self._limits = limits
        self._thread_pool: ThreadPool | None = None
        self._process_pool: ProcessPool | None = None

    def threads(self) -> ThreadPool:
        if self._thread_pool is None:
            self._thread_pool = ThreadPool(self._threads, self._spares)
        return self._thread_pool

    def processes(self) -> ProcessPool:
        if self._process_pool is None:
            self._process_pool = ProcessPool(self._processes, self._limits)
        return self._process_pool

    def shutdown(self) -> None:
        if self._thread_pool is not None:
            self._thread_pool.shutdown()
        if self._process_pool is not None:
            self._process_pool.shutdown()


async def execute(spec: HandlerSpec, job: ClaimedJob, ctx: JobContext, pools: Pools) -> Outcome:
    """One attempt. Never raises, except CancelledError when the worker interrupts it."""
    try:
        payload = spec.payload_model.model_validate(job.payload)
    except ValidationError as exc:
        return _failed(job, ErrorInfo("InvalidPayload", str(exc)))
    timeout = job.timeout_s if job.timeout_s is not None else spec.timeout
    try:
        if timeout is None:
            value = await _call(spec, ctx, payload, pools)
        else:
            async with asyncio.timeout(timeout):
                value = await _call(spec, ctx, payload, pools)
        result = spec.result_adapter.dump_python(value, mode="json")
    except TimeoutError:
        ctx.cancel()  # a sync handler still running is told to stop
        return _error(spec, job, ErrorInfo(JobTimeout.__name__, f"timed out after {timeout} s"))
    except JobFailed as exc:
        return _failed(job, _info(exc), _partial(spec, exc.result))
    except (NonRetryableError, JobCancelled) as exc:
        return _failed(job, _info(exc))
    except ProcessDied as exc:  # this job's own child died; the pool has replaced it
        return _error(spec, job, ErrorInfo(ProcessDied.__name__, str(exc)))
    except Exception as exc:
        return _error(spec, job, _info(exc))
    return Outcome(job.id, job.attempt, "completed", result=result)


async def _call(spec: HandlerSpec, ctx: JobContext, payload: Any, pools: Pools) -> Any:
    if spec.executor == "async":
        return await spec.func(ctx, payload)
    if spec.executor == "process":
        return await pools.processes().run(spec.func, ctx.info, payload)
    # in the job's log context (run_in_executor, unlike to_thread, does not copy it)
    call = functools.partial(contextvars.copy_context().run, spec.func, ctx, payload)
    return await pools.threads().run(call)


def _error(spec: HandlerSpec, job: ClaimedJob, error: ErrorInfo) -> Outcome:
    if job.attempt >= job.max_attempts:
        return _failed(job, error)
    retry_at = utcnow() + timedelta(seconds=spec.retry.delay(job.attempt))
    return Outcome(job.id, job.attempt, "retry", error=error, retry_at=retry_at)


def _failed(job: ClaimedJob, error: ErrorInfo, result: Any = None) -> Outcome:
    return Outcome(job.id, job.attempt, "failed", result=result, error=error)


def _partial(spec: HandlerSpec, value: Any) -> Any:
    return None if value is None else spec.result_adapter.dump_python(value, mode="json")


def _info(exc: BaseException) -> ErrorInfo:
    trace = "".join(traceback.format_exception(exc))
    return ErrorInfo(type(exc).__name__, str(exc) or type(exc).__name__, trace[-8000:])
