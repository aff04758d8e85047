"""A fresh migrated PostgreSQL database per test, and how the tests look into it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import fresh_database

OWNER = "svc-orders"


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database's URL (postgresql://...)."""
    with fresh_database("postgres", request, tmp_path) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        yield url


def rows(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """What another session sees now (committed rows only)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def jobs_and_events(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The jobs (id, type, owner, state) and their events (job id, type) stored."""
    jobs = rows(url, "SELECT id, type, owner_id, state FROM jobs ORDER BY id")
    events = rows(url, "SELECT job_id, type FROM events ORDER BY id")
    return jobs, events
