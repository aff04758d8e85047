"""`GET /metrics` for Prometheus, and the background refresh of the database gauges.

Not public: the figures name every queue and job type of every owner. Prometheus scrapes it
with `METRICS_TOKEN`, a secret that opens this route and nothing else (an admin's API key in
a scraper's configuration would open every route); administrators' tokens work too.
"""

from __future__ import annotations

import hmac
from contextlib import AbstractAsyncContextManager
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from conveyor import metrics
from conveyor.api.deps import Context, current_user
from conveyor.runtime import Engine
from conveyor.services.accounts import require_admin

router = APIRouter(tags=["metrics"])


async def scraper(request: Request, ctx: Context) -> None:
    """The scrape token (compared in constant time), or else an administrator's credentials."""
    expected = ctx.settings.metrics_token
    if expected is not None:
        presented = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if hmac.compare_digest(presented.encode(), expected.get_secret_value().encode()):
            return
    require_admin(await current_user(request, ctx, None))


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request, _allowed: Annotated[None, Depends(scraper)]) -> Response:
    """The metrics in the format the scraper accepts (plain `def`: FastAPI runs it in a thread,
    so collecting many processes' files in multiprocess mode does not hold up the loop)."""
    body, content_type = metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)


def refreshed_gauges(engine: Engine) -> AbstractAsyncContextManager[None]:
    """Queue depth, oldest job age, workers alive and jobs per limit name, re-read every few
    seconds while the app runs; a worker counts as alive within one lease, as in `conveyor
    info`."""
    return metrics.database_gauges(
        engine.queues.counts,
        engine.workers.list_alive,
        engine.settings.metrics_refresh_interval,
        engine.flow.limit_totals,
    )
