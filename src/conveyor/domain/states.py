"""Job states and the transitions the state machine allows (DESIGN.md, "Job model")."""

from __future__ import annotations

from enum import StrEnum

from conveyor.errors import IllegalTransition


class JobState(StrEnum):
    WAITING = "waiting"  # a workflow step whose dependencies are not all settled yet
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # a workflow step not run: a dependency failed and its policy is skip


TERMINAL: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED}
)

# Each state maps to the states it may move to.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # Released by its last dependency (ready, or scheduled when it has a delay), or settled
    # without running by its policy (docs/workflows.md).
    JobState.WAITING: frozenset(
        {JobState.QUEUED, JobState.SCHEDULED, JobState.CANCELLED, JobState.SKIPPED}
    ),
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
    # Retried by a user; a workflow's retry puts a step behind others back to waiting.
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.WAITING}),
    JobState.CANCELLED: frozenset({JobState.QUEUED, JobState.WAITING}),
    JobState.SKIPPED: frozenset({JobState.QUEUED, JobState.WAITING}),  # a workflow's retry
}

CANCELLABLE: frozenset[JobState] = frozenset(
    {JobState.WAITING, JobState.SCHEDULED, JobState.QUEUED, JobState.RETRYING, JobState.RUNNING}
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
