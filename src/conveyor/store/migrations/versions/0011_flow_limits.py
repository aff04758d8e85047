"""flow control: limit definitions, the limits each job is under, slots and rate buckets

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 04:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conveyor.store.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flow_limits",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("rate_limit", sa.Integer(), nullable=True),
        sa.Column("per_s", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('concurrency', 'rate')", name="ck_flow_limits_kind"),
        sa.PrimaryKeyConstraint("name", name="pk_flow_limits"),
    )
    op.create_table(
        "job_limits",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_limits_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "name", name="pk_job_limits"),
    )
    op.create_index("ix_job_limits_name_key", "job_limits", ["name", "key"])
    op.create_table(
        "limit_slots",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("name", "key", "slot", name="pk_limit_slots"),
    )
    op.create_index("ix_limit_slots_job_id", "limit_slots", ["job_id"])
    op.create_table(
        "rate_buckets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refreshed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", "key", name="pk_rate_buckets"),
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    op.drop_index("ix_limit_slots_job_id", table_name="limit_slots")
    op.drop_table("limit_slots")
    op.drop_index("ix_job_limits_name_key", table_name="job_limits")
    op.drop_table("job_limits")
    op.drop_table("flow_limits")
