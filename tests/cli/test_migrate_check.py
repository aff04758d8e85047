"""`conveyor migrate --check [--wait S]`: what a Kubernetes initContainer waits on until the
migration Job has run (deploy/k8s, docs/deploy.md "Kubernetes"). It applies nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from conveyor.cli.app import app
from conveyor.services.migrations import apply_migrations
from conveyor.store.database import Database
from conveyor.store.migrate import alembic_config, migrate

runner = CliRunner()


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CONVEYOR_DATABASE_URL names a SQLite file no migration has touched."""
    path = tmp_path / "empty.db"
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVEYOR_LOG_FILE", "")
    return path


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_check_fails_on_a_database_never_migrated_and_applies_nothing(empty: Path) -> None:
    done = runner.invoke(app, ["migrate", "--check"], terminal_width=400)
    assert done.exit_code == 1, done.output
    assert "migrations pending" in done.output and revisions()[0] in done.output
    assert "jobs" not in tables(empty)


def test_check_passes_once_migrated(empty: Path) -> None:
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    done = runner.invoke(app, ["migrate", "--check"])
    assert done.exit_code == 0, done.output
    assert "up to date" in done.output


def test_check_names_only_the_revisions_still_missing(empty: Path) -> None:
    *older, last = revisions()
    db = Database(f"sqlite:///{empty}")
    try:
        asyncio.run(migrate(db, older[-1]))
    finally:
        asyncio.run(db.dispose())
    done = runner.invoke(app, ["migrate", "--check"], terminal_width=400)
    assert done.exit_code == 1
    assert done.output.strip().endswith(f"migrations pending: {last}")


def test_a_schema_ahead_of_this_code_is_up_to_date(empty: Path) -> None:
    """A newer release migrated it: its migrations are additive, this release runs on it."""
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    with sqlite3.connect(empty) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_a_newer_release'")
    assert runner.invoke(app, ["migrate", "--check"]).exit_code == 0


def test_wait_returns_once_another_process_has_migrated(empty: Path) -> None:
    def migrate_soon() -> None:
        time.sleep(1)
        asyncio.run(apply_migrations(f"sqlite:///{empty}"))

    migrating = threading.Thread(target=migrate_soon)
    migrating.start()
    try:
        done = runner.invoke(app, ["migrate", "--check", "--wait", "120"])
    finally:
        migrating.join()
    assert done.exit_code == 0, done.output


def test_wait_gives_up_on_an_unreachable_database(
    empty: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A port nothing listens on: refused at once, checked again until the deadline.
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "postgresql://nobody@127.0.0.1:9/conveyor")
    done = runner.invoke(app, ["migrate", "--check", "--wait", "1"])
    assert done.exit_code == 2
    assert "not reachable" in done.output


def test_check_passes_on_migrated_databases_of_each_kind(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", db_url)
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CONVEYOR_LOG_FILE", "")
    done = runner.invoke(app, ["migrate", "--check"])
    assert done.exit_code == 0, done.output
