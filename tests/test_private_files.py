"""The files that hold secrets are the owner's alone, whatever the umask: the SQLite database
and its -wal/-shm files and the log files 0600, the data directory 0700."""

from __future__ import annotations

import logging
import logging.handlers
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.logs import setup_logging
from conveyor.runtime import Engine
from conveyor.services.migrations import apply_migrations
from conveyor.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    """The usual 022, which leaves new files readable by every account on the host."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_the_database_and_the_data_directory_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    database = data / "conveyor.db"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        data_dir=data,
        log_file=None,
        admin_password="admin-password-123",
    )
    engine = await Engine.open(settings, apply_migrations=True)
    try:
        await engine.accounts.ensure_admin(settings.admin_email, "admin-password-123")
        files = {p.name: mode(p) for p in data.iterdir()}
    finally:
        await engine.close()
    assert mode(data) == 0o700
    assert {"conveyor.db", "conveyor.db-wal", "conveyor.db-shm", "secret_key"} <= set(files)
    assert {name: m for name, m in files.items() if m != 0o600} == {}


async def test_conveyor_migrate_creates_a_private_database(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere" / "conveyor.db"
    await apply_migrations(f"sqlite:///{database}")
    assert mode(database) == 0o600
    assert mode(database.parent) == 0o700


def test_log_files_are_private_after_a_rollover_too(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "app.log"
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        setup_logging("INFO", "text", log_file)
        logging.getLogger("conveyor.test").info("a line")
        (rotating,) = [h for h in root.handlers if isinstance(h, logging.FileHandler)]
        assert isinstance(rotating, logging.handlers.RotatingFileHandler)
        rotating.doRollover()
        logging.getLogger("conveyor.test").info("another line")
        for handler in root.handlers:
            handler.close()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
    written = sorted(log_file.parent.iterdir())
    assert [p.name for p in written] == ["app.log", "app.log.1"]
    assert {p.name: mode(p) for p in written} == {"app.log": 0o600, "app.log.1": 0o600}
