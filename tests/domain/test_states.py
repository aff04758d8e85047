"""Every legal and illegal transition of the job state machine."""

from __future__ import annotations

import itertools

import pytest

from conveyor.domain.states import TERMINAL, TRANSITIONS, JobState, can_transition, check_transition
from conveyor.errors import IllegalTransition

LEGAL = {
    ("scheduled", "queued"), ("scheduled", "cancelled"),
    ("queued", "running"), ("queued", "cancelled"),
    ("running", "completed"), ("running", "retrying"), ("running", "failed"),
    ("running", "queued"), ("running", "cancelled"),
    ("retrying", "queued"), ("retrying", "cancelled"),
    ("failed", "queued"), ("cancelled", "queued"),
    # workflows (docs/workflows.md): released, or settled by a policy; a workflow's retry
    ("waiting", "queued"), ("waiting", "scheduled"), ("waiting", "cancelled"),
    ("waiting", "skipped"),
    ("failed", "waiting"), ("cancelled", "waiting"), ("skipped", "queued"), ("skipped", "waiting"),
}  # fmt: skip
PAIRS = list(itertools.product(JobState, JobState))


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_each_pair_is_legal_exactly_when_the_design_says(
    current: JobState, target: JobState
) -> None:
    legal = (current.value, target.value) in LEGAL
    assert can_transition(current, target) is legal
    if legal:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_completed_is_final_and_every_state_is_covered() -> None:
    assert TRANSITIONS[JobState.COMPLETED] == frozenset()
    assert set(TRANSITIONS) == set(JobState)
    assert {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED} == TERMINAL
