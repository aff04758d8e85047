"""schedules: a job schedule's submit limits

Revision ID: 0021_schedule_limits
Revises: 0019_release_probe
Create Date: 2026-12-06 03:30:00.000000

`schedules.limits` (JSON, nullable): the limits of the job type's `submit_limits` each fire
of a job schedule is under, name -> key, as a submit's `limits` (docs/flow-control.md,
"Cron fires"). An added nullable column: no table is recreated on either database. A
downgrade drops it (SQLite recreates the table, keeping `schedule_fires` aside as 0017 does,
so a fire time already fired is never fired again).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0021_schedule_limits"
down_revision = "0020_release_set"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_FIRES = sa.table(
    "schedule_fires",
    sa.column("schedule_id"),
    sa.column("fire_at"),
    sa.column("job_id"),
    sa.column("created_at"),
)


def upgrade() -> None:
    op.add_column("schedules", sa.Column("limits", _JSON, nullable=True))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_column("schedules", "limits")
        return
    kept = [dict(row._mapping) for row in bind.execute(sa.select(_FIRES))]
    with op.batch_alter_table("schedules", schema=None) as batch:
        batch.drop_column("limits")
    if kept:
        bind.execute(sa.delete(_FIRES))
        op.bulk_insert(_FIRES, kept)
