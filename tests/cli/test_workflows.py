"""`conveyor workflows ...` against a live server (typer's runner, in process), on both
databases: submit from a file and wait, list, get, watch, cancel, retry, delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli.app import app
from conveyor.services.accounts import User
from tests.api.conftest import api_settings
from tests.support.live import LiveServer, live_server
from tests.support.workflow_door_handlers import MODULE

runner = CliRunner()


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    settings = api_settings(db_url, tmp_path, handler_modules=MODULE, poll_interval=0.1)
    with live_server(settings) as running:
        yield running


@pytest.fixture
def env(server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("CONVEYOR_CLIENT_CONFIG", str(tmp_path / "login.json"))
    ada: User = server.user("ada@example.com")
    return {"CONVEYOR_API_KEY": server.api_key(ada), "CONVEYOR_URL": server.url}


def spec_file(tmp_path: Path, body: object) -> str:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(body))
    return str(path)


DIAMOND = {
    "name": "diamond",
    "steps": [
        {"name": "a", "type": "wf_ok", "payload": {"n": 1}},
        {"name": "b", "type": "wf_ok", "depends_on": ["a"]},
        {"name": "c", "type": "wf_ok", "depends_on": ["a"]},
        {"name": "d", "type": "wf_ok", "depends_on": ["b", "c"]},
    ],
}


def test_submit_wait_list_get_watch_delete(env: dict[str, str], tmp_path: Path) -> None:
    path = spec_file(tmp_path, DIAMOND)
    done = runner.invoke(app, ["workflows", "submit", path, "--wait", "--json"], env=env)
    assert done.exit_code == 0, done.output
    shown = json.loads(done.output)
    assert shown["state"] == "completed"
    assert {s["name"]: s["state"] for s in shown["steps"]} == dict.fromkeys("abcd", "completed")
    wid = shown["id"]

    listed = runner.invoke(app, ["workflows", "list", "--json"], env=env)
    assert [w["id"] for w in json.loads(listed.output)] == [wid]
    table = runner.invoke(app, ["workflows", "get", wid], env=env, terminal_width=200)
    assert table.exit_code == 0, table.output
    assert "completed" in table.output and "diamond" in table.output
    watched = runner.invoke(app, ["workflows", "watch", wid, "--json"], env=env)
    assert watched.exit_code == 0, watched.output
    lines = [json.loads(line) for line in watched.output.splitlines()]
    assert lines[-1]["type"] == "workflow" and lines[-1]["job"]["state"] == "completed"
    plain = runner.invoke(app, ["workflows", "watch", wid], env=env, terminal_width=200)
    assert plain.exit_code == 0 and "workflow" in plain.output.splitlines()[-1]

    gone = runner.invoke(app, ["workflows", "delete", wid], env=env)
    assert gone.exit_code == 0, gone.output
    assert json.loads(runner.invoke(app, ["workflows", "list", "--json"], env=env).output) == []


def test_a_failing_workflow_exits_1_and_can_be_retried_or_cancelled(
    env: dict[str, str], tmp_path: Path
) -> None:
    body = {"name": "breaks", "steps": [{"name": "a", "type": "wf_fail"}]}
    failed = runner.invoke(
        app, ["workflows", "submit", spec_file(tmp_path, body), "--wait", "--json"], env=env
    )
    assert failed.exit_code == 1, failed.output
    wid = json.loads(failed.output)["id"]
    retried = runner.invoke(app, ["workflows", "retry", wid, "--json"], env=env)
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.output)["state"] == "running"
    cancelled = runner.invoke(app, ["workflows", "cancel", wid, "--json"], env=env)
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.output)["state"] in ("cancelled", "failed")  # if it ran first


def test_bad_input_is_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    missing = runner.invoke(app, ["workflows", "submit", str(tmp_path / "nope.json")], env=env)
    assert missing.exit_code == 2 and "cannot read a workflow" in missing.output
    cyclic = {
        "name": "loop",
        "steps": [
            {"name": "a", "type": "wf_ok", "depends_on": ["b"]},
            {"name": "b", "type": "wf_ok", "depends_on": ["a"]},
        ],
    }
    refused = runner.invoke(app, ["workflows", "submit", spec_file(tmp_path, cyclic)], env=env)
    assert refused.exit_code == 2 and "cycle" in refused.output
    unknown = runner.invoke(app, ["workflows", "get", "no-such-id"], env=env)
    assert unknown.exit_code == 2 and "error" in unknown.output


def test_a_nested_workflow_from_a_file_runs_and_a_bad_one_is_named_where_declared(
    env: dict[str, str], tmp_path: Path
) -> None:
    inner = {"name": "inner", "depends_on": ["a"], "steps": [{"name": "x", "type": "wf_ok"}]}
    body = {"name": "nest", "steps": [{"name": "a", "type": "wf_ok"}, inner]}
    done = runner.invoke(
        app, ["workflows", "submit", spec_file(tmp_path, body), "--wait", "--json"], env=env
    )
    assert done.exit_code == 0, done.output
    shown = json.loads(done.output)
    assert {s["name"]: s["state"] for s in shown["steps"]} == {
        "a": "completed",
        "inner.x": "completed",
    }
    bad = {**body, "steps": [body["steps"][0], {**inner, "steps": [{"name": "x", "type": "?"}]}]}
    refused = runner.invoke(app, ["workflows", "submit", spec_file(tmp_path, bad)], env=env)
    assert refused.exit_code != 0 and "steps.1.steps.0.type" in refused.output
