"""`make load` for 10 s against a real `conveyor run` on a temp SQLite file: every scenario
makes requests and none fails (the CI smoke of the load suite, issue 17)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from load.summary import read_summary, requests_by_scenario

from tests.net.world import free_port
from tests.support.processes import CHILD_PYTHONPATH, ROOT, Cluster, clean_environ, eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ADMIN_PASSWORD = "load-smoke-admin-password"
STARTUP_S = 60.0  # a busy 2-core machine
SUITE_S = 150.0  # 10 s of load, the accounts before it and the users' stop after it
UNLIMITED = "1000000/minute"  # the suite measures the API, not its rate limits


async def test_ten_seconds_of_every_scenario_without_an_error(tmp_path: Path) -> None:
    cluster = Cluster(f"sqlite:///{tmp_path / 'conveyor.db'}", tmp_path)
    port = free_port()
    settings = {
        "port": str(port),
        "data_dir": str(tmp_path / "data"),
        "secret_key": "load-smoke-secret-key-long-enough-for-hs256",
        "admin_password": ADMIN_PASSWORD,
        "argon2_time_cost": "1",
        "argon2_memory_kib": "1024",
        "rate_limit_auth": UNLIMITED,
        "rate_limit_login_account": UNLIMITED,
        "rate_limit_submit": UNLIMITED,
        "rate_limit_jobs": UNLIMITED,
        # The 1.5 s per-operation deadline answers 503 when other tests starve the machine;
        # the smoke checks the suite, not that deadline (docs/deploy.md, "Load").
        "db_request_timeout": "60",
    }
    cluster.spawn("run", ["run"], settings)
    url = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _ready(url), timeout=STARTUP_S, what=f"conveyor on {url}")
        results = tmp_path / "results"
        suite = _run_suite(url, results)
    finally:
        cluster.close()
    assert suite.returncode == 0, f"{suite.stdout}\n{suite.stderr}\n{cluster.report()}"
    (figures,) = results.glob("*.json")
    summary = read_summary(figures)
    assert summary.errors == []
    made = requests_by_scenario(summary.rows)
    assert all(made.values()), made
    assert (results / figures.name.replace(".json", ".html")).stat().st_size > 0
    assert "wait over SSE" in suite.stdout  # the table was printed


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=5, trust_env=False) as client:
        try:
            return (await client.get("/ready")).status_code == 200
        except httpx.TransportError:
            return False


def _run_suite(url: str, results: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **clean_environ(),
        "PYTHONPATH": CHILD_PYTHONPATH,  # this tree's src/ and its root (the load package)
        "LOAD_URL": url,
        "LOAD_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOAD_DURATION": "10",
        "LOAD_USERS": "5",  # 4 API clients and 1 dashboard reader (weights 4:1)
        "LOAD_SPAWN_RATE": "5",
        "LOAD_RESULTS": str(results),
    }
    return subprocess.run(
        [sys.executable, "-m", "load.run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_S,
        check=False,
    )
