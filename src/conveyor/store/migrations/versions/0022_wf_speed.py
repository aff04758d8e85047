"""workflows: a finish that cannot settle anything defers to a later one, without the lock

Revision ID: 0022_wf_speed
Revises: 0021_schedule_limits
Create Date: 2026-12-06 07:00:00.000000

PostgreSQL only (SQLite has one writer). 0020's `jobs_steps_settled` took the workflow's
row lock (FOR UPDATE) for every settling statement, so the finishes of one workflow's steps
on two workers waited for each other's commit (docs/workflows.md, "Release").

Now a top-level settling statement whose settled steps all completed (or were skipped),
all of one workflow, with at most one waiting dependent between them, first looks for an
open step of that workflow, not its own and not waiting, that is a dependency of that
dependent (with no dependent: any such open step), and not row-locked by another
transaction, and locks it FOR SHARE (SKIP LOCKED: it never waits). When it finds one it
returns: that dependent cannot be released and the workflow cannot settle while the
step is open, and the step cannot settle before this transaction commits (its settling
UPDATE waits for the share lock), so the transaction that settles it probes after this
one's settles are visible. The last transaction to commit a settle of the dependent's
dependencies (or of the workflow's steps) therefore never defers (the step it would lock
would settle after it) and takes the workflow's lock before its probe as before, which
orders it after every non-deferring one; a deferring one commits before the settle of
the step it locked, so, by induction along those steps, before that last probe. The rules
(and why): a failed or cancelled step still takes the lock (its policy decides at once);
a nested statement (a cascade under a lock already held) and a transaction of several
finish statements (`lock_mine` marks it: a later statement of it may take the workflow's
lock while it holds the share lock, which a workflow's cancel holding that lock could
wait for) never defer; a waiting step is never share-locked (the release bumps waiting
steps under the workflow's lock). A claim skips a share-locked queued step until the
deferring commit (FOR UPDATE SKIP LOCKED), so the statement then NOTIFYs its queue (sent at
that commit); a finish of a share-locked running step waits for that commit. Measured
(bench/README.md): share-locking only running steps, its own worker's first, made the
other worker's finishes wait as the workflow's lock did, and was slower than this.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0022_wf_speed"
down_revision = "0021_schedule_limits"
branch_labels = None
depends_on = None


_SPEC = importlib.util.spec_from_file_location(
    "conveyor_migration_0020_release_set", Path(__file__).with_name("0020_release_set.py")
)
assert _SPEC is not None and _SPEC.loader is not None
_0020: ModuleType = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_0020)  # 0020's function, to build on and to go back to
_BEFORE = """    -- The workflows' rows first (id order), then the dependents in id order.
    PERFORM 1 FROM workflows WHERE id = ANY(flows) ORDER BY id FOR UPDATE;"""
# Open and not waiting: what a deferring statement may share-lock.
_RUNNABLE = "('scheduled', 'queued', 'running', 'retrying')"
_DEFER = f"""    -- Deferral (migration 0022): see the migration's docstring for why it is safe.
    IF bads IS NULL AND cardinality(flows) = 1 AND pg_trigger_depth() = 1
            AND coalesce(current_setting('conveyor.several', true), '') <> 'on' THEN
        SELECT array_agg(DISTINCT e.job_id) INTO deps
        FROM job_dependencies AS e JOIN jobs AS j ON j.id = e.job_id
        WHERE e.depends_on = ANY(ids) AND j.state = 'waiting';
        IF deps IS NULL OR cardinality(deps) = 1 THEN
            SELECT p.state, p.queue INTO held_state, held_queue FROM jobs AS p
            WHERE p.workflow_id = flows[1] AND p.state IN {_RUNNABLE}
                AND (deps IS NULL OR EXISTS (SELECT 1 FROM job_dependencies AS e2
                    WHERE e2.job_id = deps[1] AND e2.depends_on = p.id OFFSET 0))
            LIMIT 1
            FOR SHARE OF p SKIP LOCKED;
            IF FOUND THEN
                IF held_state = 'queued' THEN  -- claims skip it until this commit: wake them then
                    PERFORM pg_notify('conveyor_jobs', held_queue);
                END IF;
                RETURN NULL;  -- that step's settle comes after this commit, and probes
            END IF;
        END IF;
    END IF;
{_BEFORE}"""


def _function() -> str:
    text: str = _0020._PG_SETTLED_FUNCTION
    assert text.count(_BEFORE) == 1 and text.count("    flows text[];\n") == 1
    text = text.replace(
        "    flows text[];\n",
        "    flows text[];\n    deps text[];\n    held_state text;\n    held_queue text;\n",
    )
    return text.replace(_BEFORE, _DEFER)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_function())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_0020._PG_SETTLED_FUNCTION)
