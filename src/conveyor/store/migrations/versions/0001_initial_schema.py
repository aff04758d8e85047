"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 17:21:59.262675
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import conveyor.store.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "lease_expires_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("progress_message", sa.Text(), nullable=True),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "errors",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("schedule_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('scheduled', 'queued', 'running', 'retrying', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_jobs_state"),
        ),
        sa.CheckConstraint("max_attempts >= 1", name=op.f("ck_jobs_max_attempts")),
        sa.CheckConstraint("progress BETWEEN 0 AND 100", name=op.f("ck_jobs_progress")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_claim",
            ["queue", sa.literal_column("priority DESC"), "run_at", "id"],
            unique=False,
            postgresql_where=sa.text("state = 'queued'"),
            sqlite_where=sa.text("state = 'queued'"),
        )
        batch_op.create_index(
            "ix_jobs_due",
            ["run_at"],
            unique=False,
            postgresql_where=sa.text("state IN ('scheduled', 'retrying')"),
            sqlite_where=sa.text("state IN ('scheduled', 'retrying')"),
        )
        batch_op.create_index("ix_jobs_finished", ["state", "finished_at"], unique=False)
        batch_op.create_index(
            "ix_jobs_lease",
            ["lease_expires_at"],
            unique=False,
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
        batch_op.create_index("ix_jobs_owner", ["owner_id", "id"], unique=False)
        batch_op.create_index(
            "ix_jobs_worker",
            ["worker_id"],
            unique=False,
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
        batch_op.create_index(
            "uq_jobs_idempotency",
            ["owner_id", "idempotency_key"],
            unique=True,
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        )

    op.create_table(
        "leader_leases",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("expires_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leader_leases")),
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("job_type", sa.String(length=100), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("next_fire_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_fire_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index("ix_schedules_next_fire", ["next_fire_at"], unique=False)
        batch_op.create_index("uq_schedules_owner_name", ["owner_id", "name"], unique=True)

    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column(
            "queues",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("started_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "last_heartbeat_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("stopped_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_table(
        "schedule_fires",
        sa.Column("schedule_id", sa.String(length=36), nullable=False),
        sa.Column("fire_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
            name=op.f("fk_schedule_fires_schedule_id_schedules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("schedule_id", "fire_at", name=op.f("pk_schedule_fires")),
    )


def downgrade() -> None:

    op.drop_table("schedule_fires")
    op.drop_table("workers")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("uq_schedules_owner_name")
        batch_op.drop_index("ix_schedules_next_fire")

    op.drop_table("schedules")
    op.drop_table("leader_leases")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_jobs_idempotency",
            postgresql_where=sa.text("idempotency_key IS NOT NULL"),
            sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        )
        batch_op.drop_index(
            "ix_jobs_worker",
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
        batch_op.drop_index("ix_jobs_owner")
        batch_op.drop_index(
            "ix_jobs_lease",
            postgresql_where=sa.text("state = 'running'"),
            sqlite_where=sa.text("state = 'running'"),
        )
        batch_op.drop_index("ix_jobs_finished")
        batch_op.drop_index(
            "ix_jobs_due",
            postgresql_where=sa.text("state IN ('scheduled', 'retrying')"),
            sqlite_where=sa.text("state IN ('scheduled', 'retrying')"),
        )
        batch_op.drop_index(
            "ix_jobs_claim",
            postgresql_where=sa.text("state = 'queued'"),
            sqlite_where=sa.text("state = 'queued'"),
        )

    op.drop_table("jobs")
