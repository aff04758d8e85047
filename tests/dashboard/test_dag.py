"""The workflow graph's geometry (dashboard/dag.py): layers by depth, edges pointing right,
wide layers folded into one node."""

from __future__ import annotations

from conveyor.dashboard.dag import MAX_PER_LAYER, NODE_W, depths, workflow_graph
from conveyor.domain.states import JobState
from conveyor.domain.workflows import DependencyPolicy, StepRecord


def step(name: str, *deps: str, state: JobState = JobState.WAITING) -> StepRecord:
    return StepRecord(
        name=name, job_id=f"job-{name}", type="noop", queue="default", state=state,
        depends_on=deps, on_dependency_failure=DependencyPolicy.CANCEL, attempt=0,
    )  # fmt: skip


def test_a_diamond_is_three_layers_with_four_edges_pointing_right() -> None:
    steps = [
        step("a", state=JobState.COMPLETED), step("b", "a", state=JobState.RUNNING),
        step("c", "a", state=JobState.FAILED), step("d", "b", "c"),
    ]  # fmt: skip
    assert depths(steps) == {"a": 0, "b": 1, "c": 1, "d": 2}
    graph = workflow_graph("diamond", steps)
    at = {n.label: n for n in graph.nodes}
    assert at["a"].x < at["b"].x == at["c"].x < at["d"].x
    assert at["b"].y != at["c"].y
    assert {n.label: n.state for n in graph.nodes} == {
        "a": "completed", "b": "running", "c": "failed", "d": "waiting"
    }  # fmt: skip
    assert at["d"].job_id == "job-d"
    assert len(graph.links) == 4
    for link in graph.links:  # from a right edge to a left edge further right
        start, end = link.path[1:].split(" C")[0], link.path.rsplit(" ", 1)[1]
        assert float(start.split(",")[0]) < float(end.split(",")[0])
    assert sorted(link.state for link in graph.links) == [
        "completed", "completed", "failed", "running"
    ]  # fmt: skip
    assert graph.width >= 3 * NODE_W
    assert "4 steps in 3 layers" in graph.summary


def test_the_depth_is_one_after_the_deepest_dependency() -> None:
    steps = [step("a"), step("b", "a"), step("c", "b"), step("d", "a", "c")]
    assert depths(steps)["d"] == 3


def test_a_wide_fan_out_is_folded_into_one_node_with_one_edge_each_way() -> None:
    parts = [step(f"p{i}", "start", state=JobState.COMPLETED) for i in range(1000)]
    steps = [
        step("start", state=JobState.COMPLETED),
        *parts,
        step("join", *(p.name for p in parts)),
    ]
    graph = workflow_graph("fan", steps)
    middle = [n for n in graph.nodes if n.x == graph.nodes[1].x]
    assert len(middle) == MAX_PER_LAYER
    more = middle[-1]
    assert more.state == "more" and more.label == f"+{1000 - MAX_PER_LAYER + 1} more"
    assert more.job_id is None and "completed" in more.title
    # start -> each shown part, start -> more, each shown part -> join, more -> join
    assert len(graph.links) == 2 * MAX_PER_LAYER
    assert len(graph.nodes) == MAX_PER_LAYER + 2


def test_no_steps_draw_an_empty_graph() -> None:
    graph = workflow_graph("empty", [])
    assert graph.nodes == [] and graph.links == []
