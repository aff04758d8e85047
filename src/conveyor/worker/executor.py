"""Run one attempt of one job and turn what happened into an `Outcome`."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import traceback
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, ErrorInfo, Outcome
from conveyor.errors import JobFailed, JobTimeout, NonRetryableError
from conveyor.worker.blueprint import HandlerSpec
from conveyor.worker.context import JobCancelled, JobContext
from conveyor.worker.process_pool import ChildLimits, ProcessDied, ProcessPool

log = logging.getLogger("conveyor.worker")


class Pools:
    """The thread pool and the process pool of sync handlers, created on first use."""

    def __init__(
        self, threads: int, processes: int | None = None, limits: ChildLimits | None = None
    ) -> None:
        self._threads = threads
        self._processes = processes
        self._limits = limits
        self._thread_pool: ThreadPoolExecutor | None = None
        self._process_pool: ProcessPool | None = None

    def threads(self) -> ThreadPoolExecutor:
        if self._thread_pool is None:
            self._thread_pool = ThreadPoolExecutor(self._threads, thread_name_prefix="job")
        return self._thread_pool

    def processes(self) -> ProcessPool:
        if self._process_pool is None:
            self._process_pool = ProcessPool(self._processes, self._limits)
        return self._process_pool

    def shutdown(self) -> None:
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
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
    return await asyncio.get_running_loop().run_in_executor(pools.threads(), call)


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
