"""Workflows as their submitter declares them: steps, the dependencies between them, policies.

A workflow is a set of steps, each an ordinary job row; a step waits (`JobState.WAITING`) until
every step it depends on is settled, then becomes ready in the transaction that settles the
last of them (docs/workflows.md). This module holds what needs no database: the declaration,
its validation (one clear error naming the problem, before anything is stored), the shapes
built on the general DAG (`chain`, `group`, `chord`) and how a workflow's state follows from
its steps'.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

from conveyor.domain.states import JobState
from conveyor.errors import InvalidInput

MAX_STEPS = 10_000  # per workflow, appended steps included (docs/workflows.md, "Limits")
# The longest chain of dependencies (steps on one path): a failure cancels or skips down a
# chain one nested trigger per step, and both databases bound that nesting (SQLite's 1,000
# trigger levels, PostgreSQL's max_stack_depth: a chain of 400 failed there; docs/workflows.md).
MAX_DEPTH = 200
STEP_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
_STEP_NAME = re.compile(STEP_NAME_PATTERN)
WORKFLOW_EVENT = "workflow"  # the event type of a workflow's own state changes


class DependencyPolicy(StrEnum):
    """What becomes of a step when one of its dependencies fails, is cancelled or skipped."""

    CANCEL = "cancel"  # the step is cancelled, and so are its own dependents (the default)
    RUN = "run"  # the step runs anyway, once every dependency is settled
    SKIP = "skip"  # the step does not run; its dependents see it settled, with no result


class WorkflowState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A dependency that settled in one of these lets its dependents run under any policy; one
# that settled otherwise (failed, cancelled) applies the dependent's policy.
SATISFIED: frozenset[JobState] = frozenset({JobState.COMPLETED, JobState.SKIPPED})


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: a job of `type` with `payload`, run once every step of `depends_on` settled."""

    name: str
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    on_dependency_failure: DependencyPolicy | None = None  # None: the workflow's policy
    queue: str | None = None  # None: the job type's default queue
    priority: int | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    steps: tuple[StepSpec, ...]
    on_dependency_failure: DependencyPolicy = DependencyPolicy.CANCEL

    def policy(self, step: StepSpec) -> DependencyPolicy:
        return step.on_dependency_failure or self.on_dependency_failure


def validate(spec: WorkflowSpec, *, existing: Iterable[str] = ()) -> list[StepSpec]:
    """The steps in an order where each comes after its dependencies; InvalidInput naming the
    first problem otherwise. `existing`: step names already stored (steps appended at run
    time may depend on them, and may not reuse them)."""
    if not re.fullmatch(r"^.{1,200}$", spec.name):
        raise InvalidInput("a workflow's name is 1 to 200 characters", field="name")
    if not spec.steps:
        raise InvalidInput("a workflow needs at least one step", field="steps")
    known = set(existing)
    if len(spec.steps) + len(known) > MAX_STEPS:
        raise InvalidInput(
            f"a workflow has at most {MAX_STEPS:,} steps ({len(spec.steps) + len(known):,} given)",
            field="steps",
        )
    names: dict[str, StepSpec] = {}
    for i, step in enumerate(spec.steps):
        if not _STEP_NAME.fullmatch(step.name):
            raise InvalidInput(
                f"step name {step.name!r} must match {STEP_NAME_PATTERN}", field=f"steps.{i}.name"
            )
        if step.name in names or step.name in known:
            raise InvalidInput(f"duplicate step name {step.name!r}", field=f"steps.{i}.name")
        names[step.name] = step
    for i, step in enumerate(spec.steps):
        for dep in step.depends_on:
            if dep not in names and dep not in known:
                raise InvalidInput(
                    f"step {step.name!r} depends on unknown step {dep!r}",
                    field=f"steps.{i}.depends_on",
                )
    ordered = _ordered(names)
    depth: dict[str, int] = {}
    for step in ordered:
        depth[step.name] = 1 + max((depth.get(d, 0) for d in step.depends_on), default=0)
        if depth[step.name] > MAX_DEPTH:
            raise InvalidInput(
                f"a chain of dependencies is at most {MAX_DEPTH} steps long (step "
                f"{step.name!r} is the {depth[step.name]}th of one)",
                field="steps",
            )
    return ordered


def _ordered(steps: Mapping[str, StepSpec]) -> list[StepSpec]:
    """Kahn's order over the new steps (dependencies on stored steps are already settled
    in order); a cycle is refused naming its steps."""
    pending = {n: {d for d in s.depends_on if d in steps} for n, s in steps.items()}
    dependents: dict[str, list[str]] = {n: [] for n in steps}
    for name, deps in pending.items():
        for dep in deps:
            dependents[dep].append(name)
    ready = [n for n, deps in pending.items() if not deps]
    out: list[StepSpec] = []
    while ready:
        name = ready.pop()
        out.append(steps[name])
        for child in dependents[name]:
            pending[child].discard(name)
            if not pending[child]:
                ready.append(child)
    if len(out) < len(steps):
        raise InvalidInput(f"the steps form a cycle: {' -> '.join(_cycle(pending))}", field="steps")
    return out


def _cycle(pending: Mapping[str, set[str]]) -> list[str]:
    """One cycle among the steps left with dependencies (each of them is on or behind one)."""
    start = min(n for n, deps in pending.items() if deps)
    seen: list[str] = []
    node = start
    while node not in seen:
        seen.append(node)
        node = min(pending[node])
    return [*seen[seen.index(node) :], node]


def step_key(workflow_id: str, step: str) -> str:
    """A step's idempotency key, as its handler (`ctx.idempotency_key`) and its job's record
    read it: stable across attempts and retries. Derived from the step's workflow and name,
    not stored: no query looks a step up by it, and stored it took a unique index entry at
    each of the step's state changes (and answered an owner's own submit of that key with
    the step)."""
    return f"wf:{workflow_id}:{step}"


def idempotency_key_of(key: str | None, workflow_id: str | None, step: str | None) -> str | None:
    """A job's idempotency key as read: its own (a submit's), else a step's derived one
    (`step_key`; a step stored before session 15 has it stored too), else None."""
    if key is None and workflow_id is not None and step is not None:
        return step_key(workflow_id, step)
    return key


def fingerprint(spec: WorkflowSpec) -> str:
    """What an Idempotency-Key is compared on: a digest of the whole declaration, so the
    same request again is answered with the stored workflow and another one is refused."""
    steps = [
        [s.name, s.type, s.payload, list(s.depends_on), s.on_dependency_failure, s.queue,
         s.priority, s.max_attempts, s.timeout_s]
        for s in spec.steps
    ]  # fmt: skip
    body = [spec.name, spec.on_dependency_failure, steps]
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def spec_json(spec: WorkflowSpec) -> dict[str, Any]:
    """The declaration as JSON (a cron schedule stores its template so; the REST body's
    shape), read back by `spec_of`."""
    steps = [
        {"name": s.name, "type": s.type, "payload": s.payload, "depends_on": list(s.depends_on),
         "on_dependency_failure": s.on_dependency_failure, "queue": s.queue,
         "priority": s.priority, "max_attempts": s.max_attempts, "timeout_s": s.timeout_s}
        for s in spec.steps
    ]  # fmt: skip
    return {"name": spec.name, "on_dependency_failure": spec.on_dependency_failure.value,
            "steps": steps}  # fmt: skip


def spec_of(data: dict[str, Any]) -> WorkflowSpec:
    """`spec_json`'s inverse."""
    steps = tuple(step_of(s) for s in data["steps"])
    policy = DependencyPolicy(data.get("on_dependency_failure") or DependencyPolicy.CANCEL)
    return WorkflowSpec(data["name"], steps, policy)


def step_of(s: Mapping[str, Any]) -> StepSpec:
    """A step as JSON (an entry of `spec_json`'s steps) as the declaration's step."""
    return StepSpec(
        name=s["name"], type=s["type"], payload=dict(s.get("payload") or {}),
        depends_on=tuple(s.get("depends_on") or ()),
        on_dependency_failure=policy_of(s.get("on_dependency_failure")),
        queue=s.get("queue"), priority=s.get("priority"),
        max_attempts=s.get("max_attempts"), timeout_s=s.get("timeout_s"),
    )  # fmt: skip


def policy_of(value: str | None) -> DependencyPolicy | None:
    return DependencyPolicy(value) if value else None


def settle(states: Iterable[JobState]) -> WorkflowState:
    """A workflow's state from its steps': running while one is unsettled; then failed if
    one failed, else cancelled if one was cancelled, else completed."""
    seen = set(states)
    if any(s not in SETTLED for s in seen):
        return WorkflowState.RUNNING
    if JobState.FAILED in seen:
        return WorkflowState.FAILED
    if JobState.CANCELLED in seen:
        return WorkflowState.CANCELLED
    return WorkflowState.COMPLETED


SETTLED: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED}
)


def chain(name: str, steps: Sequence[StepSpec]) -> WorkflowSpec:
    """Each step after the one before it."""
    linked = [steps[0], *(_after(s, (p.name,)) for p, s in pairwise(steps))]
    return WorkflowSpec(name, tuple(linked))


def group(name: str, steps: Sequence[StepSpec]) -> WorkflowSpec:
    """The steps side by side, none depending on another."""
    return WorkflowSpec(name, tuple(steps))


def chord(name: str, header: Sequence[StepSpec], body: StepSpec) -> WorkflowSpec:
    """The header's steps side by side, then `body` once all of them settled (it reads their
    results by step name)."""
    return WorkflowSpec(name, (*header, _after(body, tuple(s.name for s in header))))


def _after(step: StepSpec, deps: tuple[str, ...]) -> StepSpec:
    return StepSpec(
        step.name, step.type, step.payload, (*step.depends_on, *deps), step.on_dependency_failure,
        step.queue, step.priority, step.max_attempts, step.timeout_s,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A stored step: its job, where it stands, and what it produced."""

    name: str
    job_id: str
    type: str
    queue: str
    state: JobState
    depends_on: tuple[str, ...]
    on_dependency_failure: DependencyPolicy
    attempt: int
    result: Any = None
    error: dict[str, Any] | None = None
    ready_at: datetime | None = None  # when it left `waiting` (its queue wait counts from it)
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    id: str
    owner_id: str
    name: str
    state: WorkflowState
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None
    steps: int
    counts: Mapping[str, int] = field(default_factory=dict)  # steps per job state


@dataclass(frozen=True, slots=True)
class WorkflowDetail:
    workflow: WorkflowRecord
    steps: tuple[StepRecord, ...]  # in an order where each comes after its dependencies
