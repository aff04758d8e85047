"""The library door's enqueue: submissions checked as every door's are (`prepare_job`), then
inserted in the caller's own transaction, on their connection (store/foreign.py).

Nothing is written before every submission of a call is valid: a bad payload or an unknown
job type raises first, and the caller's transaction is untouched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import Enqueued, NewJob
from conveyor.domain.workflows import WorkflowSpec
from conveyor.errors import InvalidInput
from conveyor.scheduler.workflow_rows import under_running_quota as steps_under_quota
from conveyor.scheduler.workflow_rows import workflow_draft
from conveyor.services.flow import QuotaAsk, quota_verdicts
from conveyor.services.jobs import (
    CAPS_TTL_S,
    MAX_BATCH,
    Submission,
    prepare_job,
    submitted,
    under_running_quota,
)
from conveyor.store import foreign
from conveyor.store.driver import StoredWorkflow
from conveyor.store.workflows import WorkflowRows, stored_workflow
from conveyor.worker.registry import Registry

Caps = tuple[int | None, int | None]  # an owner's own max_queued and max_running


class OwnerCaps:
    """Each owner's own caps as last read, for CAPS_TTL_S: a process that enqueues for one
    owner reads their row every few seconds, not on every enqueue (JobService reads the
    running caps so too). The queued count itself is always taken in the caller's
    transaction."""

    MAX_OWNERS = 10_000  # more owners seen: forgotten, read again

    def __init__(self, ttl: float = CAPS_TTL_S) -> None:
        self.ttl = ttl
        self._seen: dict[str, tuple[float, Caps]] = {}

    async def of(self, caller: foreign.Foreign, owner_id: str) -> Caps:
        now = time.monotonic()
        seen = self._seen.get(owner_id)
        if seen is not None and now - seen[0] <= self.ttl:
            return seen[1]
        caps = await caller.owner_caps(owner_id)
        if len(self._seen) >= self.MAX_OWNERS:
            self._seen.clear()
        self._seen[owner_id] = (now, caps)
        return caps


@dataclass(frozen=True)
class LibraryEnqueue:
    """Enqueues into a caller's transaction, checked against `registry`'s job types."""

    registry: Registry
    fair: bool = True  # the setting fair_dispatch
    past_tolerance: float = 60.0  # the setting run_at_past_tolerance
    schema: str = ""  # the setting database_schema: where Conveyor's tables are
    quota_max_queued: int = 0  # the settings' quotas: an owner's when their own is unset
    quota_max_running: int = 0
    caps: OwnerCaps = field(default_factory=OwnerCaps)  # one per process, across calls

    def prepare(self, submissions: Sequence[Submission], owner_id: str) -> list[NewJob]:
        """Every submission checked and made a new job; InvalidInput for the first bad one."""
        self._named(owner_id)
        if len(submissions) > MAX_BATCH:
            raise InvalidInput(f"at most {MAX_BATCH} jobs per batch", limit=MAX_BATCH)
        return [
            prepare_job(
                self.registry, s, owner_id, fair=self.fair, past_tolerance=self.past_tolerance
            )
            for s in submissions
        ]

    def prepare_workflow(
        self, spec: WorkflowSpec, owner_id: str, idempotency_key: str | None
    ) -> WorkflowRows:
        """The whole declaration checked (as WorkflowService.submit checks it) and made
        rows; InvalidInput naming the problem, before anything is written."""
        self._named(owner_id)
        return workflow_draft(
            self.registry, spec, owner_id, utcnow(), idempotency_key=idempotency_key,
            fair=self.fair,
        ).whole()  # fmt: skip

    def enqueue_workflow(
        self, conn: object, spec: WorkflowSpec, owner_id: str, idempotency_key: str | None
    ) -> tuple[str, bool]:
        """A workflow on a sync connection: its id, and whether its idempotency key named
        a stored one (then nothing was written)."""
        rows = self.prepare_workflow(spec, owner_id, idempotency_key)
        with foreign.opened(conn, self.schema) as caller:
            found = foreign.run_sync(self._store_workflow(caller, rows, owner_id))
        return _answer(rows, found)

    async def aenqueue_workflow(
        self, conn: object, spec: WorkflowSpec, owner_id: str, idempotency_key: str | None
    ) -> tuple[str, bool]:
        """`enqueue_workflow` on an async connection."""
        rows = self.prepare_workflow(spec, owner_id, idempotency_key)
        async with foreign.aopened(conn, self.schema) as caller:
            found = await self._store_workflow(caller, rows, owner_id)
        return _answer(rows, found)

    async def _store_workflow(
        self, caller: foreign.Foreign, rows: WorkflowRows, owner_id: str
    ) -> StoredWorkflow | None:
        """The queued quota for every step, then the store's workflow statements (those
        WorkflowService's transaction runs) in the caller's transaction."""
        running_cap = await self._quota(caller, owner_id, len(rows.steps))
        if running_cap:
            rows = steps_under_quota(rows, owner_id)
        return await caller.insert_workflow(rows)

    def enqueue(
        self, conn: object, submissions: Sequence[Submission], owner_id: str
    ) -> list[Enqueued]:
        """On a sync connection (store/foreign.py says which)."""
        prepared = self.prepare(submissions, owner_id)
        with foreign.opened(conn, self.schema) as caller:
            enqueued = foreign.run_sync(self._store(caller, prepared, owner_id))
        submitted(prepared, enqueued)  # counted at insert, as in a service's transaction
        return enqueued

    async def aenqueue(
        self, conn: object, submissions: Sequence[Submission], owner_id: str
    ) -> list[Enqueued]:
        """On an async connection (store/foreign.py says which)."""
        prepared = self.prepare(submissions, owner_id)
        async with foreign.aopened(conn, self.schema) as caller:
            enqueued = await self._store(caller, prepared, owner_id)
        submitted(prepared, enqueued)
        return enqueued

    async def _store(
        self, caller: foreign.Foreign, prepared: list[NewJob], owner_id: str
    ) -> list[Enqueued]:
        """The owner's quotas, then the insert (the jobs under the running quota when it
        has one)."""
        running_cap = await self._quota(caller, owner_id, len(prepared))
        return await caller.enqueue(under_running_quota(prepared, owner_id, running_cap))

    async def _quota(self, caller: foreign.Foreign, owner_id: str, count: int) -> int:
        """The owner's quotas, as the REST doors apply them: the queued quota counted (and
        the owner's row locked) in the caller's transaction, QuotaExceeded and nothing
        written beyond it; the owner's running cap (0: none)."""
        max_queued, max_running = await self.caps.of(caller, owner_id)
        ask = QuotaAsk(owner_id, max_queued, count)
        (refused,) = await quota_verdicts([ask], self.quota_max_queued, caller.waiting_counts)
        if refused is not None:
            raise refused
        return max_running or self.quota_max_running

    @staticmethod
    def _named(owner_id: str) -> None:
        if not owner_id:
            raise InvalidInput(
                "a library enqueue names its owner (owner=..., or CONVEYOR_LIBRARY_OWNER): "
                "the user or service account whose job it is",
                field="owner",
            )


def _answer(rows: WorkflowRows, found: StoredWorkflow | None) -> tuple[str, bool]:
    """The workflow's id and whether it was there already; IdempotencyKeyReused for a key
    stored with another declaration, raised once the caller's connection is handed back
    (a Django `atomic()` block is then not marked for rollback)."""
    if found is None:
        return rows.id, False
    return stored_workflow(rows.workflow, found), True
