"""The client commands (`conveyor login|logout|submit|jobs|schedules`) against a live server:
the real `conveyor` entry point in subprocesses, and typer's runner for output checks."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli.app import app
from conveyor.services.accounts import User
from tests.api.conftest import api_settings
from tests.support.live import PASSWORD, LiveServer, live_server
from tests.support.processes import CONVEYOR, ROOT, clean_environ

pytestmark = pytest.mark.slow  # subprocesses of the real entry point
EMAIL = "ada@example.com"


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(api_settings(db_url, tmp_path)) as running:
        yield running


@pytest.fixture
def ada(server: LiveServer) -> User:
    return server.user(EMAIL)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the login is saved, for subprocesses and for the in-process runner alike."""
    path = tmp_path / "home" / "conveyor" / "login.json"
    monkeypatch.setenv("CONVEYOR_CLIENT_CONFIG", str(path))
    monkeypatch.delenv("CONVEYOR_API_KEY", raising=False)
    monkeypatch.delenv("CONVEYOR_URL", raising=False)
    return path


def conveyor(
    *args: str, config: Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {**clean_environ(), "CONVEYOR_CLIENT_CONFIG": str(config), **(env or {})}
    return subprocess.run(
        [CONVEYOR, *args], cwd=ROOT, env=environ, input=stdin, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


def one_clear_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def log_in(server: LiveServer, config: Path) -> None:
    done = conveyor(
        "login", "--url", server.url, "--email", EMAIL, "--password-stdin",
        config=config, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_login_submit_wait_list_and_logout(server: LiveServer, ada: User, config: Path) -> None:
    log_in(server, config)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    saved = json.loads(config.read_text())
    assert saved["url"] == server.url and saved["email"] == EMAIL and saved["refresh_token"]

    done = conveyor(
        "submit", "sleep", "--payload", '{"seconds": 0.5, "steps": 5}', "--wait", "--json",
        config=config,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "completed" and job["result"] == {"slept": 0.5, "attempt": 1}
    assert "100%" in done.stderr  # the progress bar, on stderr

    failing = conveyor(
        "submit", "sleep", "--payload", '{"seconds": 0, "fail": true, "permanent": true}',
        "--wait", "--json", config=config,
    )  # fmt: skip
    assert failing.returncode == 1 and json.loads(failing.stdout)["state"] == "failed"

    listed = conveyor("jobs", "list", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    assert [j["id"] for j in json.loads(listed.stdout)][1] == job["id"]  # newest first

    watched = conveyor("jobs", "watch", job["id"], "--json", config=config)
    kinds = [json.loads(line)["type"] for line in watched.stdout.splitlines()]
    assert watched.returncode == 0 and kinds[0] == "created" and kinds[-1] == "completed"

    assert conveyor("logout", config=config).returncode == 0
    assert not config.exists()
    gone = conveyor("jobs", "list", "--url", server.url, config=config)
    assert "not logged in" in one_clear_line(gone)


def test_bad_input_and_api_errors_are_one_clear_line(
    server: LiveServer, ada: User, config: Path
) -> None:
    log_in(server, config)
    bad_json = conveyor("submit", "sleep", "--payload", "{bad", config=config)
    assert "--payload is not valid JSON" in one_clear_line(bad_json)
    unknown = conveyor("submit", "no-such-type", config=config)
    assert "unknown job type 'no-such-type'" in one_clear_line(unknown)
    invalid = conveyor("submit", "sleep", "--payload", '{"seconds": -1}', config=config)
    line = one_clear_line(invalid)
    assert "invalid payload for job type 'sleep'" in line and "seconds:" in line
    missing = conveyor("jobs", "get", "01a00000-0000-7000-8000-000000000000", config=config)
    assert "(not_found)" in one_clear_line(missing)

    saved = json.loads(config.read_text())
    config.write_text(json.dumps({**saved, "access_token": "x", "refresh_token": "y"}))
    expired = conveyor("jobs", "list", config=config)
    assert one_clear_line(expired) == "error: log in again: conveyor login"

    wrong = conveyor(
        "login", "--url", server.url, "--email", EMAIL, "--password-stdin",
        config=config, stdin="nope\n",
    )  # fmt: skip
    assert one_clear_line(wrong) == "error: wrong e-mail or password"


def test_a_server_that_is_down_is_one_clear_line(config: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    down = conveyor("jobs", "list", "--url", url, "--api-key", "cvk_x", config=config)
    assert one_clear_line(down) == f"error: cannot reach {url}: is the server running?"


runner = CliRunner()


def test_api_key_jobs_and_schedules_in_process(
    server: LiveServer, ada: User, config: Path, tmp_path: Path
) -> None:
    key = server.api_key(ada)
    env = {"CONVEYOR_API_KEY": key, "CONVEYOR_URL": server.url}
    parked = runner.invoke(app, ["submit", "noop", "--delay", "3600", "--json"], env=env)
    assert parked.exit_code == 0, parked.output
    job_id = json.loads(parked.output)["id"]
    shown = runner.invoke(app, ["jobs", "get", job_id], env=env, terminal_width=200)
    assert job_id in shown.output and "scheduled" in shown.output
    table = runner.invoke(app, ["jobs", "list", "--state", "scheduled"], env=env)
    assert "1 job(s)" in table.output
    assert "cancelled" in runner.invoke(app, ["jobs", "cancel", job_id, "--json"], env=env).output
    assert '"queued"' in runner.invoke(app, ["jobs", "retry", job_id, "--json"], env=env).output

    made = runner.invoke(
        app, ["schedules", "create", "nightly", "--cron", "0 3 * * *", "--type", "noop", "--json"],
        env=env,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    schedule_id = json.loads(made.output)["id"]
    for verb, paused in (("pause", True), ("resume", False)):
        done = runner.invoke(app, ["schedules", verb, schedule_id, "--json"], env=env)
        assert json.loads(done.output)["paused"] is paused
    listed = runner.invoke(app, ["schedules", "list", "--json"], env=env)
    assert [s["id"] for s in json.loads(listed.output)] == [schedule_id]
    assert runner.invoke(app, ["schedules", "delete", schedule_id], env=env).exit_code == 0
    assert json.loads(runner.invoke(app, ["schedules", "list", "--json"], env=env).output) == []

    template = tmp_path / "nightly.json"
    template.write_text(json.dumps({"name": "nightly", "steps": [{"name": "a", "type": "noop"}]}))
    made = runner.invoke(
        app, ["schedules", "create", "wf", "--cron", "0 3 * * *", "--workflow", str(template),
              "--json"],
        env=env,
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    shown = json.loads(made.output)
    assert shown["type"] is None and shown["workflow"]["steps"][0]["name"] == "a"
    both = ["schedules", "create", "x", "--cron", "0 3 * * *", "--type", "noop"]
    refused = runner.invoke(app, [*both, "--workflow", str(template)], env=env)
    assert refused.exit_code == 2

    # A new template, by the schedule's name; a bad one is refused and changes nothing.
    template.write_text(json.dumps({"name": "report", "steps": [{"name": "b", "type": "noop"}]}))
    update = ["schedules", "update", "wf", "--workflow", str(template), "--json"]
    changed = runner.invoke(app, update, env=env)
    assert changed.exit_code == 0, changed.output
    assert json.loads(changed.output)["workflow"]["name"] == "report"
    template.write_text(json.dumps({"name": "bad", "steps": [{"name": "b", "type": "nope"}]}))
    refused = runner.invoke(app, update, env=env)
    assert refused.exit_code != 0 and "steps.0.type" in refused.output
    shown = json.loads(runner.invoke(app, ["schedules", "list", "--json"], env=env).output)
    assert [s["workflow"]["name"] for s in shown] == ["report"]
    missing = runner.invoke(app, ["schedules", "update", "nope", "--cron", "0 1 * * *"], env=env)
    assert missing.exit_code != 0 and "no schedule named 'nope'" in missing.output


def test_the_login_file_is_private_even_over_an_old_one(config: Path) -> None:
    from conveyor.cli.login import SavedLogin, save_login

    config.parent.mkdir(parents=True, mode=0o755)
    config.write_text("{}")
    os.chmod(config, 0o644)
    save_login(SavedLogin("http://x", "a@b.c", "t", "r"))
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700


def test_login_prompts_and_payload_from_a_file(
    server: LiveServer, ada: User, config: Path, tmp_path: Path
) -> None:
    prompted = runner.invoke(app, ["login", "--url", server.url], input=f"{EMAIL}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    assert f"logged in to {server.url} as {EMAIL}" in prompted.output
    assert PASSWORD not in prompted.output  # the password is not echoed
    payload = tmp_path / "payload.json"
    payload.write_text('{"seconds": 0, "steps": 1}')
    done = runner.invoke(app, ["submit", "sleep", "--payload", f"@{payload}", "--wait", "--json"])
    assert done.exit_code == 0, done.output
    assert '"state": "completed"' in done.output
    missing = runner.invoke(app, ["submit", "sleep", "--payload", "@/no/such/file.json"])
    assert missing.exit_code == 2 and "cannot read /no/such/file.json" in missing.output
