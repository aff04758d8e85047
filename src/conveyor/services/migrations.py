"""Bringing a database's schema up to date (`conveyor migrate`), without opening an engine:
no handlers loaded, no services built, one connection pool opened and closed."""

from __future__ import annotations

from conveyor.settings import private_sqlite_files
from conveyor.store.database import Database
from conveyor.store.migrate import migrate


async def apply_migrations(database_url: str, schema: str = "") -> None:
    """Every migration not applied yet (in `schema`, created if missing, on PostgreSQL);
    concurrent callers serialise on the database."""
    private_sqlite_files(database_url)  # 0600 before the store creates it
    db = Database(database_url, schema=schema)
    try:
        await migrate(db)
    finally:
        await db.dispose()
