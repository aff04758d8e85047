"""workflows: a finish that cannot settle anything defers to a later one, without the lock

Revision ID: 0022_wf_speed
Revises: 0021_schedule_limits
Create Date: 2026-12-06 07:00:00.000000

PostgreSQL only (SQLite has one writer). 0020's `jobs_steps_settled` took the workflow's
row lock (FOR UPDATE) for every settling statement, so the finishes of one workflow's steps
on two workers waited for each other's commit (docs/workflows.md, "Release").

Now a top-level settling statement whose settled steps all completed (or were skipped),
all of one workflow, with at most one waiting dependent between them, first looks for a
running step of that workflow that is a dependency of that dependent (with no dependent:
any running step), and not row-locked by another transaction, one of its own worker's
first, and locks it FOR SHARE (SKIP LOCKED: it never waits). When it finds one it
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
wait for) never defer. Only a running step is share-locked: a waiting one is bumped by
the release under the workflow's lock, and a queued one would be skipped by claims (FOR
UPDATE SKIP LOCKED) until the deferring commit, with no wake-up after it; a finish of the
running step waits for that commit (its own worker's, preferred, usually comes later).
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
# A dependency of the one waiting dependent (none: any step of the workflow), running.
_CANDIDATE = """FROM jobs AS p
            WHERE p.workflow_id = flows[1] AND p.state = 'running'{mine}
                AND (deps IS NULL OR EXISTS (SELECT 1 FROM job_dependencies AS e2
                    WHERE e2.job_id = deps[1] AND e2.depends_on = p.id OFFSET 0))
            LIMIT 1
            FOR SHARE OF p SKIP LOCKED"""
_DEFER = f"""    -- Deferral (migration 0022): see the migration's docstring for why it is safe.
    IF bads IS NULL AND cardinality(flows) = 1 AND pg_trigger_depth() = 1
            AND coalesce(current_setting('conveyor.several', true), '') <> 'on' THEN
        SELECT array_agg(DISTINCT e.job_id) INTO deps
        FROM job_dependencies AS e JOIN jobs AS j ON j.id = e.job_id
        WHERE e.depends_on = ANY(ids) AND j.state = 'waiting';
        IF deps IS NULL OR cardinality(deps) = 1 THEN
            SELECT array_agg(DISTINCT n.worker_id) INTO workers
            FROM new_rows AS n WHERE n.id = ANY(ids);
            PERFORM 1 {_CANDIDATE.format(mine=" AND p.worker_id = ANY(workers)")};
            IF NOT FOUND THEN
                PERFORM 1 {_CANDIDATE.format(mine="")};
            END IF;
            IF FOUND THEN
                RETURN NULL;  -- that step's settle comes after this commit, and probes
            END IF;
        END IF;
    END IF;
{_BEFORE}"""


def _function() -> str:
    text: str = _0020._PG_SETTLED_FUNCTION
    assert text.count(_BEFORE) == 1 and text.count("    flows text[];\n") == 1
    text = text.replace(
        "    flows text[];\n", "    flows text[];\n    deps text[];\n    workers text[];\n"
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
