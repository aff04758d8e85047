"""workflows (SQLite): a release probe cheap for a join and for many small steps alike

Revision ID: 0022_sqlite_probe
Revises: 0021_schedule_limits
Create Date: 2026-12-06 07:30:00.000000

SQLite's release probes (0019's in `jobs_step_settled`, 0016's verdict in `jobs_step_check`)
went from the workflow's open (or failed) steps to the dependent's edges. That is right for
a big fan-in (the join's first open dependency is found at once) and quadratic for a
workflow of many open steps that are not the dependent's dependencies (pairs, chains, a
map->reduce per item): each probe scanned all of them, and `jobs_step_check` evaluated its
verdict about seven times per row (the event's INSERT, each SET expression, the WHERE). One
UPDATE settling the 600 parents of 600 pairs took 23-26 s (PostgreSQL: 1.5 s).

Now a probe first asks whether the dependent has more than `_FEW` edges (one seek by the
primary key's prefix, `OFFSET _FEW`): with at most `_FEW` it goes from those edges to each
parent's row by id, else from the workflow's open (or failed) steps as before (a join of
many). `jobs_step_check` computes its verdict once for the event's INSERT and once for its
UPDATE (UPDATE ... FROM, SQLite >= 3.33; a `LIMIT 1` keeps the derived row a row, not an
expression copied into each reference).

Measured on the way: without statistics SQLite served the bump's two `state = 'waiting'`
terms from ix_jobs_finished (state, finished_at), so each settle read every waiting step of
the database and 0019 probed each of them; and the settled workflow's state was probed by
state alone (every failed, then cancelled job of the database). The bump now goes from the
settling step's edges to each dependent by id, the state from ix_jobs_workflow_bad. Settling
the parents of N pairs costs ~1,400 virtual-machine steps per pair whatever N and whatever
else the database holds (before: 4x the pairs, ~49x the steps). PostgreSQL is left as it
is (its statement trigger takes 1.5 s for 600 pairs; SQLite took 23-26 s, now under 1 s).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0022_sqlite_probe"
down_revision = "0021_schedule_limits"
branch_labels = None
depends_on = None


def _module(name: str) -> ModuleType:
    """A migration module of this folder: its statements, to build on and to go back to."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"conveyor_migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0020 = _module("0020_release_set")
_0016: ModuleType = _0020._0016
_0019: ModuleType = _0020._0019
_OPEN: str = _0016._OPEN
_BAD: str = _0016._BAD
_NOW: str = _0016._SQLITE_NOW

# Up to this many dependencies a probe starts from the dependent's edges.
_FEW = 16


def _probe(step: str, workflow: str, states: str) -> str:
    """Whether `step` has a dependency in `states`: from its edges when it has few (each
    parent by id), else from the workflow's steps in `states` (partial indexes) to its edges.
    CROSS JOIN keeps each join's order; SQLite's CASE runs only the branch it takes."""
    return f"""(CASE WHEN NOT EXISTS (SELECT 1 FROM job_dependencies AS k
                WHERE k.job_id = {step} LIMIT 1 OFFSET {_FEW})
            THEN EXISTS (SELECT 1 FROM job_dependencies AS e CROSS JOIN jobs AS p
                WHERE e.job_id = {step} AND p.id = e.depends_on AND p.state IN {states})
            ELSE EXISTS (SELECT 1 FROM jobs AS p CROSS JOIN job_dependencies AS e
                WHERE p.workflow_id = {workflow} AND p.state IN {states}
                    AND e.job_id = {step} AND e.depends_on = p.id)
            END)"""


# ---- jobs_step_settled: 0019's bump, its probe changed and its plan pinned -----------------
# Without statistics SQLite served both `state = 'waiting'` terms from ix_jobs_finished
# (state, finished_at): every settle read every waiting step of the database, and 0019 ran
# its probe for each. Now: the settling step's edges (ix_job_dependencies_depends_on), each
# dependent by id (CROSS JOIN keeps that order), and the outer rows by id (`+state` is a
# term no index serves).
_DECIDABLE = f"(NEW.state IN {_BAD} OR NOT {_probe('j.id', 'NEW.workflow_id', _OPEN)})"
_BUMP = f"""    UPDATE jobs SET dep_checks = dep_checks + 1
    WHERE id IN (SELECT j.id FROM job_dependencies AS e CROSS JOIN jobs AS j ON j.id = e.job_id
        WHERE e.depends_on = NEW.id AND +j.state = 'waiting' AND {_DECIDABLE})
        AND +state = 'waiting';"""

# ---- jobs_step_check: 0020's text, its verdict computed once per statement ------------------
_VERDICT_0016: str = _0016._SQLITE_VERDICT
_VERDICT = f"""(SELECT CASE
        WHEN v.bad AND NEW.on_dependency_failure = 'skip' THEN 'skipped'
        WHEN v.bad AND coalesce(NEW.on_dependency_failure, 'cancel') = 'cancel'
            THEN 'cancelled'
        WHEN NOT v.open THEN 'queued'
        END
    FROM (SELECT {_probe("NEW.id", "NEW.workflow_id", _BAD)} AS bad,
        {_probe("NEW.id", "NEW.workflow_id", _OPEN)} AS open) AS v)"""
_CHECK_0020 = _0020._replaced(
    _0016._SQLITE_CHECK_TRIGGER,
    _0020._SQLITE_TAG_0016.format(verdict=_VERDICT_0016),
    _0020._SQLITE_TAG.format(verdict=_VERDICT_0016),
)
_EVENT_0020 = f"    FROM (SELECT {_VERDICT_0016} AS target) AS v\n"
_EVENT = f"    FROM (SELECT {_VERDICT} AS target LIMIT 1) AS v\n"
_UPDATE_0020 = f"""    UPDATE jobs SET
        ready_at = CASE WHEN {_VERDICT_0016} = 'queued' THEN {_NOW} END,
        run_at = CASE WHEN {_VERDICT_0016} = 'queued' THEN {_NOW} ELSE run_at END,
{_0020._SQLITE_TAG.format(verdict=_VERDICT_0016)}
        finished_at = CASE WHEN {_VERDICT_0016} = 'queued' THEN NULL ELSE {_NOW} END,
        state = {_VERDICT_0016}
    WHERE id = NEW.id AND state = 'waiting' AND {_VERDICT_0016} IS NOT NULL;
"""
_UPDATE = f"""    UPDATE jobs SET
        ready_at = CASE WHEN v.target = 'queued' THEN {_NOW} END,
        run_at = CASE WHEN v.target = 'queued' THEN {_NOW} ELSE jobs.run_at END,
{_0020._SQLITE_TAG.format(verdict="v.target")}
        finished_at = CASE WHEN v.target = 'queued' THEN NULL ELSE {_NOW} END,
        state = v.target
    FROM (SELECT {_VERDICT} AS target LIMIT 1) AS v
    WHERE jobs.id = NEW.id AND jobs.state = 'waiting' AND v.target IS NOT NULL;
"""
_CHECK: str = _0020._replaced(
    _0020._replaced(_CHECK_0020, _EVENT_0020, _EVENT), _UPDATE_0020, _UPDATE
)


def _sqlite_triggers(settled: str, check: str) -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_step_settled")
    op.execute(settled)
    op.execute("DROP TRIGGER IF EXISTS jobs_step_check")
    op.execute(check)


# The settled workflow's state: 0016's probes by state alone (ix_jobs_finished: every failed,
# then cancelled job of the database), now by the workflow's bad steps (ix_jobs_workflow_bad).
_STATE_0016: str = _0016._SQLITE_WORKFLOW_STATE
_STATE = f"""CASE
        WHEN EXISTS (SELECT 1 FROM jobs WHERE workflow_id = NEW.workflow_id
            AND state IN {_BAD} AND +state = 'failed') THEN 'failed'
        WHEN EXISTS (SELECT 1 FROM jobs WHERE workflow_id = NEW.workflow_id
            AND state IN {_BAD} AND +state = 'cancelled') THEN 'cancelled'
        ELSE 'completed' END"""


def _settled(bump: str, state: str = _STATE_0016) -> str:
    text: str = _0019._replaced(_0016._SQLITE_SETTLED_TRIGGER, _0019._SQLITE_BUMP_0016, bump)
    assert text.count(_STATE_0016) == 2, "0016's statement is not the one this migration edits"
    return text.replace(_STATE_0016, state)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        version = str(bind.exec_driver_sql("SELECT sqlite_version()").scalar_one())
        if tuple(int(part) for part in version.split(".")[:2]) < (3, 33):
            raise RuntimeError(f"SQLite {version}: the release trigger needs 3.33 (UPDATE FROM)")
        _sqlite_triggers(_settled(_BUMP, _STATE), _CHECK)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_triggers(_settled(_0019._SQLITE_BUMP), _CHECK_0020)
