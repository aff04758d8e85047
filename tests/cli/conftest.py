"""The CLI in-process on its own SQLite copy (the commands that work on the database)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    db = tmp_path / "c.db"
    shutil.copy(sqlite_template, db)
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVEYOR_LOG_FILE", "")
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", "cli-test-secret-key-long-enough-for-hs256")
    monkeypatch.setenv("CONVEYOR_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("CONVEYOR_ARGON2_MEMORY_KIB", "1024")
    return db
