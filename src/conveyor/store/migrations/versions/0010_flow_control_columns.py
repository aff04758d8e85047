"""flow control: the columns every part of it shares (fair dispatch, limits, unique jobs, quotas)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("fair_key", sa.String(length=200), nullable=True))
    op.add_column("jobs", sa.Column("fair_tag", sa.Float(), nullable=False, server_default="0"))
    op.add_column(
        "jobs", sa.Column("limited", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("jobs", sa.Column("unique_key", sa.String(length=255), nullable=True))
    op.add_column("jobs", sa.Column("unique_states", sa.String(length=120), nullable=True))
    op.add_column("users", sa.Column("fair_weight", sa.Float(), nullable=False, server_default="1"))
    op.add_column("users", sa.Column("max_queued", sa.Integer(), nullable=True))
    op.add_column("users", sa.Column("max_running", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("max_running")
        batch.drop_column("max_queued")
        batch.drop_column("fair_weight")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("unique_states")
        batch.drop_column("unique_key")
        batch.drop_column("limited")
        batch.drop_column("fair_tag")
        batch.drop_column("fair_key")
