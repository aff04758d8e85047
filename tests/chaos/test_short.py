"""The short chaos run inside `make test`: a few worker SIGKILLs per database (these pass),
one database cut (issue #13 item 1, fixed: it passes), one process-pool crash (item 3,
fixed: it passes), limited jobs through two worker SIGKILLs per database (issue 15) and
workflows submitted while the database connection is cut (issue 16).
The full suite is `make chaos` (`python -m chaos.run`).

Every scenario judges with the total-queue check of `chaos.verdict` on what the handlers
recorded; the bounds are the scenarios' own, generous for a loaded machine. The row's
failures are the assertion's message.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos.scenarios import Where, limited_kills, outage, pool_crash, worker_kills
from chaos.verdict import Row
from chaos.workflows import workflow_cuts

from tests.conftest import PG_ADMIN_DB, pg_url

pytestmark = pytest.mark.slow
pytest.importorskip("asyncpg")


@pytest.fixture
def where(tmp_path: Path) -> Where:
    return Where(tmp_path, pg_url(PG_ADMIN_DB), lease=3.0)


def _passed(row: Row) -> None:
    assert row.passed, f"{row.scenario}/{row.db}: {'; '.join(row.failures() + row.notes)}"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.timeout(180)
async def test_worker_sigkills_lose_nothing(where: Where, kind: str) -> None:
    row = await worker_kills(where, kind, kills=3, workers=2)
    _passed(row)
    assert row.faults == "3 kill-worker"
    assert row.jobs >= 100


@pytest.mark.timeout(180)
async def test_database_cut_stops_nobody(where: Where) -> None:
    _passed(await outage(where, "postgres", fault="cut", seconds=4.0, light=True))


@pytest.mark.timeout(180)
async def test_process_pool_child_crash_costs_only_its_own_job(where: Where) -> None:
    _passed(await pool_crash(where, "sqlite"))


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.timeout(240)
async def test_limited_jobs_keep_their_limit_through_worker_sigkills(
    where: Where, kind: str
) -> None:
    """Per-key limit 2 (chosen at submit), two busy workers SIGKILLed while holding slots
    (the second right after a handler's end): no key over 2 at once, each job completed
    once but for the attempts a kill cut off before their completion was durable (run
    again: at-least-once), no slot leaked (the reconcile off)."""
    row = await limited_kills(where, kind, kills=2, workers=2)
    _passed(row)
    assert row.faults == "2 kill-worker"
    assert (row.over_limit, row.twice, row.leaked_slots) == (0, 0, 0)
    assert row.jobs >= 100


@pytest.mark.timeout(240)
async def test_workflows_submitted_through_a_database_cut_are_stored_whole_or_not_at_all(
    where: Where,
) -> None:
    """Workflows of 1,200 steps (two slices) and a join, submitted one after another
    through a cut of the database connection: none stored in part, each stored one
    completes, its join after all its steps, nothing lost or run twice unexplained."""
    row = await workflow_cuts(where, "postgres", cuts=1, seconds=2.0, steps=1_200)
    _passed(row)
    assert row.faults == "1 cut"
    assert row.jobs >= 1_201
