"""Every API call the clients make, described once (path, body, idempotency, answer type).

`Client` and `AsyncClient` send these; neither builds a URL or a body of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from conveyor.client.models import (
    Job,
    JobPage,
    JobResult,
    JobType,
    Limits,
    Progress,
    Schedule,
    Tokens,
    User,
)
from conveyor.client.transport import Call, model, models, nothing
from conveyor.client.workflows import WorkflowSpec


class JobSpec(BaseModel):
    """One job to submit; unset options take the job type's defaults on the server."""

    model_config = ConfigDict(extra="forbid")

    type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    delay: float | None = None
    run_at: datetime | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    tags: list[str] = Field(default_factory=list)
    idempotency_key: str | None = None
    # limits of the type's submit_limits this job is under: name -> key
    limits: dict[str, str] | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def submit(spec: JobSpec) -> Call[Job]:
    """Idempotent only with a key: the server then answers the first job for a repeat."""
    keyed = spec.idempotency_key is not None
    return Call("POST", "/jobs", model(Job), json=spec.body(), idempotent=keyed)


def submit_many(specs: Iterable[JobSpec | Mapping[str, Any]]) -> Call[list[Job]]:
    """One transaction on the server: all stored or none. Retried only if every job has a
    key (a repeat then creates nothing new)."""
    jobs = [s if isinstance(s, JobSpec) else JobSpec.model_validate(s) for s in specs]
    keyed = all(j.idempotency_key is not None for j in jobs)
    body = {"jobs": [j.body() for j in jobs]}
    return Call("POST", "/jobs/batch", models(Job), json=body, idempotent=keyed)


def get(job_id: str) -> Call[Job]:
    return Call("GET", f"/jobs/{job_id}", model(Job), idempotent=True)


@dataclass
class Pages:
    """How far a listing has got: the call for the next page, and how many jobs are still
    wanted (`left`, None for all). Pages follow `next_cursor` until the server gives none."""

    params: dict[str, Any]
    size: int
    left: int | None = None
    cursor: str | None = None
    done: bool = False

    def next_call(self) -> Call[JobPage] | None:
        if self.done or self.left == 0:
            return None
        params = {**self.params, "limit": min(self.size, self.left or self.size)}
        if self.cursor:
            params["cursor"] = self.cursor
        return Call("GET", "/jobs", model(JobPage), params=params, idempotent=True)

    def take(self, page: JobPage) -> list[Job]:
        items = page.items[: self.left]
        self.left = None if self.left is None else self.left - len(items)
        self.cursor, self.done = page.next_cursor, page.next_cursor is None
        return items


def listing(
    state: str | Sequence[str] | None,
    created_after: datetime | None,
    created_before: datetime | None,
    page_size: int,
    limit: int | None,
    **filters: str | None,
) -> Pages:
    """A listing of jobs; several states are repeated `state=` parameters."""
    states = [state] if isinstance(state, str) else list(state or [])
    params = {
        "state": states or None,
        "created_after": created_after.isoformat() if created_after else None,
        "created_before": created_before.isoformat() if created_before else None,
        **filters,
    }
    kept = {name: value for name, value in params.items() if value is not None}
    return Pages(kept, page_size, limit)


def cancel(job_id: str) -> Call[Job]:
    return Call("POST", f"/jobs/{job_id}/cancel", model(Job))


def retry(job_id: str) -> Call[Job]:
    return Call("POST", f"/jobs/{job_id}/retry", model(Job))


def delete(job_id: str) -> Call[None]:
    return Call("DELETE", f"/jobs/{job_id}", nothing, idempotent=True)


def result(job_id: str) -> Call[JobResult]:
    return Call("GET", f"/jobs/{job_id}/result", model(JobResult), idempotent=True)


def progress(job_id: str) -> Call[Progress]:
    return Call("GET", f"/jobs/{job_id}/progress", model(Progress), idempotent=True)


def job_types() -> Call[list[JobType]]:
    return Call("GET", "/job-types", models(JobType), idempotent=True)


def stats() -> Call[dict[str, Any]]:
    return Call("GET", "/stats", _json_object, idempotent=True)


def _json_object(response: Any) -> dict[str, Any]:
    body = response.json()
    assert isinstance(body, dict)
    return body


# ---- accounts ---------------------------------------------------------------------------------
def login(email: str, password: str) -> Call[Tokens]:
    body = {"email": email, "password": password}
    return Call("POST", "/auth/login", model(Tokens), json=body, authenticated=False)


def logout(refresh_token: str) -> Call[None]:
    body = {"refresh_token": refresh_token}
    return Call("POST", "/auth/logout", nothing, json=body, authenticated=False)


# ---- schedules --------------------------------------------------------------------------------
def create_schedule(body: Mapping[str, Any]) -> Call[Schedule]:
    fields = {k: v for k, v in body.items() if v is not None}
    return Call("POST", "/schedules", model(Schedule), json=fields)


def list_schedules() -> Call[list[Schedule]]:
    return Call("GET", "/schedules", models(Schedule), idempotent=True)


def get_schedule(schedule_id: str) -> Call[Schedule]:
    return Call("GET", f"/schedules/{schedule_id}", model(Schedule), idempotent=True)


def update_schedule(schedule_id: str, changes: Mapping[str, Any]) -> Call[Schedule]:
    """PATCH the schedule; a `workflow` (a workflow schedule's new template) may be a
    `WorkflowSpec` (built with `workflow()`, `chain()`, ...) or its JSON body."""
    body = dict(changes)
    if isinstance(body.get("workflow"), WorkflowSpec):
        body["workflow"] = body["workflow"].body()
    return Call("PATCH", f"/schedules/{schedule_id}", model(Schedule), json=body)


def pause_schedule(schedule_id: str) -> Call[Schedule]:
    """Setting a flag: sending it twice is sending it once, so it may be retried."""
    return Call("POST", f"/schedules/{schedule_id}/pause", model(Schedule), idempotent=True)


def resume_schedule(schedule_id: str) -> Call[Schedule]:
    return Call("POST", f"/schedules/{schedule_id}/resume", model(Schedule), idempotent=True)


def delete_schedule(schedule_id: str) -> Call[None]:
    return Call("DELETE", f"/schedules/{schedule_id}", nothing, idempotent=True)


def limits(cursor: str | None = None, limit: int = 100) -> Call[Limits]:
    """Per limit and key: running, ready and rate tokens (a user's own jobs; all for admins)."""
    params: dict[str, Any] = {"limit": limit}
    if cursor:
        params["cursor"] = cursor
    return Call("GET", "/limits", model(Limits), params=params, idempotent=True)


# A user's flow settings an administrator changes; a key left out is kept, None is the default.
FLOW_SETTINGS = frozenset({"fair_weight", "max_queued", "max_running"})


def set_user_flow(user_id: str, changes: Mapping[str, Any]) -> Call[User]:
    """An admin's change of a user's fair-dispatch weight and quotas (the same body again
    sets the same values: idempotent)."""
    unknown = set(changes) - FLOW_SETTINGS
    if unknown:
        raise TypeError(f"not a flow setting: {', '.join(sorted(unknown))}")
    return Call(
        "PATCH", f"/admin/users/{user_id}", model(User), json=dict(changes), idempotent=True
    )


def list_users(after: str | None = None, limit: int = 200) -> Call[list[User]]:
    params: dict[str, Any] = {"limit": limit}
    if after:
        params["cursor"] = after
    return Call("GET", "/admin/users", models(User), params=params, idempotent=True)
