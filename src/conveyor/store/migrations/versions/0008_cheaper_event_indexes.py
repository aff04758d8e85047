"""cheaper event indexes: no age index (pruning walks the reading order), a job's events by hash

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 21:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_created_at", table_name="events")
    op.drop_index("ix_events_job", table_name="events")
    op.create_index("ix_events_job", "events", ["job_id"], postgresql_using="hash")


def downgrade() -> None:
    op.drop_index("ix_events_job", table_name="events")
    op.create_index("ix_events_job", "events", ["job_id", "xid", "id"])
    op.create_index("ix_events_created_at", "events", ["created_at"])
