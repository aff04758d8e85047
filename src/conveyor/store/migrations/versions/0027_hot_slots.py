"""flow control (PostgreSQL): taking and freeing a slot is a HOT update

Revision ID: 0027_hot_slots
Revises: 0026_lean_indexes
Create Date: 2026-12-06 13:00:00.000000

A limited job's claim sets its slot's `job_id`, its finish clears it. With
`ix_limit_slots_job_id` on that column neither was a HOT update: each wrote a new entry into
the primary key and into that index (four index entries per limited job, WAL and CPU in
the claim's and the finish's transactions). Its readers were the release triggers (by the
job's id) and the reconcile (every held slot: a scan of a small table is as good). The
release now finds a job's slots through its `job_limits` rows (primary key job_id, name)
and the slot's primary key prefix (name, key): a key has `max_running` slots. So the index
goes, and the table leaves half of each page free for the new row versions (fillfactor 50:
HOT needs room on the same page; the table holds a few rows per key).

The delete trigger becomes BEFORE DELETE: after the delete, the foreign key's cascade has
already removed the job's `job_limits` rows (its trigger sorts first), and with them the
way to its slots. SQLite keeps the index and 0012's triggers: it has no HOT updates.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from alembic import op

revision = "0027_hot_slots"
down_revision = "0026_lean_indexes"
branch_labels = None
depends_on = None

_0024: dict[str, str] = runpy.run_path(str(Path(__file__).with_name("0024_slot_release.py")))
_0012: dict[str, str] = runpy.run_path(
    str(Path(__file__).with_name("0012_limit_release_trigger.py"))
)

# A statement's limited rows that left 'running', as 0024's; their slots through their
# job_limits rows, each probe by key (LATERAL ... OFFSET 0), then taken by address. Joined
# plainly, the planner scanned all of job_limits and hashed it (6,000 rows for 64 released
# jobs: a finish of 64 took 10 ms instead of 3, auto_explain).
_SLOTS_OF = """
    SELECT h.at FROM {jobs}
    CROSS JOIN LATERAL (SELECT jl.name, jl.key FROM job_limits AS jl
        WHERE jl.job_id = r.id OFFSET 0) AS jl
    CROSS JOIN LATERAL (SELECT sl.ctid AS at FROM limit_slots AS sl
        WHERE sl.name = jl.name AND sl.key = jl.key AND sl.job_id = r.id OFFSET 0) AS h
"""
_LEFT_RUNNING = """unnest(ARRAY(
            SELECT o.id FROM old_rows AS o JOIN new_rows AS n ON n.id = o.id
            WHERE o.limited AND o.state = 'running' AND n.state <> 'running')) AS r(id)"""
_RELEASE = f"""
CREATE OR REPLACE FUNCTION conveyor_release_slots() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM old_rows AS o WHERE o.limited AND o.state = 'running') THEN
        RETURN NULL;  -- no limited job was running (a claim, a heartbeat, a plain finish)
    END IF;
    UPDATE limit_slots AS s SET job_id = NULL
    WHERE s.ctid = ANY(ARRAY({_SLOTS_OF.format(jobs=_LEFT_RUNNING)})) AND s.job_id IS NOT NULL;
    RETURN NULL;
END
$$
"""
_DELETED = f"""
CREATE OR REPLACE FUNCTION conveyor_release_deleted_slots() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE limit_slots AS s SET job_id = NULL
    WHERE s.ctid = ANY(ARRAY({_SLOTS_OF.format(jobs="(SELECT OLD.id) AS r(id)")}))
        AND s.job_id IS NOT NULL;
    RETURN OLD;
END
$$
"""
_DELETE_TRIGGER = """
CREATE TRIGGER jobs_release_limit_slots_on_delete
BEFORE DELETE ON jobs
FOR EACH ROW
WHEN (OLD.state = 'running' AND OLD.limited)
EXECUTE FUNCTION conveyor_release_deleted_slots()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_RELEASE)
    op.execute(_DELETED)
    op.execute("DROP TRIGGER jobs_release_limit_slots_on_delete ON jobs")
    op.execute(_DELETE_TRIGGER)
    op.execute("DROP INDEX ix_limit_slots_job_id")
    op.execute("ALTER TABLE limit_slots SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE limit_slots RESET (fillfactor)")
    op.execute("CREATE INDEX ix_limit_slots_job_id ON limit_slots (job_id)")
    op.execute("DROP TRIGGER jobs_release_limit_slots_on_delete ON jobs")
    op.execute("DROP FUNCTION conveyor_release_deleted_slots()")
    op.execute(_0012["_PG_DELETE_TRIGGER"])
    op.execute(_0024["_PG_FUNCTION"])
