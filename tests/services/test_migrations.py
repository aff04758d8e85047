"""`apply_migrations` brings a fresh database to the newest schema, and again changes nothing."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory

from conveyor.services.migrations import apply_migrations
from conveyor.store.database import Database
from conveyor.store.migrate import alembic_config, current_revision


async def test_a_fresh_database_reaches_the_head_and_a_second_run_is_a_no_op(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    await apply_migrations(url)
    await apply_migrations(url)
    db = Database(url)
    try:
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert head is not None
        assert await current_revision(db) == head
    finally:
        await db.dispose()
