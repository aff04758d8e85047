"""jobs (PostgreSQL): no index entry that no query reads — fewer index writes per job

Revision ID: 0026_lean_indexes
Revises: 0025_workflow_run
Create Date: 2026-12-06 10:00:00.000000

A job's state change is never a HOT update (`state` is in partial indexes' predicates), so
every change writes an entry into each index whose predicate the new row version meets.
`uq_jobs_workflow_id_step` (workflow_id, step) and `ix_jobs_workflow_open` /
`ix_jobs_workflow_bad` (workflow_id) took the NULL workflow_id of every plain job: three
entries per submit, two per claim, one per finish that no query reads. Every reader names a
workflow (`workflow_id = ...`, which implies `IS NOT NULL`, so the planner still uses them),
and a unique index never compares NULLs: `WHERE workflow_id IS NOT NULL` changes no answer.

EXPLAIN (ANALYZE, WAL) with 20,000 queued plain jobs, 64 per statement: a claim wrote 590
WAL records before, 460 after; a finish 405 before, 341 after (bench/README.md "Session
11"). SQLite is untouched: its planner uses a partial index only when the query spells the
index's condition, and a bound workflow id does not.

`ix_jobs_finished` (state, finished_at) took every state too: two more entries per job (its
claim and its submit). Its readers are the pruner and the throughput chart, finished jobs by
`finished_at`; now it holds finished rows only. The release trigger's bump found waiting
steps through it until 0025 drove the bump from the edges (before 0025, and without
statistics, its plan went quadratic without this index); the scheduler's sweep of waiting
steps names their workflow now (`workflow_id IS NOT NULL`), so `ix_jobs_workflow_open`
serves it. With it a claim of 64 wrote about 455 records instead of 518.

The indexes are rebuilt under a new name, then swapped, in the migration's transaction:
writes to jobs wait for the build (seconds per million rows; docs/operations.md).
"""

from __future__ import annotations

from alembic import op

revision = "0026_lean_indexes"
down_revision = "0025_workflow_run"
branch_labels = None
depends_on = None

_OPEN = "state IN ('waiting', 'scheduled', 'queued', 'running', 'retrying')"
_BAD = "state IN ('failed', 'cancelled')"
_IN_WORKFLOW = "workflow_id IS NOT NULL"
_FINISHED = "state IN ('completed', 'failed', 'cancelled', 'skipped')"

# name -> (columns, unique, predicate before, predicate after)
_INDEXES: dict[str, tuple[str, bool, str | None, str]] = {
    "uq_jobs_workflow_id_step": ("workflow_id, step", True, None, _IN_WORKFLOW),
    "ix_jobs_workflow_open": ("workflow_id", False, _OPEN, f"{_OPEN} AND {_IN_WORKFLOW}"),
    "ix_jobs_workflow_bad": ("workflow_id", False, _BAD, f"{_BAD} AND {_IN_WORKFLOW}"),
    "ix_jobs_finished": ("state, finished_at", False, None, _FINISHED),
}


def _swap(name: str, columns: str, unique: bool, where: str | None) -> None:
    """Build `name` again with `where` under a temporary name, then put it in its place."""
    kind = "UNIQUE INDEX" if unique else "INDEX"
    condition = f" WHERE {where}" if where else ""
    op.execute(f"CREATE {kind} {name}_new ON jobs ({columns}){condition}")
    op.execute(f"DROP INDEX {name}")
    op.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, (columns, unique, _, after) in _INDEXES.items():
            _swap(name, columns, unique, after)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, (columns, unique, before, _) in _INDEXES.items():
            _swap(name, columns, unique, before)
