"""scheduler/workflow_rows.py: a declaration's steps checked in one call per job type
(`checked_steps`) give what the step-by-step check gives: the same jobs, and for a bad step
the same error naming `steps.<i>...` (the index in the declaration, not in run order)."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.domain.clock import utcnow
from conveyor.domain.workflows import StepSpec, WorkflowSpec, validate
from conveyor.errors import InvalidInput
from conveyor.scheduler.workflow_rows import checked_step, checked_steps, workflow_draft
from conveyor.worker.registry import Registry
from tests.support import workflow_handlers

OWNER = "alice"


def types() -> Registry:
    registry = Registry()
    registry.include(workflow_handlers.blueprint)
    return registry


def fan(bad: dict[str, Any] | None = None, at: int = 0) -> WorkflowSpec:
    """A join declared first, then its branches (so run order differs from declaration)."""
    branches = [f"b{k}" for k in range(6)]
    steps = [StepSpec("join", "wf_step", {"log": "-"}, tuple(branches))]
    steps += [
        StepSpec(name, "wf_step", {"log": "-", "value": k}) for k, name in enumerate(branches)
    ]
    if bad is not None:
        steps[at] = StepSpec(steps[at].name, "wf_step", bad, steps[at].depends_on)
    return WorkflowSpec("fan", tuple(steps))


def one_by_one(spec: WorkflowSpec, fair: bool = True) -> list[Any]:
    where = {step.name: i for i, step in enumerate(spec.steps)}
    return [checked_step(types(), step, where[step.name], OWNER, fair) for step in validate(spec)]


def comparable(job: Any) -> tuple[Any, ...]:
    fields = ("type", "payload", "queue", "priority", "max_attempts", "timeout_s",
              "idempotency_key", "owner_id", "fair_key", "limit_keys", "unique_key")  # fmt: skip
    return tuple(getattr(job, name) for name in fields)


@pytest.mark.parametrize("fair", [True, False])
def test_the_batch_check_gives_the_jobs_of_the_step_by_step_check(fair: bool) -> None:
    spec = fan()
    batch = checked_steps(types(), validate(spec), OWNER, fair)
    assert batch is not None
    assert [comparable(j) for j in batch] == [comparable(j) for j in one_by_one(spec, fair)]
    assert len({j.id for j in batch}) == len(batch)


@pytest.mark.parametrize(
    ("bad", "at", "loc"),
    [({"log": 3}, 4, "log"), ({"log": "-", "x": 1}, 0, "x"), ({}, 6, "log")],
)
def test_a_bad_payload_is_refused_naming_its_declared_index(
    bad: dict[str, Any], at: int, loc: str
) -> None:
    spec = fan(bad, at)
    with pytest.raises(InvalidInput) as caught:
        workflow_draft(types(), spec, OWNER, utcnow()).whole()
    assert caught.value.details["field"] == f"steps.{at}.payload"
    assert caught.value.details["errors"][0]["loc"] == ["steps", at, "payload", loc]
