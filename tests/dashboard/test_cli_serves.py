"""`conveyor run`, a real OS process, serves the dashboard and its static files."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.dashboard.conftest import csrf_of
from tests.net.world import free_port
from tests.support.processes import Cluster, eventually

pytestmark = pytest.mark.slow


async def test_conveyor_run_serves_the_dashboard(db_url: str, tmp_path: Path) -> None:
    cluster = Cluster(db_url, tmp_path)
    port = free_port()
    settings = {
        "port": str(port),
        "data_dir": str(tmp_path / "data"),
        "secret_key": "test-secret-key-that-is-long-enough-for-hs256",
        "admin_email": "admin@example.com",
        "admin_password": "admin-password-123",
        "argon2_time_cost": "1",
        "argon2_memory_kib": "1024",
    }
    proc = cluster.spawn("run", ["run"], settings)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5, trust_env=False) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/health")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout=60, what=f"conveyor run on port {port}")
            form = await client.get("/dashboard/login")
            assert form.status_code == 200
            data = {"login": "admin", "password": "admin-password-123"}
            r = await client.post(
                "/dashboard/login", data={**data, "csrf_token": csrf_of(form.text)}
            )
            assert r.status_code == 303, r.text
            page = await client.get("/dashboard/")
            assert page.status_code == 200 and "<svg" in page.text
            css = await client.get("/dashboard/static/dashboard.css")
            assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    finally:
        cluster.close()
    assert proc.popen.poll() is not None
