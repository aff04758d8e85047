"""Run one attempt of one job and turn what happened into an `Outcome`."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import multiprocessing
import traceback
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, ErrorInfo, Outcome
from conveyor.errors import JobFailed, JobTimeout, NonRetryableError
from conveyor.worker.blueprint import HandlerSpec
from conveyor.worker.context import JobCancelled, JobContext

log = logging.getLogger("conveyor.worker")


class Pools:
    """Thread and process pools for sync handlers, created on first use, shut down once."""

    def __init__(self, threads: int, processes: int | None = None) -> None:
        self._threads = threads
        self._processes = processes
        self._thread_pool: ThreadPoolExecutor | None = None
        self._process_pool: ProcessPoolExecutor | None = None

    def for_kind(self, kind: str) -> Executor:
        if kind == "process":
            if self._process_pool is None:
                context = multiprocessing.get_context("spawn")
                self._process_pool = ProcessPoolExecutor(self._processes, mp_context=context)
            return self._process_pool
        if self._thread_pool is None:
            self._thread_pool = ThreadPoolExecutor(self._threads, thread_name_prefix="job")
        return self._thread_pool

    def shutdown(self) -> None:
        for pool in (self._thread_pool, self._process_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)


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
    except Exception as exc:
        return _error(spec, job, _info(exc))
    return Outcome(job.id, job.attempt, "completed", result=result)


async def _call(spec: HandlerSpec, ctx: JobContext, payload: Any, pools: Pools) -> Any:
    if spec.executor == "async":
        return await spec.func(ctx, payload)
    loop = asyncio.get_running_loop()
    if spec.executor == "process":
        call = functools.partial(spec.func, ctx.info, payload)
    else:  # in the job's log context (run_in_executor, unlike to_thread, does not copy it)
        call = functools.partial(contextvars.copy_context().run, spec.func, ctx, payload)
    return await loop.run_in_executor(pools.for_kind(spec.executor), call)


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
