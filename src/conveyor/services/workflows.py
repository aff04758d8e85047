"""Workflows: a DAG of steps submitted at once, each step a job released by its dependencies.

Validation and the rows (the declaration's shape in domain/workflows.py, each step's payload
against its job type's model by `checked_job`) are scheduler/workflow_rows.py's, shared with
a cron fire of a workflow template; here come the owner's quotas, then the store writes the
whole DAG in one transaction and releases each step in the transaction that settles its
last dependency (docs/workflows.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from conveyor.domain.clock import utcnow
from conveyor.domain.workflows import (
    WorkflowDetail,
    WorkflowRecord,
    WorkflowSpec,
    WorkflowState,
)
from conveyor.errors import InvalidInput
from conveyor.scheduler.workflow_rows import WorkflowDraft, WorkflowRows, workflow_draft
from conveyor.services.flow import FlowService, QuotaAsk
from conveyor.services.jobs import JobService
from conveyor.store.transaction import Transaction

log = logging.getLogger("conveyor.workflows")

MAX_PAGE = 1000
# Steps per insert of a large submit: each slice's rows are built while the previous
# slice's insert runs on the database (a 10,000-step submit: bench/README.md, session 19).
SLICE = 1000
T = TypeVar("T")


class WorkflowService:
    def __init__(self, jobs: JobService, flow: FlowService | None = None) -> None:
        self.jobs = jobs
        self.flow = flow  # None: no queued quota applies to steps
        self.backend = jobs.backend

    async def submit(
        self, spec: WorkflowSpec, *, owner_id: str, idempotency_key: str | None = None
    ) -> WorkflowDetail:
        """Validate the whole declaration (InvalidInput naming the field, NotFound for an
        unknown job type), then store the workflow, its steps and edges in one transaction.
        The steps' rows are built and stored a slice at a time (SLICE), each slice's insert
        running on the server while the next is built: bad input found in a later slice
        rolls the transaction back, so nothing is stored."""
        running_quota = bool(await self.jobs.running_cap(owner_id))
        draft = workflow_draft(
            self.jobs.registry, spec, owner_id, utcnow(),
            idempotency_key=idempotency_key, running_quota=running_quota,
            fair=self.jobs.fair_dispatch,
        )  # fmt: skip
        width = len(draft.ordered)
        # The first slice's steps are checked before the quota, as every step was before
        # slices: a workflow of at most SLICE steps answers its first bad step (422) first.
        first = draft.rows(0, min(SLICE, width))
        async with self.backend.transaction() as tx:
            if self.flow is not None:
                own = await self.backend.own_queued_cap(tx, owner_id)
                (refused,) = await self.flow.check_quotas(tx, [QuotaAsk(owner_id, own, width)])
                if refused is not None:
                    raise refused
            stored = await self._store(tx, draft, first)
        if isinstance(stored, str):  # the key named a stored workflow
            return await self.get(stored, owner_id)
        log.info("workflow %s submitted: %s, %d steps", draft.id, spec.name, width)
        return stored

    async def _store(
        self, tx: Transaction, draft: WorkflowDraft, first: WorkflowRows
    ) -> str | WorkflowDetail:
        """The workflow's rows inserted in `tx` a slice at a time: the first slice with the
        workflow row (`create_workflow`: an idempotency key naming a stored workflow ends
        it there), each next slice built while the last one's insert runs on the database,
        and the answer built while the last insert runs. The workflow as stored, or the id
        of the stored one its key named."""
        width = len(draft.ordered)
        built = [first]
        pending = await _sent(self.backend.create_workflow(tx, first))
        try:
            for start in range(SLICE, width, SLICE):
                rows = draft.rows(start, min(start + SLICE, width))  # while `pending` runs
                if (found := await pending) is not None:
                    return found
                built.append(rows)
                pending = await _sent(self._add(tx, rows))
            detail = self.backend.submitted_workflow(_joined(built))  # while `pending` runs
            found = await pending
        finally:
            await _settled(pending)
        return found if found is not None else detail

    async def _add(self, tx: Transaction, rows: WorkflowRows) -> str | None:
        await self.backend.add_workflow_steps(tx, rows)
        return None

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


async def _sent(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """`work` started as a task and run to its first wait (its statement sent), so that the
    caller's next steps run while the database works on it."""
    task = asyncio.ensure_future(work)
    await asyncio.sleep(0)
    return task


async def _settled(task: asyncio.Task[Any]) -> None:
    """`task` ended before its transaction is: bad input found while it ran (or the caller
    cancelled) must not roll back under a statement in flight. Its own error, if any, is
    dropped: the caller's is the one raised."""
    if not task.done():
        await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


def _joined(parts: Sequence[WorkflowRows]) -> WorkflowRows:
    """The slices of one workflow as one (what `submitted_workflow` answers from)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    return WorkflowRows(
        first.id,
        first.workflow,
        [row for part in parts for row in part.steps],
        [row for part in parts for row in part.edges],
        [row for part in parts for row in part.limits],
        [job for part in parts for job in part.jobs],
    )
