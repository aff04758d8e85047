"""Request and response bodies of the workflow routes (docs/workflows.md, "REST API").

A request mirrors `conveyor.domain.workflows.WorkflowSpec`; the names and the graph are
checked by the domain's `validate()` (so the API, the client's builders and a cron template
meet one rule and one message), and each step's payload by its job type's model.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, Discriminator, Field, Tag

from conveyor.api.schemas import UNION_TAG, Strict
from conveyor.domain.nesting import MAX_NESTING, Flat, Nested, flattened
from conveyor.domain.queues import QUEUE_NAME_MAX, QUEUE_NAME_PATTERN
from conveyor.domain.states import JobState
from conveyor.domain.workflows import (
    MAX_STEPS,
    DependencyPolicy,
    StepRecord,
    StepSpec,
    WorkflowDetail,
    WorkflowRecord,
    WorkflowState,
)


class StepCreate(Strict):
    name: str = Field(
        min_length=1, max_length=100, description="Unique in the workflow.", examples=["fetch"]
    )
    type: str = Field(min_length=1, max_length=100, examples=["sleep"])
    payload: dict[str, Any] = Field(default_factory=dict, examples=[{"seconds": 1}])
    depends_on: list[str] = Field(
        default_factory=list, description="Names of the steps that must settle first."
    )
    on_dependency_failure: DependencyPolicy | None = Field(
        None, description="When a dependency fails or is cancelled; default: the workflow's."
    )
    queue: str | None = Field(
        None, min_length=1, max_length=QUEUE_NAME_MAX, pattern=QUEUE_NAME_PATTERN
    )
    # strict: `false` is not a number here (the schema says integer/number, so must we)
    priority: int | None = Field(
        None, ge=-1000, le=1000, strict=True, description="Higher runs first."
    )
    max_attempts: int | None = Field(None, ge=1, le=100, strict=True)
    timeout_s: float | None = Field(
        None, gt=0, le=7 * 86400, strict=True, description="Seconds per attempt."
    )

    def spec(self) -> StepSpec:
        return StepSpec(
            name=self.name,
            type=self.type,
            payload=self.payload,
            depends_on=tuple(self.depends_on),
            on_dependency_failure=self.on_dependency_failure,
            queue=self.queue,
            priority=self.priority,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
        )


def _kind(value: Any) -> str:
    """An entry with `steps` is a nested workflow, any other a step (whose errors then say
    what a step lacks). The tags are not body keys: the edge leaves them out of `loc`."""
    nested = "steps" in value if isinstance(value, dict) else isinstance(value, NestedCreate)
    return UNION_TAG.format("workflow" if nested else "step")


Part = Annotated[
    Annotated[StepCreate, Tag(UNION_TAG.format("step"))]
    | Annotated["NestedCreate", Tag(UNION_TAG.format("workflow"))],
    Discriminator(_kind),
]


class NestedCreate(Strict):
    """A workflow inside the workflow (docs/workflows.md, "Nested workflows"): its steps run
    as the workflow's, named `<name>.<step>`; a dependency on its name waits for all of it."""

    name: str = Field(min_length=1, max_length=100, examples=["transform"])
    steps: list[Part] = Field(
        min_length=1, description=f"Steps or nested workflows, at most {MAX_NESTING} deep."
    )
    depends_on: list[str] = Field(
        default_factory=list, description="Parts beside it that settle before its first steps."
    )
    on_dependency_failure: DependencyPolicy | None = Field(
        None, description="Its steps' policy unless their own is set; default: the enclosing."
    )

    def part(self) -> Nested:
        parts = tuple(_part(p) for p in self.steps)
        return Nested(self.name, parts, tuple(self.depends_on), self.on_dependency_failure)


def _part(part: StepCreate | NestedCreate) -> StepSpec | Nested:
    return part.part() if isinstance(part, NestedCreate) else part.spec()


class WorkflowCreate(Strict):
    name: str = Field(min_length=1, max_length=200, examples=["nightly-report"])
    on_dependency_failure: DependencyPolicy = Field(
        DependencyPolicy.CANCEL,
        description="A step's policy when a dependency fails or is cancelled: cancel it (and "
        "its dependents), run it anyway, or skip it (its dependents then run).",
    )
    steps: list[Part] = Field(
        min_length=1,
        description=f"At most {MAX_STEPS:,} (a workflow's appended steps count); an entry "
        "with `steps` is a nested workflow.",
    )

    def flat(self) -> Flat:
        """The declaration, nested workflows flattened (InvalidInput naming a bad one); its
        `declared_places` around the submit names a bad step where the body declared it."""
        parts = tuple(_part(p) for p in self.steps)
        return flattened(self.name, parts, self.on_dependency_failure)


class StepError(BaseModel):
    type: str | None = None
    message: str | None = None
    traceback: str | None = None


class StepOut(BaseModel):
    name: str
    job_id: str = Field(description="The step's job (GET /api/v1/jobs/{job_id}).")
    type: str
    queue: str
    state: JobState
    depends_on: list[str]
    on_dependency_failure: DependencyPolicy
    attempt: int
    result: Any = None
    error: StepError | None = None
    ready_at: datetime | None = Field(None, description="When it left `waiting`.")
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def of(cls, step: StepRecord, *, tracebacks: bool) -> Self:
        error = None
        if step.error is not None:
            error = StepError(
                type=step.error.get("type"),
                message=step.error.get("message"),
                traceback=step.error.get("traceback") if tracebacks else None,
            )
        return cls(
            name=step.name, job_id=step.job_id, type=step.type, queue=step.queue,
            state=step.state, depends_on=list(step.depends_on),
            on_dependency_failure=step.on_dependency_failure, attempt=step.attempt,
            result=step.result, error=error, ready_at=step.ready_at,
            started_at=step.started_at, finished_at=step.finished_at,
        )  # fmt: skip


class Edge(BaseModel):
    """`to` waits for `from_` (`from` in JSON)."""

    from_: str = Field(alias="from", serialization_alias="from")
    to: str


class WorkflowOut(BaseModel):
    id: str
    owner_id: str
    name: str
    state: WorkflowState
    created_at: datetime
    updated_at: datetime
    settled_at: datetime | None
    step_count: int
    counts: dict[str, int] = Field(description="Steps per job state.")

    @classmethod
    def of(cls, w: WorkflowRecord) -> Self:
        return cls(
            id=w.id, owner_id=w.owner_id, name=w.name, state=w.state, created_at=w.created_at,
            updated_at=w.updated_at, settled_at=w.settled_at, step_count=w.steps,
            counts=dict(w.counts),
        )  # fmt: skip


class WorkflowDetailOut(WorkflowOut):
    steps: list[StepOut] = Field(description="Each after the steps it depends on.")
    edges: list[Edge]

    @classmethod
    def of_detail(cls, detail: WorkflowDetail, *, tracebacks: bool) -> Self:
        base = WorkflowOut.of(detail.workflow).model_dump()
        steps = [StepOut.of(s, tracebacks=tracebacks) for s in detail.steps]
        edges = [Edge(**{"from": d, "to": s.name}) for s in detail.steps for d in s.depends_on]
        return cls(**base, steps=steps, edges=edges)


class WorkflowPage(BaseModel):
    items: list[WorkflowOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")
