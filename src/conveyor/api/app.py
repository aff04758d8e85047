"""`create_app(settings)`: the FastAPI application, built by a factory (no module globals)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from conveyor import __version__, dashboard
from conveyor.api import errors
from conveyor.api.deps import AppContext
from conveyor.api.middleware import BodyLimits, HttpMetrics, RequestLog
from conveyor.api.ratelimit import RateLimits
from conveyor.api.routes import admin, auth, docs, events, health, jobs, metrics, schedules
from conveyor.api.routes import queues as queue_routes
from conveyor.api.routes import webhooks as webhook_routes
from conveyor.api.routes import workers as worker_routes
from conveyor.api.schemas import ErrorBody
from conveyor.compat import cloudtask, django_jobs, jobscope, store_visits, tasks
from conveyor.runtime import Engine, load_handlers
from conveyor.settings import Settings

log = logging.getLogger("conveyor.api")

DESCRIPTION = """
Submit jobs, follow them, get their results. Authenticate with `Authorization: Bearer
<access token>` (from `/api/v1/auth/login`) or an API key (`Bearer cvk_...`).
Errors always have the shape `{"error": {"code", "message", "details"?}}`.
"""


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The API. Give it an open `engine` to share one with a worker (`conveyor run`)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = engine is None
        eng = engine or await Engine.open(settings)
        limits = RateLimits(settings.redis_url, settings.rate_limit_namespace)
        try:
            await _bootstrap_admin(eng)
            app.state.conveyor = AppContext(settings, eng, eng.accounts, limits)
            async with metrics.refreshed_gauges(eng):  # queue depth, oldest job, workers alive
                yield
        finally:
            await limits.aclose()
            if own:
                await eng.close()

    app = FastAPI(
        title="Conveyor",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routes/docs.py from packaged assets, not a CDN
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    errors.install(app)
    app.add_middleware(
        BodyLimits, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth
    )
    app.add_middleware(HttpMetrics)  # outside BodyLimits: refused bodies are counted too
    app.add_middleware(RequestLog)
    for module in (health, auth, jobs, events, schedules, admin, docs, metrics):
        app.include_router(module.router)
    for routes in (queue_routes, worker_routes):
        app.include_router(routes.router)
    app.include_router(webhook_routes.router)
    for adapter in (jobscope, cloudtask, store_visits, django_jobs, tasks):
        app.include_router(adapter.router)
    docs.mount_assets(app)
    dashboard.install(app)  # /dashboard: pages, their live stream and static files
    app.openapi = lambda: _openapi(app, settings)  # type: ignore[method-assign]
    return app


async def _bootstrap_admin(engine: Engine) -> None:
    s = engine.settings
    given = s.admin_password.get_secret_value() if s.admin_password else None
    generated = await engine.accounts.ensure_admin(s.admin_email, given)
    if generated:
        # Printed once, on the first start only; it is never stored in clear.
        print(f"\n  Conveyor admin created: {s.admin_email} / password: {generated}\n", flush=True)


def _openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The generated schema, plus one payload schema per job type."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    modules = [m.strip() for m in settings.handler_modules.split(",") if m.strip()]
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI documents 422 as {"detail": [...]}; ours is the one error shape.
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["HTTPValidationError"] = error_schema
    for spec in load_handlers(modules):
        model = spec.payload_model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model.pop("$defs", {}))
        model["description"] = f"Payload of job type `{spec.name}`. {spec.description}".strip()
        components[f"{spec.name}Payload"] = model
    app.openapi_schema = schema
    return schema
