"""workflows: the workflows table, steps as jobs, their edges, and the release triggers

Revision ID: 0016_workflows
Revises: 0015_quota_index
Create Date: 2026-12-05 21:30:00.000000

A step waits (`waiting`) until every step it depends on settled. Release is a database
predicate recomputed from the edge rows in the transaction of the state change that settles
a dependency, by two triggers on each database (docs/workflows.md, "Release"):

- `jobs_step_settled` (AFTER UPDATE OF state, a workflow's step whose new state is settled)
  bumps `dep_checks` of each waiting dependent (on PostgreSQL after locking the workflow row,
  then the dependents in id order), then settles the workflow when it was the last step;
- `jobs_step_check` (AFTER UPDATE OF dep_checks, the step still waiting) recomputes the
  step's predicate from its edges: a failed or cancelled dependency applies its policy
  (cancel: cancelled; skip: skipped), else once every dependency is settled it is queued
  (ready_at = run_at = now, a wake-up on its queue). A step it settles fires the first
  trigger again for its own dependents (SQLite: `PRAGMA recursive_triggers`, set on every
  connection by store/database.py).

Each change writes its event row in the same transaction: PostgreSQL takes the outbox lock
first and keys it as the Core writers do (store/outbox.py's horizon); SQLite has one writer.
The jobs.state CHECK gains 'waiting' and 'skipped': SQLite recreates the table, so the rows
of the tables that cascade from jobs are kept aside and put back, and 0012's triggers are
made again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import UTCDateTime

revision = "0016_workflows"
down_revision = "0015"
branch_labels = None
depends_on = None

_OLD_STATES = "'scheduled', 'queued', 'running', 'retrying', 'completed', 'failed', 'cancelled'"
_NEW_STATES = (
    "'waiting', 'scheduled', 'queued', 'running', 'retrying', 'completed', 'failed', "
    "'cancelled', 'skipped'"
)
_SETTLED = "('completed', 'failed', 'cancelled', 'skipped')"
# Unsettled, spelled positively: the predicate of ix_jobs_workflow_open, which the "was that
# the workflow's last step?" probe must repeat for the index to serve it.
_OPEN = "('waiting', 'scheduled', 'queued', 'running', 'retrying')"
_BAD = "('failed', 'cancelled')"  # ix_jobs_workflow_bad's predicate

# ---- PostgreSQL ---------------------------------------------------------------------------
_PG_XID = "greatest(txid_current(), pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
_PG_SETTLED_FUNCTION = f"""
CREATE OR REPLACE FUNCTION conveyor_step_settled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The workflow row first, then the dependents in id order: every settling step of a
    -- workflow takes its locks in this one order.
    PERFORM 1 FROM workflows WHERE id = NEW.workflow_id FOR UPDATE;
    UPDATE jobs SET dep_checks = jobs.dep_checks + 1
    WHERE jobs.id IN (
        SELECT j.id FROM jobs AS j JOIN job_dependencies AS e ON e.job_id = j.id
        WHERE e.depends_on = NEW.id AND j.state = 'waiting'
        ORDER BY j.id FOR UPDATE OF j
    ) AND jobs.state = 'waiting';
    IF NOT EXISTS (SELECT 1 FROM jobs
        WHERE workflow_id = NEW.workflow_id AND state IN {_OPEN}) THEN
        LOCK TABLE events IN ROW EXCLUSIVE MODE;
        WITH settled AS (
            UPDATE workflows SET
                state = CASE
                    WHEN EXISTS (SELECT 1 FROM jobs WHERE workflow_id = NEW.workflow_id
                        AND state = 'failed') THEN 'failed'
                    WHEN EXISTS (SELECT 1 FROM jobs WHERE workflow_id = NEW.workflow_id
                        AND state = 'cancelled') THEN 'cancelled'
                    ELSE 'completed' END,
                settled_at = clock_timestamp(), updated_at = clock_timestamp()
            WHERE id = NEW.workflow_id AND state = 'running'
            RETURNING id, owner_id, name, state
        )
        INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt,
            data, created_at)
        SELECT {_PG_XID}, 'workflow', s.id, s.owner_id, '', s.name, s.state, 0, NULL,
            clock_timestamp()
        FROM settled AS s;
    END IF;
    RETURN NULL;
END
$$
"""
_PG_CHECK_FUNCTION = f"""
CREATE OR REPLACE FUNCTION conveyor_step_check() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    open_deps boolean;
    bad_deps boolean;
    target text;
    changed integer;
BEGIN
    -- From the workflow's side: its failed or cancelled steps, then its unsettled ones (few
    -- of either near the end of a fan-in; partial indexes), each matched against this
    -- step's edges by primary key (OFFSET 0 keeps that probe a subplan per step: as a
    -- join, the planner read all of this step's edges). Counting this step's edges instead
    -- cost O(fan-in) per dependency that settled.
    SELECT EXISTS (
        SELECT 1 FROM jobs AS p
        WHERE p.workflow_id = NEW.workflow_id AND p.state IN {_BAD}
            AND EXISTS (SELECT 1 FROM job_dependencies AS e
                WHERE e.job_id = NEW.id AND e.depends_on = p.id OFFSET 0)
    ) INTO bad_deps;
    SELECT EXISTS (
        SELECT 1 FROM jobs AS p
        WHERE p.workflow_id = NEW.workflow_id AND p.state IN {_OPEN}
            AND EXISTS (SELECT 1 FROM job_dependencies AS e
                WHERE e.job_id = NEW.id AND e.depends_on = p.id OFFSET 0)
    ) INTO open_deps;
    IF bad_deps AND NEW.on_dependency_failure = 'skip' THEN
        target := 'skipped';
    ELSIF bad_deps AND coalesce(NEW.on_dependency_failure, 'cancel') = 'cancel' THEN
        target := 'cancelled';
    ELSIF NOT open_deps THEN
        target := 'queued';
    ELSE
        RETURN NULL;
    END IF;
    LOCK TABLE events IN ROW EXCLUSIVE MODE;
    UPDATE jobs SET state = target,
        ready_at = CASE WHEN target = 'queued' THEN clock_timestamp() END,
        run_at = CASE WHEN target = 'queued' THEN clock_timestamp() ELSE run_at END,
        fair_tag = CASE WHEN target = 'queued' THEN extract(epoch FROM clock_timestamp())
            ELSE fair_tag END,
        finished_at = CASE WHEN target = 'queued' THEN NULL ELSE clock_timestamp() END
    WHERE id = NEW.id AND state = 'waiting';
    GET DIAGNOSTICS changed = ROW_COUNT;
    IF changed = 0 THEN
        RETURN NULL;  -- settled meanwhile by another path of this cascade
    END IF;
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    VALUES ({_PG_XID}, target, NEW.id, NEW.owner_id, NEW.queue, NEW.type, target,
        NEW.attempt, jsonb_build_object('reason',
            CASE WHEN target = 'queued' THEN 'dependencies settled' ELSE 'dependency failed' END),
        clock_timestamp());
    IF target = 'queued' THEN
        PERFORM pg_notify('conveyor_jobs', NEW.queue);
    END IF;
    RETURN NULL;
END
$$
"""
_PG_TRIGGERS = (
    f"""
CREATE TRIGGER jobs_step_settled
AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN (NEW.workflow_id IS NOT NULL AND OLD.state IS DISTINCT FROM NEW.state
    AND NEW.state IN {_SETTLED})
EXECUTE FUNCTION conveyor_step_settled()
""",
    """
CREATE TRIGGER jobs_step_check
AFTER UPDATE OF dep_checks ON jobs
FOR EACH ROW
WHEN (NEW.state = 'waiting')
EXECUTE FUNCTION conveyor_step_check()
""",
)

# ---- SQLite -------------------------------------------------------------------------------
_SQLITE_NOW = "(strftime('%Y-%m-%d %H:%M:%f', 'now') || '000')"
_SQLITE_WORKFLOW_STATE = """CASE
        WHEN EXISTS (SELECT 1 FROM jobs WHERE workflow_id = NEW.workflow_id
            AND state = 'failed') THEN 'failed'
        WHEN EXISTS (SELECT 1 FROM jobs WHERE workflow_id = NEW.workflow_id
            AND state = 'cancelled') THEN 'cancelled'
        ELSE 'completed' END"""
_SQLITE_LAST = f"""NOT EXISTS (SELECT 1 FROM jobs WHERE workflow_id = NEW.workflow_id
        AND state IN {_OPEN})"""
_SQLITE_SETTLED_TRIGGER = f"""
CREATE TRIGGER jobs_step_settled
AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN NEW.workflow_id IS NOT NULL AND OLD.state IS NOT NEW.state AND NEW.state IN {_SETTLED}
BEGIN
    UPDATE jobs SET dep_checks = dep_checks + 1
    WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id)
        AND state = 'waiting';
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    SELECT 0, 'workflow', w.id, w.owner_id, '', w.name, {_SQLITE_WORKFLOW_STATE}, 0, NULL,
        {_SQLITE_NOW}
    FROM workflows AS w
    WHERE w.id = NEW.workflow_id AND w.state = 'running' AND {_SQLITE_LAST};
    UPDATE workflows SET state = {_SQLITE_WORKFLOW_STATE}, settled_at = {_SQLITE_NOW},
        updated_at = {_SQLITE_NOW}
    WHERE id = NEW.workflow_id AND state = 'running' AND {_SQLITE_LAST};
END
"""
_SQLITE_PARENT = """EXISTS (SELECT 1 FROM jobs AS p CROSS JOIN job_dependencies AS e
            WHERE p.workflow_id = NEW.workflow_id AND p.state IN {states}
                AND e.job_id = NEW.id AND e.depends_on = p.id)"""
# The step's verdict, probed as on PostgreSQL (CROSS JOIN: SQLite keeps that join order,
# from the workflow's few failed or unsettled steps to this step's edges).
_SQLITE_VERDICT = f"""(SELECT CASE
        WHEN v.bad AND NEW.on_dependency_failure = 'skip' THEN 'skipped'
        WHEN v.bad AND coalesce(NEW.on_dependency_failure, 'cancel') = 'cancel'
            THEN 'cancelled'
        WHEN NOT v.open THEN 'queued'
        END
    FROM (SELECT {_SQLITE_PARENT.format(states=_BAD)} AS bad,
        {_SQLITE_PARENT.format(states=_OPEN)} AS open) AS v)"""
_SQLITE_CHECK_TRIGGER = f"""
CREATE TRIGGER jobs_step_check
AFTER UPDATE OF dep_checks ON jobs
FOR EACH ROW
WHEN NEW.state = 'waiting'
BEGIN
    INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt, data,
        created_at)
    SELECT 0, v.target, NEW.id, NEW.owner_id, NEW.queue, NEW.type, v.target, NEW.attempt,
        json_object('reason',
            CASE WHEN v.target = 'queued' THEN 'dependencies settled' ELSE 'dependency failed' END),
        {_SQLITE_NOW}
    FROM (SELECT {_SQLITE_VERDICT} AS target) AS v
    WHERE v.target IS NOT NULL;
    UPDATE jobs SET
        ready_at = CASE WHEN {_SQLITE_VERDICT} = 'queued' THEN {_SQLITE_NOW} END,
        run_at = CASE WHEN {_SQLITE_VERDICT} = 'queued' THEN {_SQLITE_NOW} ELSE run_at END,
        fair_tag = CASE WHEN {_SQLITE_VERDICT} = 'queued'
            THEN (julianday('now') - 2440587.5) * 86400.0 ELSE fair_tag END,
        finished_at = CASE WHEN {_SQLITE_VERDICT} = 'queued' THEN NULL ELSE {_SQLITE_NOW} END,
        state = {_SQLITE_VERDICT}
    WHERE id = NEW.id AND state = 'waiting' AND {_SQLITE_VERDICT} IS NOT NULL;
END
"""

# 0012's, made again after SQLite recreated the jobs table.
_SQLITE_0012 = (
    """
CREATE TRIGGER IF NOT EXISTS jobs_release_limit_slots
AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN OLD.state = 'running' AND NEW.state <> 'running' AND OLD.limited
BEGIN
    UPDATE limit_slots SET job_id = NULL WHERE job_id = OLD.id;
END
""",
    """
CREATE TRIGGER IF NOT EXISTS jobs_release_limit_slots_on_delete
AFTER DELETE ON jobs
FOR EACH ROW
WHEN OLD.state = 'running' AND OLD.limited
BEGIN
    UPDATE limit_slots SET job_id = NULL WHERE job_id = OLD.id;
END
""",
)
_CASCADED = ("job_callbacks", "job_limits")  # ON DELETE CASCADE from jobs


_OURS = ("uq_jobs_workflow_id_step", "ix_jobs_workflow_open", "ix_jobs_workflow_bad")


def _sqlite_indexes() -> list[tuple[str, str]]:
    """The jobs table's indexes as created (a recreate by batch mode loses their DESC)."""
    rows = op.get_bind().exec_driver_sql(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'"
        " AND sql IS NOT NULL"
    )
    return [(name, sql) for name, sql in rows]


def _sqlite_keep() -> list[tuple[str, str]]:
    for table in _CASCADED:
        op.execute(f"CREATE TEMP TABLE _kept_{table} AS SELECT * FROM {table}")
    return _sqlite_indexes()


def _sqlite_restore(indexes: list[tuple[str, str]]) -> None:
    for table in _CASCADED:
        op.execute(f"INSERT OR IGNORE INTO {table} SELECT * FROM _kept_{table}")
        op.execute(f"DROP TABLE _kept_{table}")
    for name, sql in indexes:
        op.execute(f"DROP INDEX IF EXISTS {name}")
        op.execute(sql)
    for trigger in _SQLITE_0012:
        op.execute(trigger)


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "workflows",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.Column("on_dependency_failure", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_workflows_state"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index("ix_workflows_owner_id", "workflows", ["owner_id", "id"])
    op.create_index("ix_workflows_settled_at", "workflows", ["settled_at"])
    op.create_index(
        "uq_workflows_owner_id_idempotency_key",
        "workflows",
        ["owner_id", "idempotency_key"],
        unique=True,
    )
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("depends_on", sa.String(36), nullable=False),
        sa.Column("workflow_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "depends_on", name=op.f("pk_job_dependencies")),
    )
    op.create_index("ix_job_dependencies_depends_on", "job_dependencies", ["depends_on"])
    op.create_index("ix_job_dependencies_workflow_id", "job_dependencies", ["workflow_id"])
    indexes = [] if pg else _sqlite_keep()
    with op.batch_alter_table("jobs", schema=None, recreate="auto" if pg else "always") as batch:
        batch.add_column(sa.Column("workflow_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("step", sa.String(100), nullable=True))
        batch.add_column(sa.Column("on_dependency_failure", sa.String(16), nullable=True))
        batch.add_column(sa.Column("ready_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("dep_checks", sa.Integer(), nullable=False, server_default="0"))
        batch.drop_constraint(op.f("ck_jobs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_state"), f"state IN ({_NEW_STATES})")
        batch.create_index("uq_jobs_workflow_id_step", ["workflow_id", "step"], unique=True)
        batch.create_index(
            "ix_jobs_workflow_bad",
            ["workflow_id"],
            postgresql_where=sa.text(f"state IN {_BAD}"),
            sqlite_where=sa.text(f"state IN {_BAD}"),
        )
        batch.create_index(
            "ix_jobs_workflow_open",
            ["workflow_id"],
            postgresql_where=sa.text(f"state IN {_OPEN}"),
            sqlite_where=sa.text(f"state IN {_OPEN}"),
        )
    if pg:
        op.execute(_PG_SETTLED_FUNCTION)
        op.execute(_PG_CHECK_FUNCTION)
        for trigger in _PG_TRIGGERS:
            op.execute(trigger)
    else:
        _sqlite_restore(indexes)
        op.execute(_SQLITE_SETTLED_TRIGGER)
        op.execute(_SQLITE_CHECK_TRIGGER)


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    on = " ON jobs" if pg else ""
    op.execute("DROP TRIGGER IF EXISTS jobs_step_check" + on)
    op.execute("DROP TRIGGER IF EXISTS jobs_step_settled" + on)
    if pg:
        op.execute("DROP FUNCTION IF EXISTS conveyor_step_check()")
        op.execute("DROP FUNCTION IF EXISTS conveyor_step_settled()")
    op.execute("DELETE FROM jobs WHERE workflow_id IS NOT NULL")
    indexes = [] if pg else [i for i in _sqlite_keep() if i[0] not in _OURS]
    with op.batch_alter_table("jobs", schema=None, recreate="auto" if pg else "always") as batch:
        batch.drop_index("ix_jobs_workflow_open")
        batch.drop_index("ix_jobs_workflow_bad")
        batch.drop_index("uq_jobs_workflow_id_step")
        batch.drop_constraint(op.f("ck_jobs_state"), type_="check")
        batch.create_check_constraint(op.f("ck_jobs_state"), f"state IN ({_OLD_STATES})")
        batch.drop_column("dep_checks")
        batch.drop_column("ready_at")
        batch.drop_column("on_dependency_failure")
        batch.drop_column("step")
        batch.drop_column("workflow_id")
    if not pg:
        _sqlite_restore(indexes)
    op.drop_table("job_dependencies")
    op.drop_table("workflows")
