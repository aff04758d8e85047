"""The named-SQL loader: statements by name, and shared conditions written once (fragments)."""

from __future__ import annotations

import pytest

from conveyor.store.drivers.postgres import SQL
from conveyor.store.sql import MissingStatement, parse

SOURCE = """
-- fragment: open
-- why it is shared (a reader's comment, left out)
state = 'queued'

-- name: first
-- what it does
SELECT id FROM jobs
WHERE
-- include: open

-- name: second
SELECT count(*) FROM jobs WHERE
    -- include: open
"""


def test_a_fragment_is_placed_where_each_statement_includes_it() -> None:
    assert parse(SOURCE) == {
        "first": "SELECT id FROM jobs\nWHERE\nstate = 'queued'",
        "second": "SELECT count(*) FROM jobs WHERE\nstate = 'queued'",
    }


def test_an_include_of_an_unknown_fragment_fails_at_load() -> None:
    with pytest.raises(MissingStatement, match="unknown fragment 'nothing'"):
        parse("-- name: a\nSELECT 1 WHERE\n-- include: nothing\n")


def test_a_fragment_nobody_includes_fails_at_load() -> None:
    with pytest.raises(MissingStatement, match="never included"):
        parse("-- fragment: spare\n1 = 1\n\n-- name: a\nSELECT 1\n")


def test_a_name_given_twice_fails_at_load() -> None:
    with pytest.raises(MissingStatement, match="named twice"):
        parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")


def test_a_fresh_single_job_is_enqueue_one_without_on_conflict() -> None:
    """`enqueue_fresh` (a single job without an idempotency or unique key) is `enqueue_one`
    less its ON CONFLICT: the same row, event, NOTIFY and arguments (shared fragments)."""
    assert "ON CONFLICT" not in SQL["enqueue_fresh"]
    assert SQL["enqueue_fresh"] == SQL["enqueue_one"].replace("\n    ON CONFLICT DO NOTHING", "")
