"""unique jobs: one live job per unique key

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-05 04:10:00.000000

A partial unique index over jobs.unique_key, covering a row only while its state is one of
the row's own unique_states (",scheduled,queued,running,retrying," style text): a duplicate
submit meets it and its INSERT ... ON CONFLICT DO NOTHING inserts nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "uq_jobs_unique",
        "jobs",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text(
            "unique_key IS NOT NULL AND strpos(unique_states, ',' || state || ',') > 0"
        ),
        sqlite_where=sa.text(
            "unique_key IS NOT NULL AND instr(unique_states, ',' || state || ',') > 0"
        ),
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_unique", table_name="jobs")
