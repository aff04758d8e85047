"""Bringing a database's schema up to date (`conveyor migrate`), without opening an engine:
no handlers loaded, no services built, one connection pool opened and closed."""

from __future__ import annotations

from conveyor.settings import private_sqlite_files
from conveyor.store.database import Database
from conveyor.store.migrate import migrate, pending_revisions


async def apply_migrations(database_url: str, schema: str = "") -> None:
    """Every migration not applied yet (in `schema`, created if missing, on PostgreSQL);
    concurrent callers serialise on the database."""
    private_sqlite_files(database_url)  # 0600 before the store creates it
    db = Database(database_url, schema=schema)
    try:
        await migrate(db)
    finally:
        await db.dispose()


async def pending_migrations(database_url: str) -> list[str]:
    """The migrations not applied yet, oldest first, applying none (`conveyor migrate
    --check`: a Kubernetes initContainer waits on it until the migration Job has run)."""
    private_sqlite_files(database_url)
    db = Database(database_url)
    try:
        return await pending_revisions(db)
    finally:
        await db.dispose()
