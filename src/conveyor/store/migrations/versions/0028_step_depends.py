"""jobs.depends: a workflow step with dependencies, known when its claim returns it

Revision ID: 0028_step_depends
Revises: 0027_hot_slots
Create Date: 2026-12-06 16:00:00.000000

A worker reads a claimed step's dependencies' results before it runs the step. It read them
for every claimed step, one query per claim: for a fan-out's steps, which have none, that
query cost a 10,000-step fan-out's drain on PostgreSQL half its speed (2.2-2.7 s against
1.5-1.65 s without it, 1.4-1.5 s for as many plain jobs). Probing job_dependencies in the
claim instead was at the statistics' mercy: a fan-in's edges all name its join, and with
those statistics the planner read all 9,999 edges of the join for each step claimed. The
step's row now says it, set when the step is stored: a step has dependencies exactly when
it is stored waiting (a submitted step with `depends_on`, every appended step); a retry
keeps it. Rows stored before this migration get it from their edges.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028_step_depends"
down_revision = "0027_hot_slots"
branch_labels = None
depends_on = None

_FROM_EDGES = (
    "UPDATE jobs SET depends = true WHERE workflow_id IS NOT NULL"
    " AND id IN (SELECT job_id FROM job_dependencies)"
)


def upgrade() -> None:
    # PostgreSQL: a constant default is metadata only, no rewrite of the table.
    op.add_column(
        "jobs", sa.Column("depends", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.execute(_FROM_EDGES)


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN depends")
