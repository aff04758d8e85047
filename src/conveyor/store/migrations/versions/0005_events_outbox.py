"""events outbox

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:38:24.569547
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import conveyor.store.types

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("job_type", sa.String(length=100), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "data",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_created_at", ["created_at"], unique=False)
        batch_op.create_index("ix_events_job", ["job_id", "xid", "id"], unique=False)
        batch_op.create_index("ix_events_order", ["xid", "id"], unique=False)
        batch_op.create_index("ix_events_owner", ["owner_id", "xid", "id"], unique=False)

    op.create_table(
        "sink_cursors",
        sa.Column("sink", sa.String(length=100), nullable=False),
        sa.Column("xid", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", conveyor.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sink", name=op.f("pk_sink_cursors")),
    )


def downgrade() -> None:

    op.drop_table("sink_cursors")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_owner")
        batch_op.drop_index("ix_events_order")
        batch_op.drop_index("ix_events_job")
        batch_op.drop_index("ix_events_created_at")

    op.drop_table("events")
