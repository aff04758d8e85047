"""The CLI in-process: config, enqueue, info and users, with clear one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli.app import app

runner = CliRunner()


def test_enqueue_and_info(env: Path) -> None:
    done = runner.invoke(app, ["enqueue", "sleep", "--payload", '{"seconds": 0}', "--delay", "60"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["state"] == "scheduled"
    assert json.loads(done.output)["duplicate"] is False
    info = runner.invoke(app, ["info"])
    assert info.exit_code == 0 and "scheduled" in info.output


def test_config_hides_secrets(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_AMQP_URL", "amqp://guest:hunter2@127.0.0.1:5672/")
    monkeypatch.setenv("CONVEYOR_REDIS_URL", "redis://:hunter3@127.0.0.1:6379/0")
    shown = runner.invoke(app, ["config"], terminal_width=200)
    assert shown.exit_code == 0
    assert "CONVEYOR_DATABASE_URL" in shown.output
    assert "cli-test-secret" not in shown.output
    assert "hunter2" not in shown.output and "hunter3" not in shown.output
    assert "amqp://guest:***@127.0.0.1:5672/" in shown.output


def test_users_lifecycle(env: Path) -> None:
    made = runner.invoke(app, ["users", "create", "ada@example.com", "--password", "pass-word-1"])
    assert made.exit_code == 0, made.output
    assert runner.invoke(app, ["users", "promote", "ada@example.com"]).exit_code == 0
    listed = runner.invoke(app, ["users", "list"])
    assert "ada@example" in listed.output and "admin" in listed.output
    last_admin = runner.invoke(app, ["users", "disable", "ada@example.com"])
    assert last_admin.exit_code == 2 and "admin" in last_admin.output
    runner.invoke(app, ["users", "create", "bob@example.com", "--password", "pass-word-2"])
    disabled = runner.invoke(app, ["users", "disable", "bob@example.com"])
    assert disabled.exit_code == 0 and "disabled" in disabled.output
    missing = runner.invoke(app, ["users", "promote", "who@example.com"])
    assert missing.exit_code == 2 and "no account" in missing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "nope"], "unknown job type"),
        (["enqueue", "sleep", "--payload", "{bad"], "not valid JSON"),
        (["enqueue", "sleep", "--payload", "[1]"], "must be a JSON object"),
        (["enqueue", "sleep", "--payload", '{"seconds": -1}'], "invalid payload"),
        (["enqueue", "sleep", "--delay", "-3600"], "run_at is in the past"),
        (["enqueue", "sleep", "--limit", "per_customer=c1"], "allows no limits at submit"),
        (["enqueue", "sleep", "--limit", "per_customer"], "NAME=KEY"),
    ],
)
def test_bad_input_is_one_clear_line(env: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
