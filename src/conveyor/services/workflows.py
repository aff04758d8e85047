"""Workflows: a DAG of steps submitted at once, each step a job released by its dependencies.

Validation and the rows (the declaration's shape in domain/workflows.py, each step's payload
against its job type's model by `checked_job`) are scheduler/workflow_rows.py's, shared with
a cron fire of a workflow template; here come the owner's quotas, then the store writes the
whole DAG in one transaction and releases each step in the transaction that settles its
last dependency (docs/workflows.md).
"""

from __future__ import annotations

import logging

from conveyor.domain.clock import utcnow
from conveyor.domain.workflows import (
    WorkflowDetail,
    WorkflowRecord,
    WorkflowSpec,
    WorkflowState,
)
from conveyor.errors import InvalidInput
from conveyor.scheduler.workflow_rows import workflow_rows
from conveyor.services.flow import FlowService, QuotaAsk
from conveyor.services.jobs import JobService

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
        running_quota = bool(await self.jobs.running_cap(owner_id))
        rows = workflow_rows(
            self.jobs.registry,
            spec,
            owner_id,
            utcnow(),
            idempotency_key=idempotency_key,
            running_quota=running_quota,
            fair=self.jobs.fair_dispatch,
        )
        workflow_id, steps = rows.id, rows.steps
        async with self.backend.transaction() as tx:
            if self.flow is not None:
                own = await self.backend.own_queued_cap(tx, owner_id)
                (refused,) = await self.flow.check_quotas(tx, [QuotaAsk(owner_id, own, len(steps))])
                if refused is not None:
                    raise refused
            found = await self.backend.create_workflow(tx, rows)
        if found is not None:
            return await self.get(found, owner_id)
        log.info("workflow %s submitted: %s, %d steps", workflow_id, spec.name, len(steps))
        return self.backend.submitted_workflow(rows)

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
