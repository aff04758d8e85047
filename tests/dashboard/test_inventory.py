"""Every dashboard route, read from the app itself, refuses a caller without a session, and
every state-changing one refuses a session without its CSRF token, changing nothing.

The API's security suite (tests/api/test_security_tokens.py) leaves the dashboard out since
it authenticates with a cookie, not a bearer token; this walks the same inventory so that a
page added later is covered without anyone remembering to list it.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from conveyor.dashboard.web import DashboardRoute
from conveyor.domain.states import JobState
from conveyor.services.jobs import Submission
from tests.dashboard.conftest import Browserless

# Reachable without a session: the sign-in form itself.
OPEN = {("GET", "/dashboard/login"), ("POST", "/dashboard/login")}
_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def dashboard_routes(app: FastAPI) -> list[tuple[str, str]]:
    found = [
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, DashboardRoute) and context.path is not None
        for method in sorted(context.methods or ())
    ]
    assert len(found) > 20, found  # the dashboard is mounted and its routers were found
    return found


def fill(path: str, job_id: str) -> str:
    """The path with a real job id where one is asked for, else a made-up id or action."""
    values = {"job_id": job_id, "action": "cancel", "name": "default"}
    return _PARAM.sub(
        lambda m: values.get(m.group(1), "01a20000-0000-7000-8000-000000000000"), path
    )


async def test_every_route_needs_a_session(dash: Browserless) -> None:
    job = await dash.api.engine.jobs.submit(Submission("noop", {}))
    anonymous = await dash.client()
    for method, path in dashboard_routes(dash.api.client._transport.app):  # type: ignore[attr-defined]
        if (method, path) in OPEN:
            continue
        r = await anonymous.request(method, fill(path, job.id), data={})
        if method == "GET" and r.status_code == 303:
            assert r.headers["location"].startswith("/dashboard/login?next="), path
        else:
            assert r.status_code == 401, (method, path, r.status_code)
    assert (await dash.api.engine.jobs.get(job.id)).state is JobState.QUEUED


async def test_every_post_needs_the_csrf_token(dash: Browserless) -> None:
    job = await dash.api.engine.jobs.submit(Submission("noop", {}))
    for method, path in dashboard_routes(dash.api.client._transport.app):  # type: ignore[attr-defined]
        if method != "POST":
            continue
        r = await dash.admin.post(
            fill(path, job.id), data={"csrf_token": "forged", "login": "admin", "password": "x"}
        )
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
    assert (await dash.api.engine.jobs.get(job.id)).state is JobState.QUEUED
    assert (await dash.admin.get("/dashboard/keys")).status_code == 200  # still signed in
