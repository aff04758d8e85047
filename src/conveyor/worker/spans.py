"""The worker's spans (docs/tracing.md): one per claim statement, and per run a wait and a
run span that continue the job's stored trace context. No-ops unless tracing is on.

The queue wait is a span of its own, from the job's due time to its start, rather than an
attribute of the run: a trace view then shows submit, wait and run as consecutive bars, and
the wait of one job can be told at a glance from the run that follows it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime

from conveyor import tracing
from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import ClaimedJob, Outcome
from conveyor.tracing import Attribute, RunRef, Span

SYSTEM = "conveyor"  # messaging.system of the semantic conventions for messaging

# A claim's workflow steps' dependencies (store/workflows.py `dependency_runs`), read once.
Parents = asyncio.Future[dict[str, list[tuple[str, int, str | None]]]]


def claim_began() -> datetime | None:
    """When a claim statement starts, if tracing (for `claimed`)."""
    return utcnow() if tracing.enabled() else None


def claimed(began: datetime | None, queues: Sequence[str], limit: int, count: int) -> None:
    """The span of a claim statement that took jobs, from `began` to now. One that took
    none makes no span: an idle worker polls every second, and would fill a trace store
    with claims of nothing."""
    if began is None or not count:
        return
    attributes: dict[str, Attribute] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "receive",
        "messaging.operation.name": "claim",
        "messaging.batch.message_count": count,
        "conveyor.queues": list(queues),
        "conveyor.claim.limit": limit,
    }
    tracing.interval("conveyor.claim", None, began, utcnow(), attributes, kind="client")


def job_attributes(job: ClaimedJob) -> dict[str, Attribute]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "run",
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.id,
        "conveyor.job.id": job.id,
        "conveyor.job.type": job.type,
        "conveyor.job.queue": job.queue,
        "conveyor.job.attempt": job.attempt,
        "conveyor.job.max_attempts": job.max_attempts,
    }


def waited(job: ClaimedJob) -> None:
    """The job's wait in its queue: from when it became due until now, when it starts."""
    if job.run_at is not None and tracing.enabled():
        attributes: dict[str, Attribute] = {
            "conveyor.job.id": job.id,
            "conveyor.job.attempt": job.attempt,
        }
        run = RunRef(job.id, job.attempt, job.trace_context)
        tracing.interval("conveyor.wait", job.trace_context, job.run_at, utcnow(), attributes, run)


async def parents_of(job: ClaimedJob, parents: Parents | None) -> list[RunRef] | None:
    """The runs a workflow step's run links to: the last run of each step it waited for
    (a join links them all). Nothing when its claim read none (not tracing, no steps);
    None when the job was cancelled (interrupted) while waiting for them."""
    if parents is None:
        return []
    try:  # shielded: one step cancelled does not cancel its claim-mates' read
        found = (await asyncio.shield(parents)).get(job.id, [])
    except asyncio.CancelledError:
        return None
    except Exception:  # a trace's links are not worth failing a job for
        return []
    return [RunRef(dep, attempt, context) for dep, attempt, context in found if attempt > 0]


def run(job: ClaimedJob, parents: Sequence[RunRef] = ()) -> AbstractContextManager[Span]:
    """Around one run: a child of the submitter's span (a root when there was none); a
    retry also links to its first attempt's run."""
    first = [RunRef(job.id, 1, job.trace_context)] if job.attempt > 1 else []
    return tracing.continued(
        f"conveyor.run {job.type}",
        job.trace_context,
        kind="consumer",
        attributes=job_attributes(job),
        links=[*first, *parents],
        run=RunRef(job.id, job.attempt, job.trace_context),
    )


def finished(span: Span, outcome: Outcome | None) -> None:
    """What the run came to; an error status unless it completed."""
    kind = outcome.kind if outcome is not None else "interrupted"
    span.set("conveyor.job.outcome", kind)
    if outcome is not None and outcome.error is not None:
        span.fail(f"{outcome.error.type}: {outcome.error.message}")
    elif outcome is None:
        span.fail("interrupted")
