"""Migrations produce exactly the schema the code defines, on both databases."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from conveyor.store.database import Database
from conveyor.store.migrate import current_revision, migrate
from conveyor.store.tables import metadata


def _diff(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrated_schema_equals_the_tables_in_code(db_url: str) -> None:
    db = Database(db_url)
    try:
        await migrate(db)  # already at head: a second run changes nothing
        async with db.read() as conn:
            diff = await conn.run_sync(_diff)
        assert diff == []
        assert await current_revision(db) is not None
    finally:
        await db.dispose()
