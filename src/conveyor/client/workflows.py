"""Workflows from the client: declare them (`step`, `workflow`, `chain`, `group`, `chord`,
`nested`), submit and follow them (`client.workflows`, `async_client.workflows`).

    from conveyor.client import Client, chord, step

    spec = chord(
        "report",
        [step(f"part-{i}", "sleep", {"seconds": 1}) for i in range(3)],
        step("merge", "noop"),
    )
    with Client(url, api_key=key) as conveyor:
        done = conveyor.workflows.wait(conveyor.workflows.submit(spec).id, timeout=60)
        print(done.state, done.results)

The declarations mirror the server's (conveyor.domain.workflows) instead of importing them:
the server checks the graph and every payload, and answers 422 naming the problem.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from conveyor.client.models import JobEvent, Workflow, WorkflowPage
from conveyor.client.stream import Follow
from conveyor.client.transport import Call, model, nothing

T = TypeVar("T")


class _Sending(Protocol):
    """What `Workflows` needs of `Client` (named so, not imported: the clients import this)."""

    def _call(self, call: Call[T]) -> T: ...
    def _follow(self, follow: Follow) -> Iterator[JobEvent]: ...


class _AsyncSending(Protocol):
    """What `AsyncWorkflows` needs of `AsyncClient`."""

    async def _call(self, call: Call[T]) -> T: ...
    def _follow(self, follow: Follow) -> AsyncIterator[JobEvent]: ...


POLICIES = ("cancel", "run", "skip")  # what becomes of a step when a dependency fails


class StepSpec(BaseModel):
    """One step: a job of `type`, run once the steps named in `depends_on` settled."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    type: str
    payload: dict[str, Any] = Field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    on_dependency_failure: str | None = None  # cancel, run or skip; None: the workflow's
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None

    def after(self, *names: str) -> StepSpec:
        """This step, also waiting for `names`."""
        return self.model_copy(update={"depends_on": (*self.depends_on, *names)})


class NestedSpec(BaseModel):
    """A workflow inside a workflow: its steps run as the workflow's, named `<name>.<step>`;
    a step that depends on `name` waits for all of it (docs/workflows.md, "Nested workflows")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    steps: tuple[StepSpec | NestedSpec, ...]
    depends_on: tuple[str, ...] = ()
    on_dependency_failure: str | None = None  # its steps' unless their own; None: enclosing

    def after(self, *names: str) -> NestedSpec:
        """This nested workflow, its first steps also waiting for `names`."""
        return self.model_copy(update={"depends_on": (*self.depends_on, *names)})


Part = StepSpec | NestedSpec


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    steps: tuple[StepSpec | NestedSpec, ...]
    on_dependency_failure: str = "cancel"

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def step(
    name: str,
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    depends_on: Iterable[str] = (),
    **options: Any,
) -> StepSpec:
    """A step. Options: on_dependency_failure (cancel, run, skip), queue, priority,
    max_attempts, timeout_s."""
    return StepSpec(
        name=name, type=type, payload=dict(payload or {}), depends_on=tuple(depends_on), **options
    )


def workflow(
    name: str, steps: Iterable[Part], *, on_dependency_failure: str = "cancel"
) -> WorkflowSpec:
    """A general DAG: each step (or nested workflow) names the parts it depends on."""
    return WorkflowSpec(name=name, steps=tuple(steps), on_dependency_failure=on_dependency_failure)


def nested(
    name: str,
    parts: WorkflowSpec | Iterable[Part],
    *,
    depends_on: Iterable[str] = (),
    on_dependency_failure: str | None = None,
) -> NestedSpec:
    """A workflow (or its parts) as one part of another: ``chain("etl", [step("fetch", ...),
    nested("clean", group("clean", parts)), step("load", ...)])`` runs every part of "clean"
    after "fetch" and "load" after all of them. A `WorkflowSpec` lends its steps only: its
    steps take `on_dependency_failure` if given, else the enclosing workflow's policy."""
    steps = parts.steps if isinstance(parts, WorkflowSpec) else tuple(parts)
    return NestedSpec(
        name=name, steps=steps, depends_on=tuple(depends_on),
        on_dependency_failure=on_dependency_failure,
    )  # fmt: skip


def chain(name: str, steps: Sequence[Part], **options: Any) -> WorkflowSpec:
    """Each part after the one before it (after a nested workflow: after all of it)."""
    linked = [s if i == 0 else s.after(steps[i - 1].name) for i, s in enumerate(steps)]
    return workflow(name, linked, **options)


def group(name: str, steps: Sequence[Part], **options: Any) -> WorkflowSpec:
    """The parts side by side, none waiting for another."""
    return workflow(name, steps, **options)


def chord(name: str, header: Sequence[Part], body: Part, **options: Any) -> WorkflowSpec:
    """The header's parts side by side, then `body` once all of them settled (its handler
    reads their results by step name: `ctx.results["part-0"]`, a nested part's steps by
    their full names: `ctx.results["clean.part-0"]`)."""
    return workflow(name, [*header, body.after(*(s.name for s in header))], **options)


# ---- calls --------------------------------------------------------------------------------------
def submit_call(spec: WorkflowSpec | Mapping[str, Any], key: str | None) -> Call[Workflow]:
    """Idempotent only with a key: the server then answers the first workflow for a repeat."""
    body = spec.body() if isinstance(spec, WorkflowSpec) else dict(spec)
    headers = {"Idempotency-Key": key} if key else {}
    return Call(
        "POST",
        "/workflows",
        model(Workflow),
        json=body,
        headers=headers,
        idempotent=key is not None,
    )


def get_call(workflow_id: str) -> Call[Workflow]:
    return Call("GET", f"/workflows/{workflow_id}", model(Workflow), idempotent=True)


def page_call(state: str | None, cursor: str | None, size: int) -> Call[WorkflowPage]:
    params: dict[str, Any] = {"limit": size}
    if state:
        params["state"] = state
    if cursor:
        params["cursor"] = cursor
    return Call("GET", "/workflows", model(WorkflowPage), params=params, idempotent=True)


def cancel_call(workflow_id: str) -> Call[Workflow]:
    return Call("POST", f"/workflows/{workflow_id}/cancel", model(Workflow))


def retry_call(workflow_id: str) -> Call[Workflow]:
    return Call("POST", f"/workflows/{workflow_id}/retry", model(Workflow))


def delete_call(workflow_id: str) -> Call[None]:
    return Call("DELETE", f"/workflows/{workflow_id}", nothing, idempotent=True)


# ---- the clients' `workflows` -------------------------------------------------------------------
class Workflows:
    """`Client.workflows`: submit, read, list, cancel, retry, delete, watch, wait."""

    def __init__(self, client: _Sending) -> None:
        self._client = client

    def submit(
        self, spec: WorkflowSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Workflow:
        """Store the whole DAG at once (or nothing: ValidationFailed names the problem)."""
        return self._client._call(submit_call(spec, idempotency_key))

    def get(self, workflow_id: str) -> Workflow:
        return self._client._call(get_call(workflow_id))

    def list(
        self, *, state: str | None = None, page_size: int = 100, limit: int | None = None
    ) -> Iterator[Workflow]:
        """Your workflows (an admin's: everyone's), newest first, page after page."""
        cursor: str | None = None
        left = limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            page = self._client._call(page_call(state, cursor, size))
            items = page.items if left is None else page.items[:left]
            yield from items
            left = None if left is None else left - len(items)
            cursor = page.next_cursor
            if cursor is None:
                return

    def cancel(self, workflow_id: str) -> Workflow:
        return self._client._call(cancel_call(workflow_id))

    def retry(self, workflow_id: str) -> Workflow:
        """Run failed, cancelled and skipped steps again (and what follows them)."""
        return self._client._call(retry_call(workflow_id))

    def delete(self, workflow_id: str) -> None:
        self._client._call(delete_call(workflow_id))

    def watch(
        self, workflow_id: str, timeout: float | None = None, *, after: str | None = None
    ) -> Iterator[JobEvent]:
        """The steps' events and the workflow's own (`type` "workflow"), live, ending after
        the workflow settled."""
        return self._client._follow(
            Follow(workflow_id, timeout, last_event_id=after, workflow=True)
        )

    def wait(self, workflow_id: str, timeout: float | None = None) -> Workflow:
        """The workflow once every step settled (WaitTimeout after `timeout` seconds)."""
        follow = Follow(workflow_id, timeout, workflow=True)
        while not (found := self.get(workflow_id)).finished:
            for _ in self._client._follow(follow):
                pass
            follow.ended = False  # the end of an earlier run (the workflow was retried)
        return found


class AsyncWorkflows:
    """`AsyncClient.workflows`: the same calls with await."""

    def __init__(self, client: _AsyncSending) -> None:
        self._client = client

    async def submit(
        self, spec: WorkflowSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Workflow:
        return await self._client._call(submit_call(spec, idempotency_key))

    async def get(self, workflow_id: str) -> Workflow:
        return await self._client._call(get_call(workflow_id))

    async def list(
        self, *, state: str | None = None, page_size: int = 100, limit: int | None = None
    ) -> AsyncIterator[Workflow]:
        cursor: str | None = None
        left = limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            page = await self._client._call(page_call(state, cursor, size))
            items = page.items if left is None else page.items[:left]
            for item in items:
                yield item
            left = None if left is None else left - len(items)
            cursor = page.next_cursor
            if cursor is None:
                return

    async def cancel(self, workflow_id: str) -> Workflow:
        return await self._client._call(cancel_call(workflow_id))

    async def retry(self, workflow_id: str) -> Workflow:
        return await self._client._call(retry_call(workflow_id))

    async def delete(self, workflow_id: str) -> None:
        await self._client._call(delete_call(workflow_id))

    def watch(
        self, workflow_id: str, timeout: float | None = None, *, after: str | None = None
    ) -> AsyncIterator[JobEvent]:
        return self._client._follow(
            Follow(workflow_id, timeout, last_event_id=after, workflow=True)
        )

    async def wait(self, workflow_id: str, timeout: float | None = None) -> Workflow:
        follow = Follow(workflow_id, timeout, workflow=True)
        while not (found := await self.get(workflow_id)).finished:
            async for _ in self._client._follow(follow):
                pass
            follow.ended = False
        return found
