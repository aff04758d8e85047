"""`install(app, settings)`: the HTTP API on an app the composition root (server.py) built:
the one error shape, the middleware, the routers, the docs and the OpenAPI document."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

from conveyor.api import errors, openapi
from conveyor.api.middleware.body_limits import BodyLimits
from conveyor.api.middleware.edge import RequestEdge
from conveyor.api.routes import admin, auth, docs, events, health, jobs, limits, metrics, schedules
from conveyor.api.routes import queues as queue_routes
from conveyor.api.routes import webhooks as webhook_routes
from conveyor.api.routes import workers as worker_routes
from conveyor.api.routes import workflows as workflow_routes
from conveyor.api.schemas import ErrorBody
from conveyor.runtime import load_handlers
from conveyor.settings import Settings

DESCRIPTION = """
Submit jobs, follow them, get their results. Authenticate with `Authorization: Bearer
<access token>` (from `/api/v1/auth/login`) or an API key (`Bearer cvk_...`).
Errors always have the shape `{"error": {"code", "message", "details"?}}`.
"""


def install(app: FastAPI, settings: Settings) -> None:
    """The API's routes; its error shape and middleware hold for everything on `app`."""
    errors.install(app)
    app.add_middleware(
        BodyLimits, max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth
    )
    # Outside BodyLimits: refused bodies are counted, logged and get the headers too.
    app.add_middleware(RequestEdge)
    # A request is matched against the routes in order, each router's in turn (about 3 us a
    # route): the routers of the hot paths, submits first, go first. The document lists
    # them in reading order (DOCUMENTED), whatever order they are matched in.
    first = len(app.router.routes)
    included: dict[ModuleType, list[BaseRoute]] = {}
    for module in MATCHED:
        start = len(app.router.routes)
        app.include_router(module.router)
        included[module] = app.router.routes[start:]
    docs.mount_assets(app)
    ours = [route for module in DOCUMENTED for route in included[module]]
    mounts = app.router.routes[first + len(ours) :]

    def documented() -> list[BaseRoute]:
        """The app's routes with ours in reading order (other doors add theirs later)."""
        routes = app.router.routes
        return [*routes[:first], *ours, *mounts, *routes[first + len(ours) + len(mounts) :]]

    app.openapi = lambda: _openapi(app, settings, documented())  # type: ignore[method-assign]


DOCUMENTED: tuple[ModuleType, ...] = (
    health, auth, jobs, workflow_routes, events, schedules, admin, docs, metrics,
    queue_routes, worker_routes, webhook_routes, limits,
)  # fmt: skip
MATCHED: tuple[ModuleType, ...] = (jobs, *(m for m in DOCUMENTED if m is not jobs))


def _openapi(app: FastAPI, settings: Settings, routes: list[BaseRoute]) -> dict[str, Any]:
    """The generated schema, plus one payload schema per job type."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=routes
    )
    modules = [m.strip() for m in settings.handler_modules.split(",") if m.strip()]
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # FastAPI documents 422 as {"detail": [...]}; ours is the one error shape.
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["HTTPValidationError"] = error_schema
    components["ErrorBody"] = error_schema
    openapi.document(schema, routes)
    for spec in load_handlers(modules):
        model = spec.payload_model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model.pop("$defs", {}))
        model["description"] = f"Payload of job type `{spec.name}`. {spec.description}".strip()
        components[f"{spec.name}Payload"] = model
    app.openapi_schema = schema
    return schema
