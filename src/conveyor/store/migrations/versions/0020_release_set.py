"""workflows: a statement's settled steps release their dependents at once; fair release tags

Revision ID: 0020_release_set
Revises: 0019_release_probe
Create Date: 2026-12-06 03:30:00.000000

PostgreSQL: 0016's `jobs_step_settled` ran once per settling row (a finish of 100 steps: 100
calls, each locking the workflow, probing its dependents and asking "was that the last
open step?"). It becomes `jobs_steps_settled`, one call per UPDATE statement on jobs with
the statement's rows as transition tables (PostgreSQL refuses a column list with those, so
it fires for every UPDATE of jobs and returns at once when no workflow step settled). It
locks each touched workflow row once, in id order (so two batches that touch the same
workflows take their locks in one order), bumps `dep_checks` of the waiting dependents of
all the statement's settled steps that it can decide (0019's probe; every one of a failed
or cancelled step's), locking them in id order, then settles each of those workflows that
has nothing open, with its event. `jobs_step_check` (per bumped dependent: few) is kept;
its state change is a statement of its own, so a cascade nests one level per step as
before. The guarantee holds as before: every settle of a workflow's step holds the
workflow's row lock, taken before the probe, until it commits.

Both databases: a released step with a fair key (docs/flow-control.md, "Fair dispatch")
gets its tag from its band's head at release, as a ready job submitted then would:
max(V, L) + 1 / w (in an empty band: now + 1 / w). Before, a step had no key and took the
release time's epoch. SQLite keeps its row triggers (one writer; measured: its release is
no cost beside the finish), with the check trigger's tag changed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0020_release_set"
down_revision = "0019_release_probe"
branch_labels = None
depends_on = None


def _module(name: str) -> ModuleType:
    """A migration module of this folder: its statements, to build on and to go back to."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"conveyor_migration_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0016 = _module("0016_workflows")
_0019 = _module("0019_release_probe")
_OPEN: str = _0016._OPEN
_BAD: str = _0016._BAD
_SETTLED: str = _0016._SETTLED
_PG_XID: str = _0016._PG_XID

_PG_SETTLED_FUNCTION = f"""
CREATE OR REPLACE FUNCTION conveyor_steps_settled() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids text[];
    bads text[];
    flows text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows AS n
        WHERE n.workflow_id IS NOT NULL AND n.state IN {_SETTLED}) THEN
        RETURN NULL;  -- no step settled (a claim, a heartbeat, a plain job's finish)
    END IF;
    SELECT array_agg(n.id), array_agg(n.id) FILTER (WHERE n.state IN {_BAD}),
        array_agg(DISTINCT n.workflow_id)
    INTO ids, bads, flows
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE n.workflow_id IS NOT NULL AND n.state IN {_SETTLED}
        AND o.state IS DISTINCT FROM n.state;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    -- The workflows' rows first (id order), then the dependents in id order.
    PERFORM 1 FROM workflows WHERE id = ANY(flows) ORDER BY id FOR UPDATE;
    UPDATE jobs SET dep_checks = jobs.dep_checks + 1
    WHERE jobs.id IN (
        SELECT j.id FROM jobs AS j
        WHERE j.id IN (SELECT e.job_id FROM job_dependencies AS e
                WHERE e.depends_on = ANY(ids))
            AND j.state = 'waiting'
            AND (bads IS NOT NULL AND EXISTS (SELECT 1 FROM job_dependencies AS e3
                    WHERE e3.job_id = j.id AND e3.depends_on = ANY(bads))
                OR NOT EXISTS (SELECT 1 FROM jobs AS p
                    WHERE p.workflow_id = j.workflow_id AND p.state IN {_OPEN}
                        AND EXISTS (SELECT 1 FROM job_dependencies AS e2
                            WHERE e2.job_id = j.id AND e2.depends_on = p.id OFFSET 0)))
        ORDER BY j.id FOR UPDATE OF j
    ) AND jobs.state = 'waiting';
    IF EXISTS (SELECT 1 FROM unnest(flows) AS f(id) WHERE NOT EXISTS (SELECT 1 FROM jobs
        WHERE workflow_id = f.id AND state IN {_OPEN})) THEN
        LOCK TABLE events IN ROW EXCLUSIVE MODE;
        WITH settled AS (
            UPDATE workflows AS w SET
                state = CASE
                    WHEN EXISTS (SELECT 1 FROM jobs WHERE workflow_id = w.id
                        AND state = 'failed') THEN 'failed'
                    WHEN EXISTS (SELECT 1 FROM jobs WHERE workflow_id = w.id
                        AND state = 'cancelled') THEN 'cancelled'
                    ELSE 'completed' END,
                settled_at = clock_timestamp(), updated_at = clock_timestamp()
            WHERE w.id = ANY(flows) AND w.state = 'running'
                AND NOT EXISTS (SELECT 1 FROM jobs
                    WHERE workflow_id = w.id AND state IN {_OPEN})
            RETURNING w.id, w.owner_id, w.name, w.state
        )
        INSERT INTO events (xid, type, job_id, owner_id, queue, job_type, state, attempt,
            data, created_at)
        SELECT {_PG_XID}, 'workflow', s.id, s.owner_id, '', s.name, s.state, 0, NULL,
            clock_timestamp()
        FROM settled AS s ORDER BY s.id;
    END IF;
    RETURN NULL;
END
$$
"""
_PG_SETTLED_TRIGGER = """
CREATE TRIGGER jobs_steps_settled
AFTER UPDATE ON jobs
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT
EXECUTE FUNCTION conveyor_steps_settled()
"""

# The release's tag: a keyed step's as a ready job's at submit (rank 1), else now's epoch.
_PG_TAG_0016 = """        fair_tag = CASE WHEN target = 'queued' THEN extract(epoch FROM clock_timestamp())
            ELSE fair_tag END,"""
_PG_TAG = """        fair_tag = CASE WHEN target = 'queued' THEN conveyor_release_tag(NEW.queue,
            NEW.priority, NEW.fair_key, NEW.owner_id) ELSE fair_tag END,"""
_PG_TAG_FUNCTION = """
CREATE OR REPLACE FUNCTION conveyor_release_tag(q text, prio integer, fkey text, owner text)
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v double precision;
    l double precision;
    w double precision;
    now_s double precision := extract(epoch FROM clock_timestamp());
BEGIN
    IF fkey IS NULL THEN
        RETURN now_s;
    END IF;
    SELECT j.fair_tag INTO v FROM jobs AS j
    WHERE j.state = 'queued' AND j.queue = q AND j.priority = prio
    ORDER BY j.queue, j.priority DESC, j.fair_tag LIMIT 1;
    SELECT max(j.fair_tag) INTO l FROM jobs AS j
    WHERE j.state = 'queued' AND j.queue = q AND j.priority = prio
        AND j.fair_key = fkey AND j.fair_key IS NOT NULL;
    w := coalesce((SELECT u.fair_weight FROM users AS u
        WHERE u.id = fkey AND owner = fkey AND u.fair_weight > 0), 1);
    RETURN greatest(v, l, CASE WHEN v IS NULL THEN now_s END) + 1 / w;
END
$$
"""
_SQLITE_TAG_0016 = """        fair_tag = CASE WHEN {verdict} = 'queued'
            THEN (julianday('now') - 2440587.5) * 86400.0 ELSE fair_tag END,"""
_SQLITE_NOW_S = "((julianday('now') - 2440587.5) * 86400.0)"
_SQLITE_V = """(SELECT j.fair_tag FROM jobs AS j
                WHERE j.state = 'queued' AND j.queue = NEW.queue AND j.priority = NEW.priority
                ORDER BY j.queue, j.priority DESC, j.fair_tag LIMIT 1)"""
_SQLITE_L = """(SELECT j.fair_tag FROM jobs AS j
                WHERE j.state = 'queued' AND j.queue = NEW.queue AND j.priority = NEW.priority
                    AND j.fair_key = NEW.fair_key AND j.fair_key IS NOT NULL
                ORDER BY j.fair_tag DESC LIMIT 1)"""
_SQLITE_W = """coalesce((SELECT u.fair_weight FROM users AS u
                WHERE u.id = NEW.fair_key AND NEW.owner_id = NEW.fair_key
                    AND u.fair_weight > 0), 1)"""
_SQLITE_TAG = f"""        fair_tag = CASE WHEN {{verdict}} = 'queued' THEN CASE
            WHEN NEW.fair_key IS NULL THEN {_SQLITE_NOW_S}
            WHEN {_SQLITE_V} IS NULL THEN {_SQLITE_NOW_S} + 1.0 / {_SQLITE_W}
            ELSE max({_SQLITE_V}, coalesce({_SQLITE_L}, {_SQLITE_V})) + 1.0 / {_SQLITE_W}
            END ELSE fair_tag END,"""


def _replaced(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, "0016's statement is not the one this migration edits"
    return text.replace(old, new)


def _sqlite_check(tag: str) -> None:
    verdict = _0016._SQLITE_VERDICT
    op.execute("DROP TRIGGER IF EXISTS jobs_step_check")
    op.execute(
        _replaced(_0016._SQLITE_CHECK_TRIGGER, _SQLITE_TAG_0016.format(verdict=verdict),
                  tag.format(verdict=verdict))
    )  # fmt: skip


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_check(_SQLITE_TAG)
        return
    op.execute("DROP TRIGGER IF EXISTS jobs_step_settled ON jobs")
    op.execute("DROP FUNCTION IF EXISTS conveyor_step_settled()")
    op.execute(_PG_SETTLED_FUNCTION)
    op.execute(_PG_SETTLED_TRIGGER)
    op.execute(_PG_TAG_FUNCTION)
    op.execute(_replaced(_0016._PG_CHECK_FUNCTION, _PG_TAG_0016, _PG_TAG))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_check(_SQLITE_TAG_0016)
        return
    op.execute("DROP TRIGGER IF EXISTS jobs_steps_settled ON jobs")
    op.execute("DROP FUNCTION IF EXISTS conveyor_steps_settled()")
    op.execute(_0016._PG_CHECK_FUNCTION)
    op.execute("DROP FUNCTION IF EXISTS conveyor_release_tag(text, integer, text, text)")
    op.execute(_0016._PG_SETTLED_FUNCTION)
    op.execute(_0016._PG_TRIGGERS[0])
    _0019.upgrade()  # 0019's probe in the row function
