"""Readiness: whether this process can serve, which is whether its database answers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from conveyor.store.backend import QueueBackend


class HealthService:
    def __init__(self, backend: QueueBackend) -> None:
        self.backend = backend

    async def check_database(self) -> None:
        """Return once the database answers; raise `Unavailable` (HTTP 503) if it does not."""
        await self.backend.db.ping()

    @contextmanager
    def request_path(self) -> Iterator[None]:
        """Bound the database work of one request (`db_request_timeout` per operation):
        past it the request fails with `Unavailable` (503, Retry-After) instead of hanging."""
        with self.backend.db.request_path():
            yield
