"""A workflow declaration as the rows the store writes: the one implementation of it.

Both WorkflowService.submit (a client's workflow) and a cron fire of a workflow template
(scheduler/fires.py) come here; it lives below the services because the scheduler fires
without them. Each step is checked by `checked_job`, as a submission is, against its job
type as the type is now; what is refused is an InvalidInput naming `steps.<i>...`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from conveyor.domain.flow import RUNNING_QUOTA, LimitKey
from conveyor.domain.ids import uuid7, uuid7_many
from conveyor.domain.jobs import NewJob
from conveyor.domain.states import JobState
from conveyor.domain.workflows import StepSpec, WorkflowSpec, WorkflowState, fingerprint, validate
from conveyor.errors import ConveyorError, InvalidInput, NotFound, UnknownJobType
from conveyor.scheduler.checks import checked_job, flow_keys, payloads_adapter
from conveyor.store.workflows import WorkflowRows
from conveyor.tracing import current_context
from conveyor.worker.blueprint import HandlerSpec
from conveyor.worker.registry import Registry


@dataclass(slots=True)
class WorkflowDraft:
    """A declaration whose graph is checked (`workflow_draft`), its rows built a slice of
    its steps at a time (`rows`, in dependency order): a large submit stores each slice
    while it builds the next (services/workflows.py). A slice's steps are checked as it is
    built; InvalidInput names the first bad one."""

    registry: Registry
    spec: WorkflowSpec
    owner_id: str
    now: datetime
    ordered: list[StepSpec]  # dependencies first
    workflow: dict[str, Any]  # the workflows row
    running_quota: bool
    fair: bool
    ids: dict[str, str] = field(default_factory=dict)  # job ids of the steps built so far

    @property
    def id(self) -> str:
        return str(self.workflow["id"])

    def whole(self) -> WorkflowRows:
        """Every step's rows at once (a cron fire, the library door, a schedule's check):
        bad input raises InvalidInput and builds nothing."""
        return self.rows(0, len(self.ordered))

    def rows(self, start: int, stop: int) -> WorkflowRows:
        """The rows of steps `ordered[start:stop]` (the slices before it built first: its
        edges name their job ids)."""
        part = self.ordered[start:stop]
        registry, owner_id, fair = self.registry, self.owner_id, self.fair
        checked = checked_steps(registry, part, owner_id, fair)
        if checked is None:  # refused: the per-step check names the first bad step
            where = {step.name: i for i, step in enumerate(self.spec.steps)}
            checked = [checked_step(registry, s, where[s.name], owner_id, fair) for s in part]
        ids, workflow_id = self.ids, self.id
        steps: list[dict[str, Any]] = []
        limits: list[dict[str, Any]] = []
        for step, job in zip(part, checked, strict=True):
            ids[step.name] = job.id
            waiting = bool(step.depends_on)
            policy = self.spec.policy(step).value
            steps.append(step_row(job, step.name, self.now, workflow_id, policy, waiting))
            limits.extend(limit_rows(job))
        edges = [
            {"job_id": ids[step.name], "depends_on": ids[dep], "workflow_id": workflow_id}
            for step in part
            for dep in dict.fromkeys(step.depends_on)
        ]
        rows = WorkflowRows(workflow_id, self.workflow, steps, edges, limits, checked)
        return under_running_quota(rows, owner_id) if self.running_quota else rows


def workflow_draft(
    registry: Registry,
    spec: WorkflowSpec,
    owner_id: str,
    now: datetime,
    *,
    idempotency_key: str | None = None,
    running_quota: bool = False,
    fair: bool = True,
) -> WorkflowDraft:
    """The declaration's graph checked (InvalidInput naming the first problem) and its
    workflow row; its steps' rows come from the draft's `rows`."""
    ordered = validate(spec)
    workflow = {
        "id": uuid7(),
        "owner_id": owner_id,
        "name": spec.name,
        "state": WorkflowState.RUNNING.value,
        "created_at": now,
        "updated_at": now,
        "settled_at": None,
        "on_dependency_failure": spec.on_dependency_failure.value,
        "idempotency_key": idempotency_key,
        # Read only when the key is reused (store/workflows.py): a digest of 10,000 steps
        # was ~0.1 s of a key-less submit's CPU.
        "fingerprint": fingerprint(spec) if idempotency_key is not None else None,
    }
    return WorkflowDraft(registry, spec, owner_id, now, ordered, workflow, running_quota, fair)


def appended_rows(
    registry: Registry,
    steps: Sequence[StepSpec],
    owner_id: str,
    workflow_id: str,
    now: datetime,
    fair: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Steps a running step appends (`ctx.append_steps`), checked as a submitted
    workflow's are, as waiting rows and their job_limits rows. A step without a policy of
    its own takes the workflow's (the store reads it: None here). With `fair` (the setting
    fair_dispatch) a step takes its type's fair key, and its fair tag at release as a
    submitted step does (each waits for its appender, so the release trigger tags it)."""
    rows: list[dict[str, Any]] = []
    limits: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        job = checked_step(registry, step, i, owner_id, fair)
        policy = step.on_dependency_failure.value if step.on_dependency_failure else None
        rows.append(step_row(job, step.name, now, workflow_id, policy, waiting=True))
        limits.extend(limit_rows(job))
    return rows, limits


def step_row(
    job: NewJob, name: str, now: datetime, workflow_id: str, policy: str | None, waiting: bool
) -> dict[str, Any]:
    """A step's jobs row: waiting for its dependencies, or queued and ready now. The keys
    of `job_row`'s, and the step's own, in one dict (built 10,000 times by a large submit)."""
    return {
        "id": job.id, "owner_id": job.owner_id, "queue": job.queue, "type": job.type,
        "payload": job.payload, "priority": job.priority,
        "state": JobState.WAITING.value if waiting else JobState.QUEUED.value, "attempt": 0,
        "max_attempts": job.max_attempts, "run_at": now, "lease_expires_at": None,
        "worker_id": None, "timeout_s": job.timeout_s, "idempotency_key": job.idempotency_key,
        "progress": 0, "progress_message": None, "result": None, "errors": [],
        "tags": list(job.tags), "schedule_id": job.schedule_id, "created_at": now,
        "started_at": None, "finished_at": None, "unique_key": None, "unique_states": None,
        "limited": bool(job.limit_keys), "trace_context": job.trace_context,
        # the job type's fair key; the driver tags the ready steps (docs/workflows.md)
        "fair_key": job.fair_key, "fair_tag": now.timestamp(), "workflow_id": workflow_id,
        "step": name, "on_dependency_failure": policy, "ready_at": None if waiting else now,
        "dep_checks": 0, "depends": waiting,
    }  # fmt: skip


def limit_rows(job: NewJob) -> list[dict[str, Any]]:
    return [{"job_id": job.id, "name": lk.name, "key": lk.key} for lk in job.limit_keys]


def under_running_quota(rows: WorkflowRows, owner_id: str) -> WorkflowRows:
    """`rows` with each step holding the owner's running-quota limit (`workflow_draft`'s
    `running_quota`); also for a caller that learns of the owner's cap after building them
    (a library enqueue reads it in the caller's transaction: services/library.py)."""
    quota = LimitKey(RUNNING_QUOTA, owner_id)
    steps = [{**row, "limited": True} for row in rows.steps]
    limits = [*rows.limits, *({"job_id": row["id"], "name": quota.name, "key": quota.key}
                              for row in rows.steps)]  # fmt: skip
    jobs = [replace(j, limit_keys=(*j.limit_keys, quota)) for j in rows.jobs]
    return replace(rows, steps=steps, limits=limits, jobs=jobs)


def checked_steps(
    registry: Registry, ordered: Sequence[StepSpec], owner_id: str, fair: bool
) -> list[NewJob] | None:
    """`checked_step` of every step of `ordered`, each job type's payloads validated in one
    call (`list[Model]`) and what is the same for every step computed once; None when any
    step is refused (the caller then checks step by step, for the same error as ever)."""
    try:
        return _checked_batch(registry, ordered, owner_id, fair)
    except (ConveyorError, ValidationError):
        return None


def _checked_batch(
    registry: Registry, ordered: Sequence[StepSpec], owner_id: str, fair: bool
) -> list[NewJob]:
    payloads: list[dict[str, Any]] = [{} for _ in ordered]
    by_type: dict[str, list[int]] = {}
    for k, step in enumerate(ordered):
        by_type.setdefault(step.type, []).append(k)
    for type_name, ks in by_type.items():
        adapter = payloads_adapter(registry.get(type_name).payload_model)
        valid = adapter.validate_python([ordered[k].payload for k in ks])
        for k, dumped in zip(ks, adapter.dump_python(valid, mode="json"), strict=True):
            payloads[k] = dumped
    context = current_context()
    ids = uuid7_many(len(ordered))  # one read of the random source for the batch
    return [
        _step_job(registry.get(step.type), step, payload, owner_id, fair, context, job_id)
        for step, payload, job_id in zip(ordered, payloads, ids, strict=True)
    ]


def _step_job(
    spec: HandlerSpec,
    step: StepSpec,
    payload: dict[str, Any],
    owner_id: str,
    fair: bool,
    context: str | None,
    job_id: str,
) -> NewJob:
    """`checked_job`'s job for a step whose payload is validated (`payload`, dumped)."""
    if step.max_attempts is not None and step.max_attempts < 1:
        raise InvalidInput("max_attempts must be at least 1", field="max_attempts")
    queue = step.queue or spec.queue
    fair_key, keys = flow_keys(spec, owner_id, queue, payload, fair)
    return NewJob(
        type=spec.name,
        payload=payload,
        queue=queue,
        priority=step.priority if step.priority is not None else spec.priority,
        max_attempts=step.max_attempts or spec.max_attempts,
        timeout_s=step.timeout_s if step.timeout_s is not None else spec.timeout,
        owner_id=owner_id,
        fair_key=fair_key,
        limit_keys=keys,
        trace_context=context,
        id=job_id,
    )


def checked_step(registry: Registry, step: StepSpec, i: int, owner_id: str, fair: bool) -> NewJob:
    """The step as a job, checked as a submission is; errors name `steps.<i>...`. A step is
    never a unique job (its workflow is the unit), whatever its type says."""
    try:
        job = checked_job(
            registry,
            step.type,
            step.payload,
            owner_id,
            queue=step.queue,
            priority=step.priority,
            max_attempts=step.max_attempts,
            timeout_s=step.timeout_s,
            fair=fair,
        )
    except (NotFound, UnknownJobType) as exc:
        raise InvalidInput(
            f"step {step.name!r}: unknown job type {step.type!r}", field=f"steps.{i}.type"
        ) from exc
    except InvalidInput as exc:
        raise at_step(exc, i, step.name) from exc
    return replace(job, unique_key=None, unique_states=frozenset())


def at_step(exc: ConveyorError, i: int, name: str) -> InvalidInput:
    details: dict[str, Any] = dict(exc.details)
    field = details.pop("field", None)
    details["field"] = f"steps.{i}.{field}" if field else f"steps.{i}.payload"
    if "errors" in details:
        details["errors"] = [
            {**e, "loc": ["steps", i, "payload", *e.get("loc", ())]} for e in details["errors"]
        ]
    return InvalidInput(f"step {name!r}: {exc.message}", **details)


__all__: Sequence[str] = [
    "WorkflowDraft", "WorkflowRows", "appended_rows", "at_step", "checked_step",
    "checked_steps", "limit_rows", "step_row", "under_running_quota", "workflow_draft",
]  # fmt: skip
