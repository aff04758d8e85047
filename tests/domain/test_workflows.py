"""A workflow's declaration is checked before anything is stored: one error naming the
problem (a cycle, an unknown dependency, a duplicate name, too many steps)."""

from __future__ import annotations

import pytest

from conveyor.domain.states import JobState
from conveyor.domain.workflows import (
    MAX_DEPTH,
    MAX_STEPS,
    DependencyPolicy,
    StepSpec,
    WorkflowSpec,
    WorkflowState,
    chain,
    chord,
    settle,
    validate,
)
from conveyor.errors import InvalidInput


def s(name: str, *deps: str) -> StepSpec:
    return StepSpec(name, "noop", {}, deps)


def test_a_diamond_is_ordered_with_each_step_after_its_dependencies() -> None:
    order = [x.name for x in validate(WorkflowSpec("w", (s("d", "b", "c"), s("b", "a"),
                                                         s("c", "a"), s("a"))))]  # fmt: skip
    assert order[0] == "a" and order[-1] == "d" and sorted(order) == ["a", "b", "c", "d"]


def test_a_cycle_is_refused_naming_its_steps() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate(WorkflowSpec("w", (s("a", "c"), s("b", "a"), s("c", "b"), s("x"))))
    assert (
        "cycle" in caught.value.message and "a -> c -> b -> a" in caught.value.message
    )  # along depends_on
    assert caught.value.details["field"] == "steps"


def test_a_step_depending_on_itself_is_a_cycle() -> None:
    with pytest.raises(InvalidInput, match="cycle"):
        validate(WorkflowSpec("w", (s("a", "a"),)))


def test_an_unknown_dependency_is_refused_naming_the_step() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate(WorkflowSpec("w", (s("a"), s("b", "nope"))))
    assert (
        "'nope'" in caught.value.message and caught.value.details["field"] == "steps.1.depends_on"
    )


def test_a_duplicate_name_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        validate(WorkflowSpec("w", (s("a"), s("b"), s("a"))))
    assert caught.value.details["field"] == "steps.2.name"


def test_too_many_steps_are_refused_and_the_limit_itself_is_fine() -> None:
    fine = tuple(s(f"s{i}") for i in range(MAX_STEPS))
    assert len(validate(WorkflowSpec("w", fine))) == MAX_STEPS
    with pytest.raises(InvalidInput, match="at most"):
        validate(WorkflowSpec("w", (*fine, s("one-more"))))


def test_no_steps_and_bad_names_are_refused() -> None:
    with pytest.raises(InvalidInput):
        validate(WorkflowSpec("w", ()))
    with pytest.raises(InvalidInput):
        validate(WorkflowSpec("w", (s("has space"),)))


def test_a_workflow_s_state_follows_its_steps() -> None:
    assert settle([JobState.COMPLETED, JobState.WAITING]) is WorkflowState.RUNNING
    assert settle([JobState.COMPLETED, JobState.SKIPPED]) is WorkflowState.COMPLETED
    assert settle([JobState.CANCELLED, JobState.FAILED]) is WorkflowState.FAILED
    assert settle([JobState.CANCELLED, JobState.COMPLETED]) is WorkflowState.CANCELLED


def test_chain_and_chord_shapes() -> None:
    linked = chain("c", [s("a"), s("b"), s("c")])
    assert [x.depends_on for x in linked.steps] == [(), ("a",), ("b",)]
    joined = chord("j", [s("a"), s("b")], s("sum"))
    assert joined.steps[-1].depends_on == ("a", "b")
    assert joined.policy(joined.steps[0]) is DependencyPolicy.CANCEL


def test_a_chain_longer_than_the_depth_limit_is_refused() -> None:
    steps = [s("s0"), *(s(f"s{i}", f"s{i - 1}") for i in range(1, MAX_DEPTH))]
    assert len(validate(WorkflowSpec("w", tuple(steps)))) == MAX_DEPTH
    longer = (*steps, s("last", f"s{MAX_DEPTH - 1}"))
    with pytest.raises(InvalidInput, match="at most 200 steps long"):
        validate(WorkflowSpec("w", longer))
