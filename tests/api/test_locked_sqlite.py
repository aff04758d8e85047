"""A SQLite file whose write lock another process holds answers a request that writes 503
with Retry-After within the request timeout, not after SQLite's long busy timeout; reads go
on (WAL), and writes succeed again once the lock is let go."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from conveyor.settings import sqlite_file
from tests.api.conftest import DEADLINE_S, api_settings, running_api

BOUND_S = 5.0  # the design answers within db_request_timeout (1.5 s); margin for a loaded box


async def test_locked_sqlite_answers_503_in_time(db_url: str, tmp_path: Path) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("SQLite's file lock")
    path = sqlite_file(db_url)
    assert path is not None
    async with running_api(api_settings(db_url, tmp_path, db_request_timeout=DEADLINE_S)) as api:
        headers = await api.user("ada@example.com")
        other = sqlite3.connect(path, isolation_level=None)  # another process's writer
        try:
            other.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            submit = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers)
            took = time.monotonic() - started
            assert submit.status_code == 503, submit.text
            assert int(submit.headers["Retry-After"]) >= 1
            assert took < BOUND_S, f"answered after {took:.1f} s"
            assert (await api.client.get("/ready")).status_code == 200  # reads are not locked
        finally:
            other.execute("ROLLBACK")
            other.close()
        again = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=headers)
        assert again.status_code == 201, again.text
