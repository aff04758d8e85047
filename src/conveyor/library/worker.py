"""A Conveyor worker inside the user's own process: `Worker` to embed, `run` to block on.

It is the engine `conveyor worker` builds (runtime.py), with the process-wide `@job`
blueprint added to its job types, so jobs declared in the application run without a
`--handlers` module list. By default it runs a scheduler beside the worker, as `conveyor run`
does: without one, delayed jobs and retries after a backoff would never come due, and jobs of
a crashed process would never be rescued (any number of schedulers may run; one leads).
"""

from __future__ import annotations

import asyncio
from types import ModuleType
from typing import TYPE_CHECKING, Self, TypedDict, Unpack

from conveyor import tracing
from conveyor.library.registry import default
from conveyor.library.signals import until_signalled
from conveyor.logs import setup_logging
from conveyor.runtime import Engine
from conveyor.settings import Settings
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.registry import blueprint_of

if TYPE_CHECKING:
    from types import TracebackType

    from conveyor.scheduler.scheduler import Scheduler
    from conveyor.worker.worker import Worker as EngineWorker

# What a worker runs beside the `@job` types: a blueprint (or registry), a module (its
# `blueprint`), or a module's name as `CONVEYOR_HANDLER_MODULES` writes it (`pkg.mod[:attr]`).
Handlers = Blueprint | ModuleType | str


class WorkerOptions(TypedDict, total=False):
    """`Worker`'s keyword arguments, for `run` (tests/library/test_worker.py keeps them in step)."""

    settings: Settings | None
    database_url: str | None
    queues: str | None
    concurrency: int | None
    scheduler: bool
    migrate: bool


class Worker:
    """A worker (and a scheduler) on this process's event loop, against the configured database.

    `settings` default to the environment, as for the `conveyor` processes
    (`CONVEYOR_DATABASE_URL`, `CONVEYOR_WORKER_CONCURRENCY`, ...); `database_url`, `queues`
    (`"a,b=2"`, `"*"`: every queue) and `concurrency` override them. `migrate` brings the
    schema up to date first. Use it as `async with Worker(): ...`, or `await start()` and later
    `await stop()`: either way running jobs get `CONVEYOR_SHUTDOWN_GRACE` seconds to finish,
    and the ones still running then go back to the queue.
    """

    def __init__(
        self,
        *handlers: Handlers,
        settings: Settings | None = None,
        database_url: str | None = None,
        queues: str | None = None,
        concurrency: int | None = None,
        scheduler: bool = True,
        migrate: bool = False,
    ) -> None:
        modules = [h for h in handlers if isinstance(h, str)]
        self.settings = _settings(settings, database_url, modules)
        self._blueprints = [default, *(blueprint_of(h) for h in handlers if not isinstance(h, str))]
        self._queues = queues
        self._concurrency = concurrency
        self._with_scheduler = scheduler
        self._migrate = migrate
        self._engine: Engine | None = None
        self._worker: EngineWorker | None = None
        self._scheduler: Scheduler | None = None
        self._task: asyncio.Task[int] | None = None
        self._closed = False

    @property
    def id(self) -> str | None:
        """The worker's id as jobs' `worker_id` and `GET /api/v1/workers` show it, once started."""
        return self._worker.id if self._worker is not None else None

    async def start(self) -> None:
        """Open the database and start claiming; raises at once if the database is unreachable
        or a job type is declared wrongly."""
        if self._engine is not None:
            raise RuntimeError("this worker has already been started")
        engine = await Engine.open(
            self.settings, apply_migrations=self._migrate, blueprints=self._blueprints
        )
        try:
            worker = engine.worker(self._queues, self._concurrency)
            scheduler = engine.scheduler() if self._with_scheduler else None
        except BaseException:
            await engine.close()
            raise
        self._engine, self._worker, self._scheduler = engine, worker, scheduler
        self._task = asyncio.create_task(self._serve(worker), name="conveyor-worker")

    def request_stop(self, force: bool = False) -> None:
        """Ask for a stop without waiting (for a signal handler): the first call drains running
        jobs within the grace period, a second one (or `force`) stops at once."""
        if self._worker is not None:
            self._worker.stop(force)

    async def stop(self, force: bool = False) -> int:
        """Stop (draining unless `force`), close the database, and return the exit code."""
        self.request_stop(force)
        return await self.wait()

    async def wait(self) -> int:
        """Until the worker stops (asked to, or failing on its own: 1), then close it all."""
        if self._task is None or self._engine is None:
            raise RuntimeError("this worker has not been started")
        try:
            return await asyncio.shield(self._task)  # a cancelled wait leaves the worker be
        finally:
            if self._task.done() and not self._closed:
                self._closed = True
                await self._engine.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _serve(self, worker: EngineWorker) -> int:
        """The worker's run, with the scheduler beside it for as long as it lasts; a scheduler
        that ends on its own (it raised) stops the worker rather than leave it half-running,
        and its error is what `wait` raises."""
        scheduler = self._scheduler
        side = asyncio.create_task(scheduler.run()) if scheduler is not None else None
        if side is not None:
            side.add_done_callback(lambda _done: worker.stop())
        try:
            return await worker.run()
        finally:
            if scheduler is not None and side is not None:
                scheduler.stop()
                await side


def run(
    *handlers: Handlers, configure_logging: bool = True, **options: Unpack[WorkerOptions]
) -> int:
    """Run a `Worker` until SIGINT/SIGTERM (the first drains, a second stops at once), as
    `conveyor worker` does; the exit code is returned (`raise SystemExit(conveyor.run())`).
    `configure_logging` sets up Conveyor's logging from the settings, as the processes do;
    tracing follows the OTEL_* variables as theirs does (docs/tracing.md). A `Worker` inside
    an application with an SDK of its own traces after `conveyor.tracing.enable()`."""
    worker = Worker(*handlers, **options)
    if configure_logging:
        s = worker.settings
        setup_logging(s.log_level, s.log_format, s.log_file)
    tracing.configure("conveyor-worker")

    async def main() -> int:
        await worker.start()
        return await until_signalled([worker.request_stop], worker.wait())

    return asyncio.run(main())


def _settings(given: Settings | None, database_url: str | None, modules: list[str]) -> Settings:
    """`given` (or the environment's), with the database and handler modules named here."""
    base = given if given is not None else Settings()
    update: dict[str, object] = {}
    if database_url is not None:
        update["database_url"] = database_url
    if modules:
        update["handler_modules"] = ",".join(filter(None, [base.handler_modules, *modules]))
    if base.db_application_name is None:
        update["db_application_name"] = "conveyor library"
    return base.model_copy(update=update) if update else base
