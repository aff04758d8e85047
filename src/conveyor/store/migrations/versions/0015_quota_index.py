"""quotas: an index of each owner's waiting jobs, for the queued quota's count at submit

Revision ID: 0015
Revises: 0011
Create Date: 2026-12-05 04:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_WAITING = "state IN ('scheduled', 'queued', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_owner_waiting",
            ["owner_id"],
            unique=False,
            postgresql_where=sa.text(_WAITING),
            sqlite_where=sa.text(_WAITING),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_jobs_owner_waiting",
            postgresql_where=sa.text(_WAITING),
            sqlite_where=sa.text(_WAITING),
        )
