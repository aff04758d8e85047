"""workflows (PostgreSQL): a finish's release without replanning and without reading a join's edges

Revision ID: 0025_workflow_run
Revises: 0024_slot_release
Create Date: 2026-12-06 10:00:00.000000

Read with auto_explain (log_nested_statements) in the run phase of a 10,000-step fan-out and
its join, a 64-step finish spent in `jobs_steps_settled`:

* 0.76 ms of its 0.92 ms bump in 0023's "more than 16 edges?" probe: `OFFSET 16` over the
  join's edges was served by a bitmap scan of pk_job_dependencies, which cannot stop early,
  so each finish read all 9,999 of the join's index entries (230 buffers). Asked in index
  order (`ORDER BY depends_on LIMIT 1 OFFSET 16`) it reads 17 entries (4 buffers). The same
  probe in `jobs_step_check`'s two verdicts is changed the same way.
* ~1 ms planning the bump again on every call: plpgsql's cached plan stayed custom (its
  generic plan's estimate was higher), so each call planned the statement and its subplans
  anew (EXPLAIN of the prepared statement: planning 0.9-1.1 ms, execution 0.2 ms; generic:
  planning 0.04 ms). The function now runs with `plan_cache_mode = force_generic_plan`, and
  its bump has a shape no estimate changes: from each settled step's edges
  (ix_job_dependencies_depends_on, a lateral probe per step) to its distinct dependents in id
  order, each by primary key, probed and locked there; the UPDATE finds them again by key.
  Before, the bump found its dependents among every waiting step of the database
  (ix_jobs_finished) and matched each against the settled steps' edges: per statement, not
  per step (docs/workflows.md); now it reads the settled steps' edges only.

The guarantees are 0020's: the workflows' rows are locked first, in id order, then the
decidable dependents in id order; the probe runs after the workflow's lock, in a later
statement. SQLite is untouched (its planner has no bitmap scans; 0022's probe stops at 17).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0025_workflow_run"
down_revision = "0024_slot_release"
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


_0023 = _module("0023_pg_probe")
_OPEN: str = _0023._OPEN
_FEW: int = _0023._FEW
_WAITING: str = _0023._WAITING


def _every(text: str, old: str, new: str, count: int) -> str:
    assert text.count(old) == count, "0023's statement is not the one this migration edits"
    return text.replace(old, new)


def _few_probe(step: str, old: str) -> str:
    """0023's "at most `_FEW` edges?" test, asked in the primary key's order: an index scan
    that stops after `_FEW` + 1 entries (a bitmap scan, which 0023's form got, reads them
    all)."""
    return _every(
        old,
        f"WHERE k.job_id = {step} OFFSET {_FEW})",
        f"WHERE k.job_id = {step} ORDER BY k.depends_on LIMIT 1 OFFSET {_FEW})",
        1,
    )


# ---- conveyor_steps_settled: the bump ---------------------------------------------------
_SETTLED_0023: str = _0023._SETTLED
_BUMP_START = "    UPDATE jobs SET dep_checks = jobs.dep_checks + 1\n"
_BUMP_END = "    ) AND jobs.state = 'waiting';\n"
_BUMP_0023 = _SETTLED_0023[
    _SETTLED_0023.index(_BUMP_START) : _SETTLED_0023.index(_BUMP_END) + len(_BUMP_END)
]
_PROBE = _few_probe("j.id", _0023._probe("j.id", "j.workflow_id", _OPEN, "e2"))
_BUMP = f"""    -- From each settled step's edges (by depends_on) to its distinct dependents, in id
    -- order, each by primary key: waiting, decidable (one of `bads` among its edges, or
    -- no dependency open), locked there. A fixed shape, planned once per session.
    UPDATE jobs SET dep_checks = jobs.dep_checks + 1
    WHERE jobs.id = ANY(ARRAY(
        SELECT j.id
        FROM (SELECT DISTINCT d.job_id FROM unnest(ids) AS s(id)
            CROSS JOIN LATERAL (SELECT e.job_id FROM job_dependencies AS e
                WHERE e.depends_on = s.id OFFSET 0) AS d
            ORDER BY d.job_id) AS t
        CROSS JOIN LATERAL (
            SELECT j.id FROM jobs AS j
            WHERE j.id = t.job_id AND j.state {_WAITING}
                AND (bads IS NOT NULL AND EXISTS (SELECT 1 FROM job_dependencies AS e3
                        WHERE e3.job_id = j.id AND e3.depends_on = ANY(bads))
                    OR NOT {_PROBE})
            OFFSET 0 FOR UPDATE
        ) AS j
    )) AND jobs.state {_WAITING};
"""
_GENERIC = "LANGUAGE plpgsql\nSET plan_cache_mode = force_generic_plan\nAS $$"
_SETTLED = _every(
    _every(_SETTLED_0023, _BUMP_0023, _BUMP, 1), "LANGUAGE plpgsql AS $$", _GENERIC, 1
)

# ---- conveyor_step_check: its two verdicts' probe ----------------------------------------
_CHECK_0023: str = _0023._CHECK
_CHECK = _every(
    _CHECK_0023,
    f"WHERE k.job_id = NEW.id OFFSET {_FEW})",
    f"WHERE k.job_id = NEW.id ORDER BY k.depends_on LIMIT 1 OFFSET {_FEW})",
    2,
)

# A function's SET clause stays until it is replaced with RESET: CREATE OR REPLACE keeps it.
_UNSET = "ALTER FUNCTION conveyor_steps_settled() RESET plan_cache_mode"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SETTLED)
        op.execute(_CHECK)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SETTLED_0023)
        op.execute(_UNSET)
        op.execute(_CHECK_0023)
