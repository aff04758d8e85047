"""Workflows: a DAG of steps submitted at once, each step a job released by its dependencies.

Validation happens here (the declaration's shape in domain/workflows.py, each step's payload
against its job type's model, as JobService.prepare_many checks a submission); the store
writes the whole DAG in one transaction and releases each step in the transaction that
settles its last dependency (docs/workflows.md).
"""

from __future__ import annotations

from conveyor.domain.workflows import WorkflowDetail, WorkflowRecord, WorkflowSpec, WorkflowState
from conveyor.services.flow import FlowService
from conveyor.services.jobs import JobService

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
        raise NotImplementedError

    async def get(self, workflow_id: str, owner_id: str | None = None) -> WorkflowDetail:
        """NotFound for another owner's workflow (owner_id None: an administrator's read)."""
        raise NotImplementedError

    async def page(
        self,
        *,
        owner_id: str | None,
        state: WorkflowState | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[WorkflowRecord]:
        """Newest first, keyset on id (`before`: the last id of the previous page)."""
        raise NotImplementedError

    async def cancel(self, workflow_id: str, owner_id: str | None = None) -> WorkflowDetail:
        """Every unsettled step cancelled (running ones interrupted, as JobService.cancel)."""
        raise NotImplementedError

    async def retry(self, workflow_id: str, owner_id: str | None = None) -> WorkflowDetail:
        """Failed, cancelled and skipped steps and their descendants run again; completed
        steps keep their results. IllegalTransition (409) while the workflow is running."""
        raise NotImplementedError

    async def delete(self, workflow_id: str, owner_id: str | None = None) -> None:
        """A settled workflow with its steps, edges and results; Conflict (409) otherwise."""
        raise NotImplementedError
