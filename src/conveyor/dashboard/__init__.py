"""The web dashboard at /dashboard: server-rendered pages, our own CSS and JS, live over SSE.

`install(app)` adds its routes and static files to the API app (docs/dashboard.md).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from conveyor.dashboard import admin, auth, jobs, limits, overview, schedules, workflows
from conveyor.dashboard.web import HERE, PREFIX


def install(app: FastAPI) -> None:
    for module in (auth, overview, jobs, workflows, schedules, limits, admin):
        app.include_router(module.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="dashboard-static")
