"""Apply Alembic migrations programmatically (`conveyor migrate`, and `conveyor run` on start)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
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


async def pending_revisions(db: Database) -> list[str]:
    """The revisions this code has and the database lacks, oldest first.

    Empty when the schema is at the code's head, and also when it is ahead of it (a newer
    release migrated it; migrations are additive, so this release still runs on it): what a
    process waiting for `conveyor migrate` to finish needs to know, nothing applied.
    """
    script = ScriptDirectory.from_config(alembic_config())
    current = await current_revision(db)
    known = {revision.revision for revision in script.walk_revisions()}
    if current is not None and current not in known:
        return []
    head = script.get_current_head()
    if head is None or current == head:
        return []
    missing = script.iterate_revisions(head, current or "base")
    return [r.revision for r in reversed(list(missing)) if r.revision != current]
