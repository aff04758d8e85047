"""Workflows inside a workflow: a declaration's nested parts flattened into its steps.

Celery's canvas nests a group in a chain and a chord in a chord; Oban Pro's workflows add
sub-workflows. Here a part of a declaration may be a workflow of its own (`Nested`), and the
declaration is flattened before anything else sees it: a nested part's steps become the
workflow's steps, named ``<part>.<step>`` (deeper: ``<part>.<inner>.<step>``), so the store,
the release of steps, retry, cancel and the doors know only the general DAG they already
prove correct (docs/workflows.md, "Nested workflows"). The rules:

* a dependency names a part beside it (a step or a nested part at the same level; at the
  top level also a step stored before: steps appended at run time may wait for those);
  naming a nested part means all of its *last* steps (those no other step of it waits
  for), so "after this sub-workflow" is after all of it;
* a nested part's own ``depends_on`` is given to its *first* steps (those that wait for
  nothing inside it), so none of it starts before its dependencies settled;
* a step without a failure policy of its own takes the nearest enclosing part's, else the
  workflow's.

A nested part has no state of its own: the workflow's state and events cover its steps.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from conveyor.domain.workflows import (
    STEP_NAME_PATTERN,
    DependencyPolicy,
    StepSpec,
    WorkflowSpec,
    policy_of,
    step_of,
)
from conveyor.errors import InvalidInput

MAX_NESTING = 8  # levels of parts inside parts
# Dependencies after naming nested parts are expanded (one per last step of each): a small
# body could otherwise ask for millions (5,000 steps each after a part of 5,000 last steps).
MAX_EDGES = 100_000


@dataclass(frozen=True, slots=True)
class Nested:
    """A workflow as a part of another: its `parts` (steps, or nested parts in turn) with
    dependencies among themselves, run after `depends_on` (parts beside it)."""

    name: str
    parts: tuple[StepSpec | Nested, ...]
    depends_on: tuple[str, ...] = ()
    on_dependency_failure: DependencyPolicy | None = None


Part = StepSpec | Nested
_FLAT_FIELD = re.compile(r"^steps\.(\d+)(\..*)?$")


@dataclass(frozen=True, slots=True)
class Flat:
    """A declaration flattened: the workflow, and where each of its steps was declared
    (``steps.1.steps.0``; empty when nothing was nested: every step where it is)."""

    spec: WorkflowSpec
    paths: tuple[str, ...] = ()

    @contextmanager
    def declared_places(self) -> Iterator[None]:
        """InvalidInput raised inside (by `validate`, a step's payload check: their fields
        say ``steps.<i>...`` of the flattened steps) re-raised naming the declared place."""
        try:
            yield
        except InvalidInput as exc:
            if not self.paths or "field" not in exc.details:
                raise
            raise type(exc)(exc.message, **self._moved(exc.details)) from exc

    def _moved(self, details: dict[str, Any]) -> dict[str, Any]:
        found = _FLAT_FIELD.match(str(details["field"]))
        if found is None or int(found[1]) >= len(self.paths):
            return details
        place = self.paths[int(found[1])]
        out = {**details, "field": place + (found[2] or "")}
        if isinstance(errors := details.get("errors"), list):  # at_step's: ["steps", i, ...]
            head = [int(x) if x.isdigit() else x for x in place.split(".")]
            out["errors"] = [
                {**e, "loc": [*head, *e["loc"][2:]]} if list(e.get("loc", ()))[:1] == ["steps"]
                else e
                for e in errors
            ]  # fmt: skip
        return out


def flattened(
    name: str,
    parts: Sequence[Part],
    on_dependency_failure: DependencyPolicy = DependencyPolicy.CANCEL,
) -> Flat:
    """The workflow of `parts` with every nested part's steps in its place; InvalidInput
    naming the part (``steps.<i>.steps.<j>...``) for a problem only nesting can have. A
    declaration without nested parts is its steps as given: `validate` checks those."""
    if all(isinstance(part, StepSpec) for part in parts):
        steps = tuple(p for p in parts if isinstance(p, StepSpec))
        return Flat(WorkflowSpec(name, steps, on_dependency_failure))
    out = _Out()
    _Level(parts, "", "steps", 0).emit((), None, out)
    spec = WorkflowSpec(name, tuple(out.steps), on_dependency_failure)
    return Flat(spec, tuple(out.paths))


class _Out:
    """The flattened steps and their declared places, refused as soon as their dependencies
    pass MAX_EDGES (before a small body has made millions)."""

    def __init__(self) -> None:
        self.steps: list[StepSpec] = []
        self.paths: list[str] = []
        self.edges = 0

    def add(self, step: StepSpec, path: str) -> None:
        self.edges += len(step.depends_on)
        if self.edges > MAX_EDGES:
            raise InvalidInput(
                f"a workflow has at most {MAX_EDGES:,} dependencies once each nested part "
                "named as one stands for its last steps",
                field=path,
            )
        self.steps.append(step)
        self.paths.append(path)


def declared(data: Mapping[str, Any]) -> Flat:
    """A declaration as JSON (POST /api/v1/workflows' body: an entry with `steps` is a
    nested part) flattened; KeyError, TypeError or ValueError for what is not one."""
    policy = policy_of(data.get("on_dependency_failure")) or DependencyPolicy.CANCEL
    return flattened(data["name"], tuple(_part_of(p) for p in data["steps"]), policy)


def _part_of(data: Mapping[str, Any]) -> Part:
    if "steps" not in data:
        return step_of(data)
    parts = tuple(_part_of(p) for p in data["steps"])
    after = tuple(data.get("depends_on") or ())
    return Nested(data["name"], parts, after, policy_of(data.get("on_dependency_failure")))


class _Level:
    """The parts at one level of nesting: their names checked, each one's last steps (what a
    dependency on it stands for) known before any of them is emitted, since a part may
    depend on one declared after it."""

    def __init__(self, parts: Sequence[Part], prefix: str, path: str, depth: int) -> None:
        if depth > MAX_NESTING:
            raise InvalidInput(f"workflows nest at most {MAX_NESTING} deep", field=path)
        if not parts:
            raise InvalidInput("a nested workflow needs at least one step", field=path)
        self.parts, self.prefix, self.path, self.depth = parts, prefix, path, depth
        self.index: dict[str, int] = {}
        for i, part in enumerate(parts):
            full = prefix + part.name
            if not all(re.fullmatch(STEP_NAME_PATTERN, n) for n in (full, part.name)):
                raise InvalidInput(
                    f"step name {full!r} must match {STEP_NAME_PATTERN}",
                    field=f"{path}.{i}.name",
                )
            if part.name in self.index:
                raise InvalidInput(f"duplicate step name {full!r}", field=f"{path}.{i}.name")
            self.index[part.name] = i
        self.inner: dict[int, _Level] = {
            i: _Level(p.parts, f"{prefix}{p.name}.", f"{path}.{i}.steps", depth + 1)
            for i, p in enumerate(parts)
            if isinstance(p, Nested)
        }
        named = {dep for part in parts for dep in part.depends_on}
        self.last = tuple(
            name for i, part in enumerate(parts) if part.name not in named
            for name in self.ends(i)
        )  # fmt: skip

    def ends(self, i: int) -> tuple[str, ...]:
        """What a dependency on part `i` stands for: the step, or a nested part's last steps."""
        inner = self.inner.get(i)
        return inner.last if inner is not None else (self.prefix + self.parts[i].name,)

    def emit(
        self,
        after: tuple[str, ...],
        policy: DependencyPolicy | None,
        out: _Out,
    ) -> None:
        """Every step of this level into `out`, the first ones after `after` (the enclosing
        part's dependencies), each with its policy or `policy` (the enclosing part's)."""
        for i, part in enumerate(self.parts):
            deps = self._resolved(i, part) or after
            if isinstance(part, Nested):
                self.inner[i].emit(deps, part.on_dependency_failure or policy, out)
            else:
                own = part.on_dependency_failure or policy
                step = replace(part, name=self.prefix + part.name, depends_on=deps,
                               on_dependency_failure=own)  # fmt: skip
                out.add(step, f"{self.path}.{i}")

    def _resolved(self, i: int, part: Part) -> tuple[str, ...]:
        deps: list[str] = []
        for dep in part.depends_on:
            if dep not in self.index and self.depth == 0:
                deps.append(dep)  # a step stored before (an append's), else `validate` says
                continue
            if dep not in self.index:
                raise InvalidInput(
                    f"step {self.prefix + part.name!r} depends on unknown step {dep!r}"
                    + (f" (a nested step names the parts beside it in {self.prefix[:-1]!r})"
                       if self.prefix else ""),
                    field=f"{self.path}.{i}.depends_on",
                )  # fmt: skip
            deps.extend(self.ends(self.index[dep]))
        return tuple(dict.fromkeys(deps))
