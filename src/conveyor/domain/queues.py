"""Queues as the overview shows them: counts per state, and pauses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from conveyor.domain.states import JobState

# The characters of a queue name, as the API documents them. ASCII spelled out: `\w` is
# ASCII to JSON Schema's clients but Unicode to Python and pydantic, so `aµ` once passed
# the server while failing the documented pattern.
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_.:\-]+$"
QUEUE_NAME_MAX = 100


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
