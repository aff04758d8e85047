"""schedules: a cron schedule may fire a workflow template instead of a job

Revision ID: 0017_schedule_workflows
Revises: 0016_workflows
Create Date: 2026-12-05 22:45:00.000000

`schedules.workflow` (JSON, nullable) holds the template (domain/workflows.py spec_json);
`job_type` becomes nullable, and a CHECK keeps exactly one of the two. SQLite recreates the
table (a batch), and dropping the old one would cascade to `schedule_fires`: its rows are
kept aside and put back, so a fire time already fired is never fired again. A downgrade
deletes the schedules of workflow templates (the old schema cannot hold them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017_schedule_workflows"
down_revision = "0016_workflows"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_CHECK = "(job_type IS NULL) <> (workflow IS NULL)"
_FIRES = sa.table(
    "schedule_fires",
    sa.column("schedule_id"),
    sa.column("fire_at"),
    sa.column("job_id"),
    sa.column("created_at"),
)


def _keep_fires() -> list[dict[str, object]]:
    if op.get_bind().dialect.name == "postgresql":
        return []
    return [dict(row._mapping) for row in op.get_bind().execute(sa.select(_FIRES))]


def _restore_fires(rows: list[dict[str, object]]) -> None:
    if rows:
        op.get_bind().execute(sa.delete(_FIRES))
        op.bulk_insert(_FIRES, rows)


def upgrade() -> None:
    kept = _keep_fires()
    with op.batch_alter_table("schedules", schema=None) as batch:
        batch.add_column(sa.Column("workflow", _JSON, nullable=True))
        batch.alter_column("job_type", existing_type=sa.String(100), nullable=True)
        batch.create_check_constraint("job_or_workflow", _CHECK)
    _restore_fires(kept)


def downgrade() -> None:
    op.execute("DELETE FROM schedules WHERE workflow IS NOT NULL")
    kept = _keep_fires()
    with op.batch_alter_table("schedules", schema=None) as batch:
        batch.drop_constraint("job_or_workflow", type_="check")
        batch.alter_column("job_type", existing_type=sa.String(100), nullable=False)
        batch.drop_column("workflow")
    _restore_fires(kept)
