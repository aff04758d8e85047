"""fair dispatch: claims order by each job's fair tag; the index that computes a key's tag

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-05 04:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_QUEUED = sa.text("state = 'queued'")
_KEYED = sa.text("state = 'queued' AND fair_key IS NOT NULL")


def upgrade() -> None:
    # Every job waits in due-time order until it is submitted under fair dispatch: its tag is
    # its run_at in epoch seconds (docs/flow-control.md "Fair dispatch").
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE jobs SET fair_tag = extract(epoch FROM run_at)")
    else:
        op.execute("UPDATE jobs SET fair_tag = (julianday(run_at) - 2440587.5) * 86400.0")
    _claim_indexes("fair_tag")
    with op.batch_alter_table("jobs") as batch:
        batch.create_index(
            "ix_jobs_fair",
            ["queue", "priority", "fair_key", "fair_tag"],
            postgresql_where=_KEYED,
            sqlite_where=_KEYED,
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_fair")
    _claim_indexes("run_at")


def _claim_indexes(order: str) -> None:
    """ix_jobs_claim and ix_jobs_claim_any again, ordered by `order` after the priority."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_claim")
        batch.drop_index("ix_jobs_claim_any")
        batch.create_index(
            "ix_jobs_claim",
            ["queue", sa.literal_column("priority DESC"), order, "id"],
            postgresql_where=_QUEUED,
            sqlite_where=_QUEUED,
        )
        batch.create_index(
            "ix_jobs_claim_any",
            [sa.literal_column("priority DESC"), order, "id"],
            postgresql_where=_QUEUED,
            sqlite_where=_QUEUED,
        )
