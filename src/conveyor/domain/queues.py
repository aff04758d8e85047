"""Queues as the overview shows them: counts per state, and pauses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor.domain.states import JobState


@dataclass(frozen=True, slots=True)
class QueueCount:
    queue: str
    state: JobState
    count: int
    oldest_created_at: datetime | None
    oldest_run_at: datetime | None = None  # when the longest-waiting one became due


@dataclass(frozen=True, slots=True)
class PausedQueue:
    queue: str
    paused_at: datetime
    paused_by: str | None
