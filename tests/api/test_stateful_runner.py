"""tests/support/stateful.py, on a small API whose state outlives each scenario as Conveyor's
does: a list of tasks, each of which can be read and deleted (reference 000's `/tasks`, where
CI's admin run met it)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI, HTTPException, Response
from hypothesis import HealthCheck, settings
from pydantic import BaseModel
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import FailureGroup

from tests.support.stateful import run_stateful

load_all_checks()
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    stateful_step_count=6,
)
SCENARIOS = 60


class Task(BaseModel):
    task_id: int
    name: str


class Missing(BaseModel):
    detail: str


def tasks_api(*, broken_delete: bool = False) -> FastAPI:
    """Tasks kept in memory for the app's life; `broken_delete` answers a second delete of
    the same task with an undocumented 500, a failure every check run must report."""
    app = FastAPI()
    tasks: dict[int, Task] = {n: Task(task_id=n, name=f"t{n}") for n in range(1, 6)}
    deleted: set[int] = set()
    missing: dict[int | str, dict[str, Any]] = {404: {"model": Missing}}

    @app.get("/tasks")
    async def list_tasks() -> list[Task]:
        return list(tasks.values())

    @app.post("/tasks", status_code=201)
    async def create_task() -> Task:
        task = Task(task_id=max([0, *tasks, *deleted]) + 1, name="new")
        tasks[task.task_id] = task
        return task

    @app.get("/tasks/{task_id}", responses=missing)
    async def get_task(task_id: int) -> Task:
        if task_id not in tasks:
            raise HTTPException(404, "no such task")
        return tasks[task_id]

    @app.delete("/tasks/{task_id}", status_code=204, responses=missing)
    async def delete_task(task_id: int) -> Response:
        if broken_delete and task_id in deleted:
            return Response(status_code=500)
        if tasks.pop(task_id, None) is None:
            raise HTTPException(404, "no such task")
        deleted.add(task_id)
        return Response(status_code=204)

    return app


def tasks_schema(app: FastAPI) -> Any:
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    return schema


def test_a_replay_that_meets_another_state_is_not_a_failure() -> None:
    """The API deletes what earlier scenarios listed, so hypothesis' replays draw otherwise:
    a bare `Machine.run` ends in FlakyStrategyDefinition though no check failed (CI's admin
    run, 2026-12-05). Every scenario asked for runs, and nothing fails."""
    run = run_stateful(
        tasks_schema(tasks_api()), scenarios=SCENARIOS, settings=SETTINGS, checks=CHECKS.get_all()
    )
    assert run.failures == []
    assert run.scenarios >= SCENARIOS, run
    assert run.calls > SCENARIOS, run


def test_a_failed_check_still_fails_the_run() -> None:
    """A call that fails a check fails the test, named, even when its replay meets another
    state (the second delete of a task answers 500 only once the task is gone)."""
    with pytest.raises((AssertionError, FailureGroup)) as raised:
        run_stateful(
            tasks_schema(tasks_api(broken_delete=True)),
            scenarios=SCENARIOS,
            settings=SETTINGS,
            checks=CHECKS.get_all(),
        )
    assert "DELETE /tasks/{task_id}" in str(raised.value) or "500" in str(raised.value)
