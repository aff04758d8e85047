"""workflows: a settling step touches only the dependents it can decide

Revision ID: 0019_release_probe
Revises: 0018_trace_context
Create Date: 2026-12-06 01:40:00.000000

0016's `jobs_step_settled` bumped `dep_checks` of every waiting dependent of a settling step,
and each bump ran `jobs_step_check`'s verdict. A fan-in's join was so rewritten once per
parent: 9,999 new row versions and verdicts for a 10,000-step fan-out, each under the
workflow's lock (docs/workflows.md, "Release").

Now a step that completes (or is skipped) bumps only the waiting dependents none of whose
dependencies is still open: the probe of `jobs_step_check` (from the workflow's few open
steps to the dependent's edges), read in the settling statement. A step that fails or is
cancelled still bumps every waiting dependent (its policy decides at once). The probe is as
safe as the bump it spares: every settle of a workflow's step holds the workflow's row lock
(the trigger takes it first) until it commits, so the probe, a later statement, sees every
other settle committed; SQLite has one writer. A waiting step with a failed dependency is
only ever one under the `run` policy (`cancel` and `skip` settled it when that dependency
failed), so a completing parent needs no verdict for it beyond "nothing open". The sweep
(store/workflows.py) still bumps waiting steps itself, whatever they wait for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0019_release_probe"
down_revision = "0018_trace_context"
branch_labels = None
depends_on = None


def _0016() -> ModuleType:
    """0016's module: its trigger and function, to build on and to go back to."""
    path = Path(__file__).with_name("0016_workflows.py")
    spec = importlib.util.spec_from_file_location("conveyor_migration_0016", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0016_MODULE = _0016()
_OPEN: str = _0016_MODULE._OPEN
_BAD: str = _0016_MODULE._BAD
# A dependent `j` of the settling step with a dependency still open, probed as
# jobs_step_check probes: from the workflow's few open steps to j's edges by primary key
# (PostgreSQL: OFFSET 0 keeps it a probe per open step; SQLite: CROSS JOIN keeps the order).
_PG_DECIDABLE = f"""(NEW.state IN {_BAD} OR NOT EXISTS (SELECT 1 FROM jobs AS p
            WHERE p.workflow_id = NEW.workflow_id AND p.state IN {_OPEN}
                AND EXISTS (SELECT 1 FROM job_dependencies AS e2
                    WHERE e2.job_id = j.id AND e2.depends_on = p.id OFFSET 0)))"""
_SQLITE_DECIDABLE = f"""(NEW.state IN {_BAD} OR NOT EXISTS (SELECT 1 FROM jobs AS p
            CROSS JOIN job_dependencies AS e2
            WHERE p.workflow_id = NEW.workflow_id AND p.state IN {_OPEN}
                AND e2.job_id = j.id AND e2.depends_on = p.id))"""

# 0016's bumps, and what they become.
_PG_BUMP_0016 = "WHERE e.depends_on = NEW.id AND j.state = 'waiting'\n"
_PG_BUMP = f"WHERE e.depends_on = NEW.id AND j.state = 'waiting' AND {_PG_DECIDABLE}\n"
_SQLITE_BUMP_0016 = """    UPDATE jobs SET dep_checks = dep_checks + 1
    WHERE id IN (SELECT job_id FROM job_dependencies WHERE depends_on = NEW.id)
        AND state = 'waiting';"""
_SQLITE_BUMP = f"""    UPDATE jobs SET dep_checks = dep_checks + 1
    WHERE id IN (SELECT j.id FROM job_dependencies AS e JOIN jobs AS j ON j.id = e.job_id
        WHERE e.depends_on = NEW.id AND j.state = 'waiting' AND {_SQLITE_DECIDABLE})
        AND state = 'waiting';"""


def _replaced(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, "0016's statement is not the one this migration edits"
    return text.replace(old, new)


def _pg_function(old: str, new: str) -> None:
    op.execute(_replaced(_0016_MODULE._PG_SETTLED_FUNCTION, old, new))


def _sqlite_trigger(old: str, new: str) -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_step_settled")
    op.execute(_replaced(_0016_MODULE._SQLITE_SETTLED_TRIGGER, old, new))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _pg_function(_PG_BUMP_0016, _PG_BUMP)
    else:
        _sqlite_trigger(_SQLITE_BUMP_0016, _SQLITE_BUMP)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _pg_function(_PG_BUMP_0016, _PG_BUMP_0016)
    else:
        _sqlite_trigger(_SQLITE_BUMP_0016, _SQLITE_BUMP_0016)
