"""The composition root of the HTTP server: `create_app(settings)` builds one FastAPI app and
mounts every door on it (the API, the reference adapters, the dashboard), sharing one engine.

The doors do not know of each other: `api/` imports neither the dashboard nor `compat/`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext

from fastapi import FastAPI

from conveyor import __version__, dashboard, heap, tracing
from conveyor.api import app as api
from conveyor.api.deps import AppContext
from conveyor.api.ratelimit import RateLimits
from conveyor.api.routes import metrics
from conveyor.compat import cloudtask, django_jobs, jobscope, store_visits, tasks
from conveyor.runtime import Engine
from conveyor.settings import Settings


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, freeze_gc: bool = False
) -> FastAPI:
    """The server. Give it an open `engine` to share one with a worker (`conveyor run`).
    `freeze_gc`: a server process of its own (`conveyor api`, `conveyor run`), see
    `_lifespan`."""
    settings = settings or Settings()
    # A server started as `uvicorn conveyor.server:create_app --factory` traces as the
    # `conveyor` commands do (the OTEL_* variables; a no-op when they ask for nothing).
    tracing.configure("conveyor-api")
    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description=api.DESCRIPTION,
        lifespan=_lifespan(settings, engine, freeze_gc),
        docs_url=None,  # served by api/routes/docs.py from packaged assets, not a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    api.install(app, settings)
    for adapter in (jobscope, cloudtask, store_visits, django_jobs, tasks):
        app.include_router(adapter.router)
    dashboard.install(app)  # /dashboard: pages, their live stream and static files
    return app


def _lifespan(
    settings: Settings, engine: Engine | None, freeze_gc: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Open the engine (unless given one), the rate limits and the gauges for the app's life.

    With `freeze_gc`, once started, everything alive then (the app, its routes and schemas,
    the engine: about 190,000 objects) is moved out of the garbage collector's sight, and
    the rest collected on a timer (`heap.settled`). Not for apps inside another program
    (tests).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = engine is None
        eng = engine or await Engine.open(settings)
        limits = RateLimits(settings.redis_url, settings.rate_limit_namespace)
        try:
            await _bootstrap_admin(eng)
            await eng.jobs.define_limits()
            app.state.conveyor = AppContext(settings, eng, eng.accounts, limits)
            settled: AbstractAsyncContextManager[None] = (
                heap.settled() if freeze_gc else nullcontext()
            )
            # the gauges: queue depth, oldest job, workers alive
            async with settled, metrics.refreshed_gauges(eng):
                yield
        finally:
            await limits.aclose()
            if own:
                await eng.close()

    return lifespan


async def _bootstrap_admin(engine: Engine) -> None:
    s = engine.settings
    given = s.admin_password.get_secret_value() if s.admin_password else None
    generated = await engine.accounts.ensure_admin(s.admin_email, given)
    if generated:
        # Printed once, on the first start only; it is never stored in clear.
        print(f"\n  Conveyor admin created: {s.admin_email} / password: {generated}\n", flush=True)
