"""The library door's enqueue: submissions checked as every door's are (`prepare_job`), then
inserted in the caller's own transaction, on their connection (store/foreign.py).

Nothing is written before every submission of a call is valid: a bad payload or an unknown
job type raises first, and the caller's transaction is untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.domain.jobs import Enqueued, NewJob
from conveyor.errors import InvalidInput
from conveyor.services.jobs import MAX_BATCH, Submission, prepare_job, submitted
from conveyor.store import foreign
from conveyor.worker.registry import Registry


@dataclass(frozen=True)
class LibraryEnqueue:
    """Enqueues into a caller's transaction, checked against `registry`'s job types."""

    registry: Registry
    fair: bool = True  # the setting fair_dispatch
    past_tolerance: float = 60.0  # the setting run_at_past_tolerance
    schema: str = ""  # the setting database_schema: where Conveyor's tables are

    def prepare(self, submissions: Sequence[Submission], owner_id: str) -> list[NewJob]:
        """Every submission checked and made a new job; InvalidInput for the first bad one."""
        if not owner_id:
            raise InvalidInput(
                "a library enqueue names its owner (owner=..., or CONVEYOR_LIBRARY_OWNER): "
                "the user or service account whose job it is",
                field="owner",
            )
        if len(submissions) > MAX_BATCH:
            raise InvalidInput(f"at most {MAX_BATCH} jobs per batch", limit=MAX_BATCH)
        return [
            prepare_job(
                self.registry, s, owner_id, fair=self.fair, past_tolerance=self.past_tolerance
            )
            for s in submissions
        ]

    def enqueue(
        self, conn: object, submissions: Sequence[Submission], owner_id: str
    ) -> list[Enqueued]:
        """On a sync connection (store/foreign.py says which)."""
        prepared = self.prepare(submissions, owner_id)
        enqueued = foreign.enqueue_sync(conn, prepared, self.schema)
        submitted(prepared, enqueued)  # counted at insert, as in a service's transaction
        return enqueued

    async def aenqueue(
        self, conn: object, submissions: Sequence[Submission], owner_id: str
    ) -> list[Enqueued]:
        """On an async connection (store/foreign.py says which)."""
        prepared = self.prepare(submissions, owner_id)
        enqueued = await foreign.enqueue_async(conn, prepared, self.schema)
        submitted(prepared, enqueued)
        return enqueued
