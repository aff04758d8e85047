"""A workflow's steps as an inline SVG graph, drawn by our own code: geometry here, markup in
`_workflow.html` (as the charts: charts.py).

Layered by depth: a step with no dependencies is in the first column, any other one column
after its deepest dependency; so every edge points right. Within a column steps keep the
workflow's order (dependencies first). A wide column (a fan-out of thousands) shows its first
`MAX_PER_LAYER - 1` steps and one node standing for the rest, with their states counted;
edges to and from the hidden steps go to that node, once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor.domain.workflows import StepRecord

NODE_W, NODE_H = 150, 34
COL_GAP, ROW_GAP, MARGIN = 56, 12, 8
MAX_PER_LAYER = 12


@dataclass(frozen=True, slots=True)
class Node:
    x: float
    y: float
    label: str
    state: str  # css class: the job state, or "more" for the node of hidden steps
    title: str
    job_id: str | None  # the step's job page; None for the node of hidden steps


@dataclass(frozen=True, slots=True)
class Link:
    path: str  # an SVG path (a cubic curve from the parent's right to the child's left)
    state: str  # the parent's state: a settled parent's edge is drawn solid


@dataclass
class Graph:
    title: str
    summary: str
    width: int
    height: int
    nodes: list[Node] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    node_w: int = NODE_W
    node_h: int = NODE_H


def depths(steps: Sequence[StepRecord]) -> dict[str, int]:
    """Each step's column: 0 without dependencies, else one after its deepest dependency.
    `steps` come dependencies first (as WorkflowDetail gives them); a name not among them
    counts as depth 0."""
    found: dict[str, int] = {}
    for step in steps:
        found[step.name] = 1 + max((found.get(d, 0) for d in step.depends_on), default=-1)
    return found


def workflow_graph(name: str, steps: Sequence[StepRecord]) -> Graph:
    column = depths(steps)
    layers: list[list[StepRecord]] = [[] for _ in range(max(column.values(), default=-1) + 1)]
    for step in steps:
        layers[column[step.name]].append(step)
    tallest = max((min(len(layer), MAX_PER_LAYER) for layer in layers), default=0)
    width = MARGIN * 2 + len(layers) * NODE_W + max(0, len(layers) - 1) * COL_GAP
    height = MARGIN * 2 + tallest * NODE_H + max(0, tallest - 1) * ROW_GAP
    states = Counter(s.state.value for s in steps)
    summary = f"{len(steps)} steps in {len(layers)} layers: " + ", ".join(
        f"{n} {state}" for state, n in sorted(states.items())
    )
    graph = Graph(f"Workflow {name}", summary, max(width, NODE_W), max(height, NODE_H))
    where: dict[str, tuple[float, float]] = {}  # each step's node (hidden ones: the "more")
    for i, layer in enumerate(layers):
        x = MARGIN + i * (NODE_W + COL_GAP)
        shown, hidden = layer[: MAX_PER_LAYER - 1], layer[MAX_PER_LAYER - 1 :]
        if len(layer) <= MAX_PER_LAYER:
            shown, hidden = layer, []
        for row, step in enumerate(shown):
            y = MARGIN + row * (NODE_H + ROW_GAP)
            where[step.name] = (x, y)
            title = f"{step.name}: {step.type}, {step.state.value}"
            graph.nodes.append(Node(x, y, step.name, step.state.value, title, step.job_id))
        if hidden:
            y = MARGIN + len(shown) * (NODE_H + ROW_GAP)
            counted = Counter(s.state.value for s in hidden)
            text = ", ".join(f"{n} {state}" for state, n in sorted(counted.items()))
            graph.nodes.append(Node(x, y, f"+{len(hidden)} more", "more", text, None))
            for step in hidden:
                where[step.name] = (x, y)
    drawn: set[tuple[tuple[float, float], tuple[float, float]]] = set()
    state_of = {s.name: s.state.value for s in steps}
    for step in steps:
        for dep in step.depends_on:
            if dep not in where:
                continue
            ends = (where[dep], where[step.name])
            if ends in drawn:
                continue
            drawn.add(ends)
            graph.links.append(Link(_curve(*ends), state_of.get(dep, "waiting")))
    return graph


def _curve(start: tuple[float, float], end: tuple[float, float]) -> str:
    x1, y1 = start[0] + NODE_W, start[1] + NODE_H / 2
    x2, y2 = end[0], end[1] + NODE_H / 2
    bend = (x2 - x1) / 2
    return (
        f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    )
