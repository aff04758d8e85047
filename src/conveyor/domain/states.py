"""Job states and the transitions the state machine allows (DESIGN.md, "Job model")."""

from __future__ import annotations

from enum import StrEnum

from conveyor.errors import IllegalTransition


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobState] = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})

# Each state maps to the states it may move to.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.SCHEDULED: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.RETRYING,
            JobState.FAILED,
            JobState.QUEUED,  # rescued after a lost lease, or released at shutdown
            JobState.CANCELLED,
        }
    ),
    JobState.RETRYING: frozenset({JobState.QUEUED, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),  # retried by a user
    JobState.CANCELLED: frozenset({JobState.QUEUED}),  # retried by a user
}

CANCELLABLE: frozenset[JobState] = frozenset(
    {JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING, JobState.RUNNING}
)
USER_RETRYABLE: frozenset[JobState] = frozenset({JobState.FAILED, JobState.CANCELLED})


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: JobState, target: JobState) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(
            f"a {current.value} job cannot become {target.value}",
            current=current.value,
            target=target.value,
        )
