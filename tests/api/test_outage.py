"""A database outage answers 503 (not 500) and loses nothing already accepted."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from tests.api.conftest import DEADLINE_S, api_settings, running_api
from tests.conftest import PG_ADMIN_DB, PG_HOST, PG_PORT, PG_USER


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=PG_ADMIN_DB)


async def _block(database: str, allowed: bool) -> None:
    conn = await _admin()
    try:
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
    finally:
        await conn.close()


async def test_postgres_outage_is_503_and_accepted_jobs_survive(
    db_url: str, tmp_path: Path
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("an outage of an embedded SQLite file is not a network event")
    database = db_url.rsplit("/", 1)[1]
    async with running_api(api_settings(db_url, tmp_path, db_request_timeout=DEADLINE_S)) as api:
        headers = await api.user("ada@example.com")
        accepted = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers)
        assert accepted.status_code == 201
        await _block(database, allowed=False)
        try:
            ready = await api.client.get("/ready")
            submit = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers)
            assert ready.status_code == 503
            assert submit.status_code == 503, submit.text
            assert submit.json()["error"]["code"] == "unavailable"
            assert int(submit.headers["Retry-After"]) >= 1
            assert int(ready.headers["Retry-After"]) >= 1
            assert "Traceback" not in submit.text
        finally:
            await _block(database, allowed=True)
        jobs = (await api.client.get("/api/v1/jobs", headers=headers)).json()["items"]
        assert [j["id"] for j in jobs] == [accepted.json()["id"]]
        assert (await api.client.get("/ready")).status_code == 200
