"""A job's `callback_url` in its API output: on submission (single and batch), on reads, on
every listing (cursor and offset pages), on cancel; null for jobs without one. A page reads
the side table in one query, however many jobs it holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from conveyor.store.database import Database
from tests.api.conftest import Api, api_settings, running_api

CB = "http://127.0.0.1:9/done"


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    """Callbacks to loopback are allowed here (ALLOW_PRIVATE_URLS)."""
    async with running_api(api_settings(db_url, tmp_path, allow_private_urls=True)) as running:
        yield running


@contextmanager
def statements_on(db: Database, table: str) -> Iterator[list[str]]:
    """The SQL statements that name `table`, run through either engine while inside."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if table in statement:
            seen.append(statement)

    engines = {id(e.sync_engine): e.sync_engine for e in (db.reader, db.writer)}.values()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_callback_url_is_shown_wherever_the_job_is(api: Api) -> None:
    alice = await api.user("alice@example.com")
    await api.client.post("/api/v1/webhooks/callback-secret", headers=alice)
    r = await api.client.post(
        "/api/v1/jobs", json={"type": "noop", "callback_url": f"{CB}?one"}, headers=alice
    )
    assert r.status_code == 201 and r.json()["callback_url"] == f"{CB}?one", r.text
    single = r.json()["id"]
    jobs: list[dict[str, Any]] = [{"type": "noop", "callback_url": f"{CB}?{i}"} for i in range(20)]
    jobs += [{"type": "noop"}] * 20
    r = await api.client.post("/api/v1/jobs/batch", json={"jobs": jobs}, headers=alice)
    assert r.status_code == 201, r.text
    assert [j["callback_url"] for j in r.json()] == [j.get("callback_url") for j in jobs]
    expected = {j["id"]: sent.get("callback_url") for j, sent in zip(r.json(), jobs, strict=True)}
    expected[single] = f"{CB}?one"

    r = await api.client.get(f"/api/v1/jobs/{single}", headers=alice)
    assert r.json()["callback_url"] == f"{CB}?one"
    db = api.engine.backend.db
    for query in ("limit=100", "sort=-created_at&limit=100"):
        with statements_on(db, "job_callbacks") as seen:
            r = await api.client.get(f"/api/v1/jobs?{query}", headers=alice)
        assert r.status_code == 200, r.text
        assert {j["id"]: j["callback_url"] for j in r.json()["items"]} == expected
        assert len(seen) == 1, seen  # one query for the page of 41 jobs
    r = await api.client.post(f"/api/v1/jobs/{single}/cancel", headers=alice)
    assert r.status_code == 200 and r.json()["callback_url"] == f"{CB}?one", r.text

    bob = await api.user("bob@example.com")
    r = await api.client.post("/api/v1/jobs", json={"type": "noop"}, headers=bob)
    assert r.json()["callback_url"] is None
    r = await api.client.get("/api/v1/jobs", headers=bob)
    assert [j["callback_url"] for j in r.json()["items"]] == [None]
