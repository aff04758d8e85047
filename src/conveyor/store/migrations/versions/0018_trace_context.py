"""jobs.trace_context: the W3C trace context a job was submitted under (tracing)

Revision ID: 0018_trace_context
Revises: 0017_schedule_workflows
Create Date: 2026-12-06 00:40:00.000000

Nullable text, NULL unless OpenTelemetry was on where the job was submitted: the
`traceparent` (and `tracestate`) of the submitting request or library caller, as JSON
(conveyor/tracing.py). The worker's run span continues it (docs/tracing.md). Added at the
end of the table by a plain ALTER on both databases (no SQLite table rebuild: nothing
cascades), and dropped the same way.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_trace_context"
down_revision = "0017_schedule_workflows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("trace_context", sa.Text(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN trace_context")
