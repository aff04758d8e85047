"""What a subscriber may see happen to a job, and where in the event order it happened."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# What a subscriber may see happen to a job.
CREATED, STARTED, PROGRESS = "created", "started", "progress"
RETRYING, COMPLETED, FAILED, CANCELLED, QUEUED = (
    "retrying",
    "completed",
    "failed",
    "cancelled",
    "queued",
)
# A workflow's step settled without running, and a step put back to wait by a workflow's
# retry; WORKFLOW: a workflow settled (job_id is the workflow's id; docs/workflows.md).
SKIPPED, WAITING, WORKFLOW = "skipped", "waiting", "workflow"
EVENT_TYPES = (
    CREATED, STARTED, PROGRESS, RETRYING, COMPLETED, FAILED, CANCELLED, QUEUED,
    SKIPPED, WAITING, WORKFLOW,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the event order: (writing transaction, id). Encoded as "xid.id"."""

    xid: int = 0
    id: int = 0

    def __str__(self) -> str:
        return f"{self.xid}.{self.id}"

    @classmethod
    def parse(cls, text: str | None) -> Position:
        if not text:
            return cls()
        xid, _, event_id = text.partition(".")
        try:
            return cls(int(xid), int(event_id)) if event_id else cls(0, int(xid))
        except ValueError:
            return cls()


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    xid: int
    type: str
    job_id: str
    owner_id: str
    queue: str
    job_type: str
    state: str
    attempt: int
    data: dict[str, Any] | None
    created_at: datetime

    @property
    def position(self) -> Position:
        return Position(self.xid, self.id)
