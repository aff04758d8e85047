"""Readiness: whether this process can serve, which is whether its database answers."""

from __future__ import annotations

from conveyor.store.backend import QueueBackend


class HealthService:
    def __init__(self, backend: QueueBackend) -> None:
        self.backend = backend

    async def check_database(self) -> None:
        """Return once the database answers; raise `Unavailable` (HTTP 503) if it does not."""
        await self.backend.db.ping()
