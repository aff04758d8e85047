"""What a handler is given: who it is, how to report progress, and whether to stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from conveyor.domain.nesting import Nested
    from conveyor.domain.workflows import StepSpec
    from conveyor.settings import Settings
    from conveyor.worker.resources import Resources

from conveyor.errors import ConfigurationError, ConveyorError

ProgressSink = Callable[[str, int, int, str | None], Awaitable[bool]]
# (steps, before) -> the appended steps' job ids: set by the worker for a workflow's step
StepAppender = Callable[["Sequence[StepSpec]", "Sequence[str]"], Awaitable[list[str]]]
PROGRESS_MIN_INTERVAL = 0.25


class JobCancelled(ConveyorError):
    """The job was cancelled while it ran."""

    code = "cancelled"


@dataclass(frozen=True, slots=True)
class JobInfo:
    """The job's identity: picklable, so process-pool handlers get it too."""

    id: str
    type: str
    queue: str
    attempt: int
    max_attempts: int
    owner_id: str
    idempotency_key: str  # the job's key, or its id: stable across attempts
    # A workflow's step (docs/workflows.md): its workflow, its name and its dependencies'
    # results by step name, here too so that a process-pool handler sees them.
    workflow_id: str | None = None
    step: str | None = None
    results: Mapping[str, Any] = field(default_factory=dict)


class JobContext:
    """Given to handlers as `ctx`. Progress and cancellation work from async and thread code."""

    def __init__(
        self,
        info: JobInfo,
        progress_sink: ProgressSink,
        loop: asyncio.AbstractEventLoop,
        resources: Resources | None = None,
    ) -> None:
        self.info = info
        self._resources = resources
        self._sink = progress_sink
        self._loop = loop
        self._cancelled = False  # a plain flag: set on the loop, read from any thread
        self._last_progress = 0.0
        self._log: logging.LoggerAdapter[logging.Logger] | None = None
        self.workflow_id: str | None = None  # a workflow's step: its workflow
        self.step: str | None = None  # ... and its step name
        self._results: Mapping[str, Any] = MappingProxyType({})
        self._appender: StepAppender | None = None

    @property
    def results(self) -> Mapping[str, Any]:
        """A workflow step's dependencies' results by step name (a skipped one: None), loaded
        by the worker before the handler starts; empty for a job that is no step."""
        return self._results

    def set_step(
        self,
        workflow_id: str,
        step: str,
        results: Mapping[str, Any],
        appender: StepAppender | None = None,
    ) -> None:
        self.workflow_id, self.step = workflow_id, step
        self._results = MappingProxyType(dict(results))
        self.info = replace(self.info, workflow_id=workflow_id, step=step, results=dict(results))
        self._appender = appender

    async def append_steps(
        self, steps: Sequence[StepSpec | Nested], before: Sequence[str] = ()
    ) -> list[str]:
        """Add steps to this step's workflow (a fan-out known at run time): each waits for
        this step (it runs only if this one completes) and for its own `depends_on`; the
        waiting steps named in `before` wait for them too. Names already added are left as
        they are (a retried run appending again). The new steps' job ids. A `Nested` part
        (a sub-workflow) is appended as its steps, named `<part>.<step>` (docs/workflows.md,
        "Nested workflows"); an error names the part where it was given (`steps.0.steps.1`).

        Held to a submit's bounds: InvalidInput (nothing appended) when the workflow would
        pass MAX_STEPS steps or have a chain of dependencies longer than MAX_DEPTH; under
        the owner's running cap each new step holds its running quota, as submitted steps
        do (docs/workflows.md, "Limits")."""
        if self._appender is None:
            raise ConfigurationError("only a workflow's step can append steps")
        from conveyor.domain.nesting import flattened  # as StepSpec: not at import time

        flat = flattened("appended", steps)
        with flat.declared_places():
            return await self._appender(flat.spec.steps, before)

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose lines carry the job id, type and attempt (made on first use)."""
        if self._log is None:
            self._log = logging.LoggerAdapter(
                logging.getLogger(f"conveyor.job.{self.info.type}"),
                {"job_id": self.info.id, "job_type": self.info.type, "attempt": self.info.attempt},
            )
        return self._log

    @property
    def resources(self) -> Resources:
        """Settings, store and mail; a worker built without them cannot run such handlers."""
        if self._resources is None:
            raise ConfigurationError("this worker was started without resources")
        return self._resources

    @property
    def settings(self) -> Settings:
        return self.resources.settings

    @property
    def job_id(self) -> str:
        return self.info.id

    @property
    def attempt(self) -> int:
        return self.info.attempt

    @property
    def idempotency_key(self) -> str:
        return self.info.idempotency_key

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def raise_if_cancelled(self) -> None:
        """For sync handlers: call between steps so a cancel or timeout stops the work."""
        if self._cancelled:
            raise JobCancelled()

    async def progress(self, percent: int, message: str | None = None) -> None:
        """Report progress (0-100); throttled, the final 100 always goes through."""
        percent = max(0, min(100, int(percent)))
        now = time.monotonic()
        if percent < 100 and now - self._last_progress < PROGRESS_MIN_INTERVAL:
            return
        self._last_progress = now
        await self._sink(self.info.id, self.info.attempt, percent, message)

    def report_progress(self, percent: int, message: str | None = None) -> None:
        """`progress` for code running in a worker thread."""
        future = asyncio.run_coroutine_threadsafe(self.progress(percent, message), self._loop)
        future.result(timeout=30)
