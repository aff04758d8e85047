"""The CLI's side of flow control: `conveyor users flow` (straight on the database) and
`conveyor limits` (a client of the server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli.app import app
from tests.api.conftest import api_settings
from tests.support.live import LiveServer, live_server

runner = CliRunner()


def test_users_flow_sets_weight_and_quotas(env: Path) -> None:
    made = runner.invoke(app, ["users", "create", "ada@example.com", "--password", "pass-word-1"])
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, ["users", "flow", "ada@example.com"])
    assert shown.exit_code == 0, shown.output
    assert "weight 1, max queued default, max running default" in shown.output
    args = ["--weight", "2.5", "--max-queued", "100", "--max-running", "0"]
    done = runner.invoke(app, ["users", "flow", "ada@example.com", *args])
    assert done.exit_code == 0, done.output
    assert "weight 2.5, max queued 100, max running none" in done.output
    back = runner.invoke(app, ["users", "flow", "ada@example.com", "--max-queued", "default"])
    assert "weight 2.5, max queued default, max running none" in back.output
    listed = runner.invoke(app, ["users", "list"], terminal_width=250)
    assert "2.5" in listed.output
    for bad in (["--weight", "0"], ["--max-queued", "-1"], ["--weight", "lots"]):
        refused = runner.invoke(app, ["users", "flow", "ada@example.com", *bad])
        assert refused.exit_code == 2, refused.output
        assert "Traceback" not in refused.output
    nobody = runner.invoke(app, ["users", "flow", "nobody@example.com", "--weight", "2"])
    assert nobody.exit_code == 2 and "no account" in nobody.output


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    settings = api_settings(db_url, tmp_path, handler_modules="tests.support.flow_handlers")
    with live_server(settings) as running:
        yield running


def test_limits_lists_the_callers_keys(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_CLIENT_CONFIG", str(tmp_path / "login.json"))
    ada = server.user("ada@example.com")
    server.run(server.engine.queues.pause("parked"))  # its jobs stay ready
    env = {"CONVEYOR_API_KEY": server.api_key(ada), "CONVEYOR_URL": server.url}
    body = ["--payload", '{"customer": "acme"}', "--queue", "parked", "--json"]
    submitted = runner.invoke(app, ["submit", "per_customer", *body], env=env)
    assert submitted.exit_code == 0, submitted.output
    listed = runner.invoke(app, ["limits", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert {(r["name"], r["key"], r["ready"]) for r in rows} == {
        ("customer_calls", "acme", 1),
        ("customer_slots", "acme", 1),
    }
    table = runner.invoke(app, ["limits"], env=env, terminal_width=200)
    assert table.exit_code == 0 and "customer_slots" in table.output


def test_submit_puts_the_job_under_the_limits_given(
    server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_CLIENT_CONFIG", str(tmp_path / "login.json"))
    ada = server.user("ada@example.com")
    server.run(server.engine.jobs.define_limits())
    env = {"CONVEYOR_API_KEY": server.api_key(ada), "CONVEYOR_URL": server.url}
    limits = ["--limit", "per_account=acct=1", "--limit", "partner_api="]
    submitted = runner.invoke(app, ["submit", "partner_sync", *limits, "--json"], env=env)
    assert submitted.exit_code == 0, submitted.output
    job_id = json.loads(submitted.output)["id"]
    keys = server.run(server.engine.flow.limit_keys(job_id))
    assert keys == {"per_account": "acct=1", "partner_api": ""}
    for bad in (["--limit", "per_account"], ["--limit", "=x"]):
        refused = runner.invoke(app, ["submit", "partner_sync", *bad], env=env)
        assert refused.exit_code == 2 and "NAME=KEY" in refused.output, refused.output
    unknown = runner.invoke(app, ["submit", "partner_sync", "--limit", "nope=x"], env=env)
    assert unknown.exit_code != 0 and "does not allow limit 'nope'" in unknown.output
