"""flow control: a job's concurrency slots are freed by the database when it stops running

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 04:20:00.000000

One trigger per database, fired in the transaction of every change of `jobs.state` away
from 'running' (a finish, a retry, a failure, a cancel, a rescue, a release at shutdown,
an administrator's move): no code path can forget to free a slot (docs/flow-control.md,
"No leaked slots"). It only fires for jobs under limits (`limited`); the others pay the
WHEN test alone.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION conveyor_release_limit_slots() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE limit_slots SET job_id = NULL WHERE job_id = OLD.id;
    RETURN NULL;
END
$$
"""
_PG_TRIGGER = """
CREATE TRIGGER jobs_release_limit_slots
AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN (OLD.state = 'running' AND NEW.state <> 'running' AND OLD.limited)
EXECUTE FUNCTION conveyor_release_limit_slots()
"""
_PG_DELETE_TRIGGER = """
CREATE TRIGGER jobs_release_limit_slots_on_delete
AFTER DELETE ON jobs
FOR EACH ROW
WHEN (OLD.state = 'running' AND OLD.limited)
EXECUTE FUNCTION conveyor_release_limit_slots()
"""
_SQLITE_TRIGGER = """
CREATE TRIGGER jobs_release_limit_slots
AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN OLD.state = 'running' AND NEW.state <> 'running' AND OLD.limited
BEGIN
    UPDATE limit_slots SET job_id = NULL WHERE job_id = OLD.id;
END
"""
_SQLITE_DELETE_TRIGGER = """
CREATE TRIGGER jobs_release_limit_slots_on_delete
AFTER DELETE ON jobs
FOR EACH ROW
WHEN OLD.state = 'running' AND OLD.limited
BEGIN
    UPDATE limit_slots SET job_id = NULL WHERE job_id = OLD.id;
END
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
        op.execute(_PG_DELETE_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)
        op.execute(_SQLITE_DELETE_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_release_limit_slots_on_delete" + _on())
    op.execute("DROP TRIGGER IF EXISTS jobs_release_limit_slots" + _on())
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS conveyor_release_limit_slots()")


def _on() -> str:
    return " ON jobs" if op.get_bind().dialect.name == "postgresql" else ""
