"""cron misfire policy per schedule; the process holding a leader lease (SQLite takeover)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 22:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "schedules",
        sa.Column("misfire_policy", sa.String(length=8), nullable=False, server_default="once"),
    )
    op.add_column("leader_leases", sa.Column("host", sa.String(length=255), nullable=True))
    op.add_column("leader_leases", sa.Column("pid", sa.Integer(), nullable=True))
    op.add_column("leader_leases", sa.Column("pid_started", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("leader_leases") as batch:
        batch.drop_column("pid_started")
        batch.drop_column("pid")
        batch.drop_column("host")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("misfire_policy")
