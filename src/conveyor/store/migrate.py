"""Apply Alembic migrations programmatically (`conveyor migrate`, and `conveyor run` on start)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from conveyor.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def migrate(db: Database, revision: str = "head") -> None:
    """Bring the schema to `revision`; concurrent callers serialise on the database."""

    def upgrade(sync_conn: Connection) -> None:
        if sync_conn.dialect.name == "postgresql":
            # Two processes starting together must not both create the tables.
            sync_conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7230861200412)")
            if db.schema:
                # The session's search_path names it (Database): the tables and alembic's
                # version table are created in it, unqualified, as in public without it.
                sync_conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{db.schema}"')
        command.upgrade(alembic_config(sync_conn), revision)

    async with db.write() as conn:
        await conn.run_sync(upgrade)


async def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(sync_conn: Connection) -> Any:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with db.read() as conn:
        revision: str | None = await conn.run_sync(read)
        return revision
