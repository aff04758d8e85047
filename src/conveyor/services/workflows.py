"""Workflows: a DAG of steps submitted at once, each step a job released by its dependencies.

Validation happens here (the declaration's shape in domain/workflows.py, each step's payload
against its job type's model, as JobService.prepare_many checks a submission); the store
writes the whole DAG in one transaction and releases each step in the transaction that
settles its last dependency (docs/workflows.md).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from conveyor.domain.clock import utcnow
from conveyor.domain.flow import RUNNING_QUOTA, LimitKey
from conveyor.domain.ids import uuid7
from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.domain.workflows import (
    StepSpec,
    WorkflowDetail,
    WorkflowRecord,
    WorkflowSpec,
    WorkflowState,
    fingerprint,
    validate,
)
from conveyor.errors import ConveyorError, InvalidInput, NotFound, UnknownJobType
from conveyor.services.flow import FlowService, QuotaAsk
from conveyor.services.jobs import JobService, Submission
from conveyor.store.jobs import job_row
from conveyor.store.workflows import step_key

log = logging.getLogger("conveyor.workflows")

MAX_PAGE = 1000


class WorkflowService:
    def __init__(self, jobs: JobService, flow: FlowService | None = None) -> None:
        self.jobs = jobs
        self.flow = flow  # None: no queued quota applies to steps
        self.backend = jobs.backend

    async def submit(
        self, spec: WorkflowSpec, *, owner_id: str, idempotency_key: str | None = None
    ) -> WorkflowDetail:
        """Validate the whole declaration (InvalidInput naming the field, NotFound for an
        unknown job type), then store the workflow, its steps and edges in one transaction."""
        ordered = validate(spec)
        workflow_id = uuid7()
        prepared = [
            (step, await self._prepare(step, i, owner_id, workflow_id))
            for i, step in _indexed(spec, ordered)
        ]
        now = utcnow()
        ids = {step.name: job.id for step, job in prepared}
        steps: list[dict[str, Any]] = []
        limits: list[dict[str, Any]] = []
        for step, job in prepared:
            row = job_row(job, now)
            row.update(
                state=(JobState.WAITING if step.depends_on else JobState.QUEUED).value,
                run_at=now,
                fair_tag=now.timestamp(),
                fair_key=None,  # steps go in due-time order (docs/workflows.md, "Limits")
                workflow_id=workflow_id,
                step=step.name,
                on_dependency_failure=spec.policy(step).value,
                ready_at=None if step.depends_on else now,
                dep_checks=0,
            )
            steps.append(row)
            limits.extend(
                {"job_id": job.id, "name": lk.name, "key": lk.key} for lk in job.limit_keys
            )
        edges = [
            {"job_id": ids[step.name], "depends_on": ids[dep], "workflow_id": workflow_id}
            for step in ordered
            for dep in dict.fromkeys(step.depends_on)
        ]
        workflow = {
            "id": workflow_id,
            "owner_id": owner_id,
            "name": spec.name,
            "state": WorkflowState.RUNNING.value,
            "created_at": now,
            "updated_at": now,
            "settled_at": None,
            "on_dependency_failure": spec.on_dependency_failure.value,
            "idempotency_key": idempotency_key,
            "fingerprint": fingerprint(spec),
        }
        async with self.backend.transaction() as tx:
            if self.flow is not None:
                own = await self.backend.own_queued_cap(tx, owner_id)
                (refused,) = await self.flow.check_quotas(tx, [QuotaAsk(owner_id, own, len(steps))])
                if refused is not None:
                    raise refused
            found = await self.backend.create_workflow(tx, workflow, steps, edges, limits)
        if found is not None:
            return await self.get(found, owner_id)
        log.info("workflow %s submitted: %s, %d steps", workflow_id, spec.name, len(steps))
        return await self.get(workflow_id, owner_id)

    async def _prepare(self, step: StepSpec, i: int, owner_id: str, workflow_id: str) -> NewJob:
        """The step as a job, checked as a submission is; errors name `steps.<i>...`."""
        submission = Submission(
            type=step.type,
            payload=step.payload,
            queue=step.queue,
            priority=step.priority,
            max_attempts=step.max_attempts,
            timeout_s=step.timeout_s,
            idempotency_key=step_key(workflow_id, step.name),
        )
        try:
            job = self.jobs.prepare(submission, owner_id)
        except (NotFound, UnknownJobType) as exc:
            raise InvalidInput(
                f"step {step.name!r}: unknown job type {step.type!r}", field=f"steps.{i}.type"
            ) from exc
        except InvalidInput as exc:
            raise _at_step(exc, i, step.name) from exc
        job = replace(job, unique_key=None, unique_states=frozenset())
        if await self.jobs._running_cap(owner_id):
            job = replace(job, limit_keys=(*job.limit_keys, LimitKey(RUNNING_QUOTA, owner_id)))
        return job

    async def get(self, workflow_id: str, owner_id: str | None = None) -> WorkflowDetail:
        """NotFound for another owner's workflow (owner_id None: an administrator's read)."""
        return await self.backend.get_workflow(workflow_id, owner_id)

    async def page(
        self,
        *,
        owner_id: str | None,
        state: WorkflowState | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[WorkflowRecord]:
        """Newest first, keyset on id (`before`: the last id of the previous page)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        return await self.backend.page_workflows(owner_id, state, limit, before)

    async def cancel(self, workflow_id: str, owner_id: str | None = None) -> WorkflowDetail:
        """Every unsettled step cancelled (running ones interrupted, as JobService.cancel)."""
        detail = await self.backend.cancel_workflow(workflow_id, owner_id)
        log.info("workflow %s cancelled", workflow_id)
        return detail

    async def retry(self, workflow_id: str, owner_id: str | None = None) -> WorkflowDetail:
        """Failed, cancelled and skipped steps and their descendants run again; completed
        steps keep their results. IllegalTransition (409) while the workflow is running."""
        return await self.backend.retry_workflow(workflow_id, owner_id)

    async def delete(self, workflow_id: str, owner_id: str | None = None) -> None:
        """A settled workflow with its steps, edges and results; Conflict (409) otherwise."""
        await self.backend.delete_workflow(workflow_id, owner_id)


def _indexed(spec: WorkflowSpec, ordered: list[StepSpec]) -> list[tuple[int, StepSpec]]:
    """Each step (in dependency order) with its index in the declaration, for error paths."""
    where = {step.name: i for i, step in enumerate(spec.steps)}
    return [(where[step.name], step) for step in ordered]


def _at_step(exc: ConveyorError, i: int, name: str) -> InvalidInput:
    details: dict[str, Any] = dict(exc.details)
    field = details.pop("field", None)
    details["field"] = f"steps.{i}.{field}" if field else f"steps.{i}.payload"
    if "errors" in details:
        details["errors"] = [
            {**e, "loc": ["steps", i, "payload", *e.get("loc", ())]} for e in details["errors"]
        ]
    return InvalidInput(f"step {name!r}: {exc.message}", **details)
