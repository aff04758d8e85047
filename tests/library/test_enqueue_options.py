"""`enqueue` and `aenqueue` take a job's options by keyword, typed (`EnqueueOptions`): a type
checker refuses an unknown one at the call (the `type: ignore`s below are needed, and mypy's
strict mode fails on an unneeded one), and so does Python, before anything is written."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import get_type_hints

import pytest

from conveyor.library.enqueue import EnqueueOptions, Job, aenqueue, enqueue
from tests.conftest import fresh_database
from tests.library.conftest import OWNER
from tests.library.handlers import blueprint


@pytest.fixture
def conn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The application's own connection to a fresh Conveyor SQLite file."""
    with fresh_database("sqlite", request, tmp_path) as url:
        opened = sqlite3.connect(url.split(":///", 1)[1])
        try:
            yield opened
        finally:
            opened.close()


def _stored(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    return conn.execute("SELECT type, queue, priority FROM jobs ORDER BY id").fetchall()


def test_the_options_are_the_fields_of_job() -> None:
    """`EnqueueOptions` names every field of `Job` after its type and payload, same types."""
    fields = [f.name for f in dataclasses.fields(Job)]
    assert fields[:2] == ["type", "payload"]
    hints = get_type_hints(Job)
    options = get_type_hints(EnqueueOptions)
    assert list(options) == fields[2:]
    assert options == {name: hints[name] for name in fields[2:]}


def test_an_unknown_option_is_a_type_error_and_writes_nothing(conn: sqlite3.Connection) -> None:
    with pytest.raises(TypeError, match="prority"):
        enqueue(conn, "lib_order", {"order_id": 1}, owner=OWNER, registry=blueprint, prority=5)  # type: ignore[call-arg]
    assert _stored(conn) == []
    done = enqueue(conn, "lib_order", {"order_id": 2}, owner=OWNER, registry=blueprint,
                   queue="rush", priority=5, delay=0.0, tags=["a"])  # fmt: skip
    conn.commit()
    assert not done.duplicate
    assert _stored(conn) == [("lib_order", "rush", 5)]


async def test_aenqueue_refuses_an_unknown_option_before_using_its_connection() -> None:
    with pytest.raises(TypeError, match="timeout_s"):
        await aenqueue(object(), "lib_order", {"order_id": 1}, registry=blueprint, timeout_s=3)  # type: ignore[call-arg]
