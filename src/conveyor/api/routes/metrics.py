"""`GET /metrics` for Prometheus, and the background refresh of the database gauges.

Administrators only, like every route but sign-in and health: the figures name every queue
and job type of every owner. Prometheus scrapes it with an admin's API key (deploy/).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from fastapi import APIRouter, Request, Response

from conveyor import metrics
from conveyor.api.deps import AdminUser
from conveyor.runtime import Engine

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request, _admin: AdminUser) -> Response:
    """The metrics in the format the scraper accepts (plain `def`: FastAPI runs it in a thread,
    so collecting many processes' files in multiprocess mode does not hold up the loop)."""
    body, content_type = metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def refreshed_gauges(engine: Engine) -> AbstractAsyncContextManager[None]:
    """Queue depth, oldest job age and workers alive, re-read every few seconds while the
    app runs; a worker counts as alive within one lease, as in `conveyor info`."""
    s = engine.settings
    return metrics.database_gauges(engine.backend, s.metrics_refresh_interval, s.lease_seconds)
