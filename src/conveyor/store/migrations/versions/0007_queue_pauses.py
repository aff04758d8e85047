"""queue pauses

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 18:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import conveyor.store.types

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_pauses",
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("paused_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paused_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("queue", name=op.f("pk_queue_pauses")),
    )


def downgrade() -> None:
    op.drop_table("queue_pauses")
