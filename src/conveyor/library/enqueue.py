"""Enqueue inside the caller's transaction: `enqueue`, `enqueue_batch`, `enqueue_workflow`
(sync connections), `aenqueue`, `aenqueue_batch`, `aenqueue_workflow` (async ones).
docs/library.md, "Enqueue inside your transaction" and "A workflow in your transaction".

The connection is the caller's: a psycopg 3 connection, a SQLAlchemy Connection or Session,
a Django database alias (inside `transaction.atomic()`), an asyncpg connection, a psycopg
AsyncConnection, a SQLAlchemy AsyncConnection or AsyncSession. The job commits or rolls
back with the caller's own rows; workers wake when it commits.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from conveyor.domain.clock import utcnow
from conveyor.domain.jobs import Enqueued as Stored
from conveyor.domain.nesting import Flat, declared
from conveyor.domain.workflows import WorkflowSpec
from conveyor.errors import InvalidInput
from conveyor.library import registry as library_registry
from conveyor.services.jobs import Submission
from conveyor.services.library import LibraryEnqueue, OwnerCaps
from conveyor.settings import Settings
from conveyor.worker.blueprint import Blueprint
from conveyor.worker.registry import Registry


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A job enqueued: its id, and whether it was already there (`duplicate`: its
    idempotency key or unique key named a stored job, whose id this is; nothing was added)."""

    id: str
    duplicate: bool


@dataclass(frozen=True)
class Job:
    """One job of `enqueue_batch`: what `enqueue` takes, as a value."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    delay: float | timedelta | None = None  # seconds from now (instead of run_at)
    max_attempts: int | None = None
    timeout: float | None = None  # seconds
    idempotency_key: str | None = None
    tags: Sequence[str] = ()
    limits: Mapping[str, str] | None = None  # the type's submit limits: name -> key


class EnqueueOptions(TypedDict, total=False):
    """The options of one job by keyword (`enqueue`, `aenqueue`): `Job`'s fields after its
    type and payload, with their types, so a type checker refuses an unknown or mistyped
    one at the call (and `Job` raises TypeError when it runs).
    tests/library/test_enqueue_options.py keeps the two in step."""

    queue: str | None
    priority: int | None
    run_at: datetime | None
    delay: float | timedelta | None
    max_attempts: int | None
    timeout: float | None
    idempotency_key: str | None
    tags: Sequence[str]
    limits: Mapping[str, str] | None


@dataclass(frozen=True, slots=True)
class EnqueuedWorkflow:
    """A workflow enqueued: its id, and whether it was already there (`duplicate`: its
    idempotency key named a workflow stored from the same declaration, whose id this is;
    nothing was added)."""

    id: str
    duplicate: bool


def enqueue(
    conn: object,
    job_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    owner: str | None = None,
    registry: Blueprint | None = None,
    **options: Unpack[EnqueueOptions],
) -> Enqueued:
    """One job in `conn`'s transaction (options: `EnqueueOptions`, those of `Job`)."""
    (done,) = enqueue_batch(conn, [Job(job_type, payload or {}, **options)], owner, registry)
    return done


def enqueue_batch(
    conn: object,
    jobs: Sequence[Job],
    owner: str | None = None,
    registry: Blueprint | None = None,
) -> list[Enqueued]:
    """Jobs in `conn`'s transaction, all checked before any is written."""
    stored = _service(registry).enqueue(conn, _submissions(jobs), _owner(owner))
    return _answers(stored)


async def aenqueue(
    conn: object,
    job_type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    owner: str | None = None,
    registry: Blueprint | None = None,
    **options: Unpack[EnqueueOptions],
) -> Enqueued:
    """`enqueue` on an async connection."""
    jobs = [Job(job_type, payload or {}, **options)]
    (done,) = await aenqueue_batch(conn, jobs, owner, registry)
    return done


async def aenqueue_batch(
    conn: object,
    jobs: Sequence[Job],
    owner: str | None = None,
    registry: Blueprint | None = None,
) -> list[Enqueued]:
    """`enqueue_batch` on an async connection."""
    stored = await _service(registry).aenqueue(conn, _submissions(jobs), _owner(owner))
    return _answers(stored)


def enqueue_workflow(
    conn: object,
    spec: object,
    *,
    owner: str | None = None,
    idempotency_key: str | None = None,
    registry: Blueprint | None = None,
) -> EnqueuedWorkflow:
    """A workflow (every step checked first) in `conn`'s transaction. `spec`: what the
    client's builders make (`conveyor.client.workflow`, `chain`, `group`, `chord`, with
    `nested` parts), the same declaration as JSON (POST /api/v1/workflows' body), or a
    domain WorkflowSpec."""
    flat = _declaration(spec)
    with flat.declared_places():
        found, duplicate = _service(registry).enqueue_workflow(
            conn, flat.spec, _owner(owner), idempotency_key
        )
    return EnqueuedWorkflow(found, duplicate)


async def aenqueue_workflow(
    conn: object,
    spec: object,
    *,
    owner: str | None = None,
    idempotency_key: str | None = None,
    registry: Blueprint | None = None,
) -> EnqueuedWorkflow:
    """`enqueue_workflow` on an async connection."""
    flat = _declaration(spec)
    with flat.declared_places():
        found, duplicate = await _service(registry).aenqueue_workflow(
            conn, flat.spec, _owner(owner), idempotency_key
        )
    return EnqueuedWorkflow(found, duplicate)


def _declaration(spec: object) -> Flat:
    """The domain's declaration of a client builder's spec (its `body()`: the REST body,
    nested workflows flattened), of that body itself, or the domain's own."""
    if isinstance(spec, WorkflowSpec):
        return Flat(spec)
    body = getattr(spec, "body", None)
    data = body() if callable(body) else spec
    if not isinstance(data, Mapping):
        raise InvalidInput(f"not a workflow declaration: {type(spec).__qualname__}", field="spec")
    try:
        return declared(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"not a workflow declaration: {exc!r}", field="spec") from exc


def _owner(owner: str | None) -> str:
    return owner if owner is not None else _settings().library_owner


def _submissions(jobs: Sequence[Job]) -> list[Submission]:
    return [_submission(job) for job in jobs]


def _submission(job: Job) -> Submission:
    run_at = job.run_at
    if job.delay is not None:
        delay = job.delay if isinstance(job.delay, timedelta) else timedelta(seconds=job.delay)
        run_at = utcnow() + delay
    return Submission(
        type=job.type,
        payload=dict(job.payload),
        queue=job.queue,
        priority=job.priority,
        max_attempts=job.max_attempts,
        timeout_s=job.timeout,
        run_at=run_at,
        idempotency_key=job.idempotency_key,
        tags=tuple(job.tags),
        limits=dict(job.limits) if job.limits is not None else None,
    )


def _answers(stored: Sequence[Stored]) -> list[Enqueued]:
    return [Enqueued(s.id, not s.created) for s in stored]


def _service(blueprint: Blueprint | None) -> LibraryEnqueue:
    """The checks for the job types of `blueprint` (the library's default one), the
    built-ins and those of CONVEYOR_HANDLER_MODULES."""
    settings = _settings()
    chosen = blueprint if blueprint is not None else library_registry.default
    # Built per call from the library's blueprint: a type declared after the first enqueue
    # counts too (a handful of specs: microseconds).
    registry = Registry(chosen, _handlers(settings.handler_modules))
    return LibraryEnqueue(
        registry,
        fair=settings.fair_dispatch,
        past_tolerance=settings.run_at_past_tolerance,
        schema=settings.database_schema,
        quota_max_queued=settings.quota_max_queued,
        quota_max_running=settings.quota_max_running,
        caps=_owner_caps(),
    )


@functools.cache
def _settings() -> Settings:
    """The process's settings, read once (as a server reads them at start)."""
    return Settings()


@functools.cache
def _owner_caps() -> OwnerCaps:
    """The owners' caps this process has read (services/library.py), shared by its calls."""
    return OwnerCaps()


@functools.cache
def _handlers(modules: str) -> Registry:
    """The built-ins and the job types of CONVEYOR_HANDLER_MODULES, loaded at the first call
    (not at import: the built-ins bring their libraries)."""
    from conveyor.runtime import load_handlers

    return load_handlers([m.strip() for m in modules.split(",") if m.strip()])
