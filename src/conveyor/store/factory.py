"""Open the right backend for a database URL."""

from __future__ import annotations

from conveyor.store.backend import QueueBackend
from conveyor.store.database import Database


def open_backend(url: str, *, pool_size: int = 10) -> QueueBackend:
    db = Database(url, pool_size=pool_size)
    if db.dialect == "sqlite":
        from conveyor.store.sqlite import SqliteBackend

        return SqliteBackend(db)
    from conveyor.store.postgres import PostgresBackend

    return PostgresBackend(db)
