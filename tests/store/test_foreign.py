"""store/foreign.py's pieces that need no database: the one parameter-style translation,
the never-suspending coroutine driver, and the refusal of connections it cannot use."""

from __future__ import annotations

import io

import pytest

from conveyor.store.drivers.postgres import SQL
from conveyor.store.foreign import UnsupportedConnection, opened, pyformat, run_sync


def test_pyformat_names_each_parameter_once_and_escapes_percent_signs() -> None:
    sql, args = pyformat("SELECT $1::int + $2, $1 % 4, '$x'", (7, 8))
    assert sql == "SELECT %(p1)s::int + %(p2)s, %(p1)s %% 4, '$x'"
    assert args == {"p1": 7, "p2": 8}


def test_pyformat_reads_two_digit_parameters_whole() -> None:
    sql, args = pyformat(SQL["enqueue_one"], list(range(1, 21)))
    assert "%(p20)s" in sql and "%(p2)s0" not in sql
    assert "$" not in sql
    assert args["p20"] == 20


def test_run_sync_returns_what_a_never_suspending_coroutine_returns() -> None:
    async def blocking() -> int:
        return 42

    assert run_sync(blocking()) == 42


def test_a_connection_it_cannot_use_is_refused_by_name() -> None:
    """(A sqlite3 connection is taken since the library enqueues on it: tests/library/
    test_sqlite3.py; something else is refused, naming its kind.)"""
    with pytest.raises(UnsupportedConnection, match=r"_io\.StringIO"):
        _enter(io.StringIO())


def _enter(conn: object) -> None:
    with opened(conn):
        pass  # pragma: no cover - refused before
