"""The lock-order rule: every write that changes several jobs rows locks them in id order."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import ColumnElement, any_, func, select

from conveyor.store.tables import jobs


def locked_in_id_order(pick: Sequence[ColumnElement[bool]]) -> ColumnElement[bool]:
    """`jobs.id IN` the rows matching `pick`, locked first in id order by a CTE.

    Every write that changes several jobs rows in one statement takes its row locks in this
    one global order, so two such writes (a worker's heartbeat and its batched finish, a
    bulk cancel, a release) wait for each other instead of deadlocking: without it each
    locks rows in its own plan's order. FOR UPDATE under ORDER BY locks in the sorted
    order. The caller keeps its fence on the outer statement as well: a row that changed
    while we waited for its lock is re-checked there. (PostgreSQL's; SQLite has one writer
    at a time and no row locks, so it needs no order. The finish statements of
    sql/postgres.sql lock the same way, by hand.)

    The statement takes the locked rows by primary key (`= ANY(ARRAY(...))`, computed once):
    as `IN (SELECT ...)` a planner without statistics (a table just filled faster than
    autovacuum analyzes it) joined the CTE to every row of the fence's index instead, once
    per row: a prune slice of 500 behind 6,000 finished rows read ~3M index entries
    (tests/store/test_maintenance.py).
    """
    locked = select(jobs.c.id).where(*pick).order_by(jobs.c.id).with_for_update().cte("locked")
    return jobs.c.id == any_(func.array(select(locked.c.id).scalar_subquery()))
