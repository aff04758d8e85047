"""flow control (PostgreSQL): a statement's jobs that stop running free their slots at once

Revision ID: 0024_slot_release
Revises: 0023_pg_probe
Create Date: 2026-12-06 10:00:00.000000

0012's `jobs_release_limit_slots` ran once per limited row leaving 'running' (a finish of
64 limited jobs: 64 calls of the function, each its own UPDATE of limit_slots through
ix_limit_slots_job_id). It becomes `jobs_release_slots`, one call per UPDATE statement on
jobs with the statement's rows as transition tables (as 0020's `jobs_steps_settled`, whose
capture it shares: PostgreSQL keeps one per table and event). PostgreSQL refuses a column
list or a WHEN with those, so it fires for every UPDATE of jobs and returns at once when no
limited row was running before it (a claim, a heartbeat, a plain job's finish: one pass
over the statement's old rows). Otherwise one UPDATE frees the slots of the statement's
limited rows that left 'running', found through ix_limit_slots_job_id (`= ANY(ARRAY(...))`:
an index scan whatever the transition tables' size, which the planner cannot know). Still
in the transaction of the state change, for every path (finish, retry, fail, cancel,
rescue, release, an administrator's move): docs/flow-control.md, "No leaked slots".

The delete trigger stays per row: it fires for a running limited job only (rare), and a
statement-level one would capture every pruned row. SQLite keeps 0012's row triggers (one
writer; docs/flow-control.md, "Performance").
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0024_slot_release"
down_revision = "0023_pg_probe"
branch_labels = None
depends_on = None

# 0012's row trigger on UPDATE, made again by the downgrade (its function stays: the delete
# trigger's).
_0012 = Path(__file__).with_name("0012_limit_release_trigger.py")
_0012_TRIGGER: str = runpy.run_path(str(_0012))["_PG_TRIGGER"]

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION conveyor_release_slots() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM old_rows AS o WHERE o.limited AND o.state = 'running') THEN
        RETURN NULL;  -- no limited job was running (a claim, a heartbeat, a plain finish)
    END IF;
    UPDATE limit_slots SET job_id = NULL
    WHERE job_id = ANY(ARRAY(
        SELECT o.id FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id
        WHERE o.limited AND o.state = 'running' AND n.state <> 'running'));
    RETURN NULL;
END
$$
"""
_PG_TRIGGER = """
CREATE TRIGGER jobs_release_slots
AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT
EXECUTE FUNCTION conveyor_release_slots()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS jobs_release_limit_slots ON jobs")
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS jobs_release_slots ON jobs")
        op.execute("DROP FUNCTION IF EXISTS conveyor_release_slots()")
        op.execute(_0012_TRIGGER)
