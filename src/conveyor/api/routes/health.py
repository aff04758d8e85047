"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor import __version__
from conveyor.api.deps import Context
from conveyor.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up (it does not touch the database)."""
    return Health(status="ok", version=__version__)


@router.get("/ready", response_model=Health, responses={503: {"description": "database down"}})
async def ready(ctx: Context) -> Health:
    """The database answers; 503 otherwise."""
    await ctx.engine.health.check_database()
    return Health(status="ready", version=__version__)
