"""The client's workflow builders mirror the server's (conveyor.domain.workflows) without
importing them: the same declarations give the same body the API reads."""

from __future__ import annotations

from typing import Any

from conveyor.api.workflow_schemas import WorkflowCreate
from conveyor.client import (
    NestedSpec,
    StepSpec,
    WorkflowSpec,
    chain,
    chord,
    group,
    nested,
    step,
    workflow,
)
from conveyor.domain import workflows as domain


def server_side(spec: WorkflowSpec) -> domain.WorkflowSpec:
    """What the API makes of the client's body."""
    return WorkflowCreate.model_validate(spec.body()).flat().spec


def d(name: str, *deps: str, **options: Any) -> domain.StepSpec:
    return domain.StepSpec(name, "noop", {"n": name}, tuple(deps), **options)


def c(name: str, *deps: str, **options: Any) -> StepSpec:
    return step(name, "noop", {"n": name}, depends_on=deps, **options)


def test_chain_group_chord_and_a_dag_match_the_servers_builders() -> None:
    names = ["a", "b", "c"]
    assert server_side(chain("x", [c(n) for n in names])) == domain.chain(
        "x", [d(n) for n in names]
    )
    assert server_side(group("x", [c(n) for n in names])) == domain.group(
        "x", [d(n) for n in names]
    )
    assert server_side(chord("x", [c(n) for n in names], c("join"))) == domain.chord(
        "x", [d(n) for n in names], d("join")
    )
    dag = workflow(
        "x",
        [
            c("a"),
            c("b", "a", on_dependency_failure="skip", queue="q", priority=3),
            c("d", "a", "b"),
        ],
        on_dependency_failure="run",
    )
    assert server_side(dag) == domain.WorkflowSpec(
        "x",
        (
            d("a"),
            d("b", "a", on_dependency_failure=domain.DependencyPolicy.SKIP, queue="q", priority=3),
            d("d", "a", "b"),
        ),
        domain.DependencyPolicy.RUN,
    )


def test_a_body_leaves_out_what_is_unset() -> None:
    body = workflow("x", [step("a", "noop")]).body()
    assert body == {
        "name": "x",
        "steps": [{"name": "a", "type": "noop", "payload": {}, "depends_on": []}],
        "on_dependency_failure": "cancel",
    }


def inner(full: str, *deps: str, **options: Any) -> domain.StepSpec:
    """A nested step as the server flattens it: its full name, the payload `c` gave it."""
    return domain.StepSpec(full, "noop", {"n": full.rsplit(".", 1)[-1]}, deps, **options)


def test_nested_workflows_reach_the_server_as_their_steps() -> None:
    run = domain.DependencyPolicy.RUN
    clean = nested("clean", group("ignored", [c("a"), c("b")]), on_dependency_failure="run")
    assert server_side(chain("etl", [c("fetch"), clean, c("load")])) == domain.WorkflowSpec(
        "etl",
        (
            d("fetch"),
            inner("clean.a", "fetch", on_dependency_failure=run),
            inner("clean.b", "fetch", on_dependency_failure=run),
            d("load", "clean.a", "clean.b"),
        ),
    )
    header: list[StepSpec | NestedSpec] = [nested("left", chain("l", [c("x"), c("y")])), c("right")]
    assert server_side(chord("c", header, c("join"))) == domain.WorkflowSpec(
        "c",
        (inner("left.x"), inner("left.y", "left.x"), d("right"), d("join", "left.y", "right")),
    )
