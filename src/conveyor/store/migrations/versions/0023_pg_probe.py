"""workflows (PostgreSQL): a release probe cheap for a join and for many small steps alike

Revision ID: 0023_pg_probe
Revises: 0022_sqlite_probe
Create Date: 2026-12-06 08:00:00.000000

PostgreSQL's release probes (0019's in `jobs_steps_settled`'s bump, kept by 0020; 0016's
verdict in `jobs_step_check`) went from the workflow's open (or failed) steps to the
dependent's edges: right for a big fan-in (the join's first open dependency is found at
once), quadratic for a workflow of many open steps that are not the dependent's (pairs,
chains, a map->reduce per item). One UPDATE settling the parents of 600 / 1,200 / 2,400
pairs took 1.75 / 5.8 / 21.9 s. Migration 0022 fixed the same on SQLite.

Now a probe first asks whether the dependent has more than `_FEW` edges (one probe of
job_dependencies' primary key by its job_id prefix, `OFFSET _FEW`): with at most `_FEW` it
goes from those edges to each parent's row by primary key, else from the workflow's open (or
failed) steps as before (a join of many). A CASE runs only the branch it takes, each a
subplan per dependent (`OFFSET 0` keeps the planner from hashing or joining it).

Read with auto_explain (log_nested_statements), two more reads were per released step: its
UPDATE served `state = 'waiting'` from ix_jobs_finished (every waiting step of the database,
without statistics; now `IS NOT DISTINCT FROM`, the same test for a NOT NULL column, which no
index serves, beside the id), and `conveyor_release_tag`'s `max(fair_tag)` read every queued
step of the key (now the index's last entry). Rows read for the parents of 100 / 400 pairs:
51k / 897k before, linear after (tests/store/test_workflows.py). Left as they are: the bump
still finds its dependents among every waiting step of the database (ix_jobs_finished, per
statement, not per dependent), the workflow's settle probes ix_jobs_workflow_open and
ix_jobs_workflow_bad. SQLite is untouched (0022).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0023_pg_probe"
down_revision = "0022_sqlite_probe"
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
_OPEN: str = _0016._OPEN
_BAD: str = _0016._BAD

# Up to this many dependencies a probe starts from the dependent's edges (as 0022's).
_FEW = 16


def _probe(step: str, workflow: str, states: str, edge: str) -> str:
    """Whether `step` has a dependency in `states`: from its edges when it has few (each
    parent by primary key), else from the workflow's steps in `states` (partial indexes) to
    its edges, as before."""
    return f"""(CASE WHEN NOT EXISTS (SELECT 1 FROM job_dependencies AS k
                WHERE k.job_id = {step} OFFSET {_FEW})
            THEN EXISTS (SELECT 1 FROM job_dependencies AS {edge}
                WHERE {edge}.job_id = {step} AND EXISTS (SELECT 1 FROM jobs AS p
                    WHERE p.id = {edge}.depends_on AND p.state IN {states} OFFSET 0))
            ELSE EXISTS (SELECT 1 FROM jobs AS p
                WHERE p.workflow_id = {workflow} AND p.state IN {states}
                    AND EXISTS (SELECT 1 FROM job_dependencies AS {edge}
                        WHERE {edge}.job_id = {step} AND {edge}.depends_on = p.id OFFSET 0))
            END)"""


# `state = 'waiting'` beside a key: without statistics the planner served it from
# ix_jobs_finished (state, finished_at), reading every waiting step of the database per
# statement. IS NOT DISTINCT FROM (state is NOT NULL) is the same test no index serves.
_WAITING = "IS NOT DISTINCT FROM 'waiting'"

# ---- conveyor_steps_settled (0020): the bump's "nothing open" probe --------------------------
_DECIDABLE_0020 = f"""OR NOT EXISTS (SELECT 1 FROM jobs AS p
                    WHERE p.workflow_id = j.workflow_id AND p.state IN {_OPEN}
                        AND EXISTS (SELECT 1 FROM job_dependencies AS e2
                            WHERE e2.job_id = j.id AND e2.depends_on = p.id OFFSET 0)))"""
_DECIDABLE = f"OR NOT {_probe('j.id', 'j.workflow_id', _OPEN, 'e2')})"
_SETTLED_0020: str = _0020._PG_SETTLED_FUNCTION
_SETTLED = _0020._replaced(_SETTLED_0020, _DECIDABLE_0020, _DECIDABLE)

# ---- conveyor_step_check (0016, 0020's tag): the verdict's two probes ------------------------
_CHECK_0020: str = _0020._replaced(_0016._PG_CHECK_FUNCTION, _0020._PG_TAG_0016, _0020._PG_TAG)


def _verdict_probe(states: str) -> str:
    return f"""    SELECT EXISTS (
        SELECT 1 FROM jobs AS p
        WHERE p.workflow_id = NEW.workflow_id AND p.state IN {states}
            AND EXISTS (SELECT 1 FROM job_dependencies AS e
                WHERE e.job_id = NEW.id AND e.depends_on = p.id OFFSET 0)
    ) INTO"""


_COMMENT_0016 = """    -- From the workflow's side: its failed or cancelled steps, then its unsettled ones (few
    -- of either near the end of a fan-in; partial indexes), each matched against this
    -- step's edges by primary key (OFFSET 0 keeps that probe a subplan per step: as a
    -- join, the planner read all of this step's edges). Counting this step's edges instead
    -- cost O(fan-in) per dependency that settled.
"""
_COMMENT = f"""    -- With at most {_FEW} edges (one probe of the primary key, OFFSET {_FEW}): from this
    -- step's edges to each parent by primary key. Else from the workflow's side: its failed
    -- or cancelled steps, then its unsettled ones (few of either near the end of a fan-in;
    -- partial indexes), each matched against this step's edges by primary key (OFFSET 0
    -- keeps each probe a subplan: as a join, the planner read all of this step's edges).
"""
_CHECK = _0020._replaced(
    _0020._replaced(
        _0020._replaced(_CHECK_0020, _COMMENT_0016, _COMMENT),
        _verdict_probe(_BAD),
        f"    SELECT {_probe('NEW.id', 'NEW.workflow_id', _BAD, 'e')} INTO",
    ),
    _verdict_probe(_OPEN),
    f"    SELECT {_probe('NEW.id', 'NEW.workflow_id', _OPEN, 'e')} INTO",
)
_CHECK = _0020._replaced(
    _CHECK, "    WHERE id = NEW.id AND state = 'waiting';\n",
    f"    WHERE id = NEW.id AND state {_WAITING};\n",
)  # fmt: skip


# ---- conveyor_release_tag (0020): the key's last tag --------------------------------------
# max() over ix_jobs_fair read every queued step of the key (all not yet all-visible: a heap
# fetch each) per release: quadratic for a release of many keyed steps. The index's last
# entry for (queue, priority, key) is the same value (fair_tag is NOT NULL; SQLite asks so).
_LAST_0020 = """    SELECT max(j.fair_tag) INTO l FROM jobs AS j
    WHERE j.state = 'queued' AND j.queue = q AND j.priority = prio
        AND j.fair_key = fkey AND j.fair_key IS NOT NULL;
"""
_LAST = """    SELECT j.fair_tag INTO l FROM jobs AS j
    WHERE j.state = 'queued' AND j.queue = q AND j.priority = prio
        AND j.fair_key = fkey AND j.fair_key IS NOT NULL
    ORDER BY j.fair_tag DESC LIMIT 1;
"""
_TAG_0020: str = _0020._PG_TAG_FUNCTION
_TAG = _0020._replaced(_TAG_0020, _LAST_0020, _LAST)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SETTLED)
        op.execute(_CHECK)
        op.execute(_TAG)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SETTLED_0020)
        op.execute(_CHECK_0020)
        op.execute(_TAG_0020)
