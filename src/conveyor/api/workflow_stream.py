"""A workflow's event stream: its steps' events and its own (`type` 'workflow'), for the doors
that stream it (the API's `/api/v1/workflows/{id}/events`, the dashboard's workflow page).

The outbox has no workflow column: a workflow's events are its owner's events whose `job_id`
is one of its steps or the workflow itself. The steps are known when the stream opens; a step
appended at run time (`ctx.append_steps`) shows itself with a `created` event of a job not seen
yet: the jobs of such events are read (one query by id per batch, not the whole workflow) and
those of this workflow join it; the others are remembered as not ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from conveyor.domain.events import CREATED, Event, Position
from conveyor.domain.workflows import WORKFLOW_EVENT, WorkflowState
from conveyor.errors import NotFound
from conveyor.services.events import EventFeed, Scope
from conveyor.services.jobs import JobService
from conveyor.services.workflows import WorkflowService

SETTLED_STATES = frozenset(s.value for s in WorkflowState if s is not WorkflowState.RUNNING)


@dataclass
class WorkflowEvents:
    """The filter of one stream: which job ids belong to the workflow."""

    workflows: WorkflowService
    jobs: JobService
    workflow_id: str
    owner_id: str | None  # the reader's scope (None: an admin)
    ids: set[str] = field(default_factory=set)
    others: set[str] = field(default_factory=set)  # created jobs seen not to be ours

    async def load(self) -> str:
        """Read the workflow's steps (NotFound: not the reader's); its owner."""
        detail = await self.workflows.get(self.workflow_id, self.owner_id)
        self.ids = {self.workflow_id, *(s.job_id for s in detail.steps)}
        return detail.workflow.owner_id

    async def keep(self, batch: Sequence[Event]) -> list[Event]:
        new = {
            e.job_id
            for e in batch
            if e.type == CREATED and e.job_id not in self.ids and e.job_id not in self.others
        }
        if new:
            await self._sort_out(sorted(new))
        return settled_last([e for e in batch if e.job_id in self.ids])

    async def _sort_out(self, job_ids: list[str]) -> None:
        try:
            found = await self.jobs.get_many(job_ids)
        except NotFound:  # one was deleted since its event: read the workflow's steps instead
            await self.load()
            self.others.update(i for i in job_ids if i not in self.ids)
            return
        for job in found:
            mine = job.workflow_id == self.workflow_id
            (self.ids if mine else self.others).add(job.id)


def settled_last(events: Sequence[Event]) -> list[Event]:
    """The events with each workflow-settled event moved after the events of its own
    transaction that follow it, at the position of the last of them.

    The trigger that settles a workflow writes its event while the statement that settled
    the last step runs; on SQLite a trigger runs at once, before that statement writes the
    step's own events, so the workflow's event comes first in the outbox. A stream that ends
    with the workflow's event would then leave out the last step's `completed`. Moved, the
    workflow's event ends the story after it, and its `id` resumes after both. (SQLite's
    outbox has one transaction id, 0, for all: there the event moves to the end of what
    follows it in the batch.)"""
    out = list(events)
    i = 0
    while i < len(out):
        event = out[i]
        if not settled(event):
            i += 1
            continue
        j = i + 1
        while j < len(out) and out[j].xid == event.xid and not settled(out[j]):
            j += 1
        if j == i + 1:
            i += 1
            continue
        moved = replace(event, id=out[j - 1].id, xid=out[j - 1].xid)
        out[i:j] = [*out[i + 1 : j], moved]
        i = j
    return out


def settled(event: Event) -> bool:
    """The workflow's own event saying it settled: its story ends there (unless retried)."""
    return event.type == WORKFLOW_EVENT and event.state in SETTLED_STATES


async def story_told(feed: EventFeed, owner_id: str, workflow_id: str, after: Position) -> bool:
    """True when the workflow's newest own event says it settled and is at or before
    `after`: a client resuming there has seen the end."""
    scope = Scope(owner_id, workflow_id)
    last: Event | None = None
    position = Position()
    while batch := await feed.read(position, scope):
        last, position = batch[-1], batch[-1].position
    if last is None or not settled(last):
        return False
    return (last.xid, last.id) <= (after.xid, after.id)
