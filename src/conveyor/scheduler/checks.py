"""The rule a job (a submission, a cron fire, a workflow step) is checked by: `checked_job`.

It lives below the services because the scheduler fires without them; JobService.prepare
uses it too, so a cron fire is checked as a submission is.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from conveyor.domain.flow import LimitKey, evaluate_key
from conveyor.domain.ids import uuid7
from conveyor.domain.jobs import SYSTEM_OWNER, NewJob
from conveyor.errors import InvalidInput
from conveyor.worker.blueprint import HandlerSpec
from conveyor.worker.registry import Registry


def checked_job(
    registry: Registry,
    job_type: str,
    payload: dict[str, Any],
    owner_id: str = SYSTEM_OWNER,
    *,
    queue: str | None = None,
    priority: int | None = None,
    max_attempts: int | None = None,
    timeout_s: float | None = None,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    tags: Sequence[str] = (),
    callback_url: str | None = None,
    fair: bool = True,
    checked_payload: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> NewJob:
    """Validate against the type's payload model, and take the type's defaults for the
    options left unset; bad input raises and changes nothing. With `fair` (the setting
    fair_dispatch), the job's fair key is the type's `fair_key` source, evaluated now.
    `checked_payload`: `payload` as `checked_payloads` returned it (valid already).
    `job_id`: its id made already (a batch's, by `uuid7_many`); None: a new one."""
    spec = registry.get(job_type)
    checked = checked_payload
    if checked is None:
        try:
            # The model's own validator and serializer (what model_validate and model_dump
            # call), without their Python layers: a single submit's payload, checked once.
            valid = spec.payload_model.__pydantic_validator__.validate_python(payload)
        except ValidationError as exc:
            raise InvalidInput(
                f"invalid payload for job type {job_type!r}",
                errors=exc.errors(include_url=False, include_context=False, include_input=False),
            ) from exc
    if max_attempts is not None and max_attempts < 1:
        raise InvalidInput("max_attempts must be at least 1", field="max_attempts")
    if run_at is not None and run_at.tzinfo is None:
        raise InvalidInput("run_at needs a time zone", field="run_at")
    if checked is None:
        checked = spec.payload_model.__pydantic_serializer__.to_python(valid, mode="json")
    queue = queue or spec.queue
    fair_key, keys = flow_keys(spec, owner_id, queue, checked, fair)
    return NewJob(
        type=spec.name,
        payload=checked,
        queue=queue,
        priority=priority if priority is not None else spec.priority,
        max_attempts=max_attempts or spec.max_attempts,
        run_at=run_at,
        timeout_s=timeout_s if timeout_s is not None else spec.timeout,
        idempotency_key=idempotency_key,
        owner_id=owner_id,
        tags=tuple(tags),
        callback_url=callback_url,
        fair_key=fair_key,
        limit_keys=keys,
        id=job_id or uuid7(),
    )


def checked_payloads(
    registry: Registry, job_type: str, payloads: Sequence[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """Many payloads of one job type validated and dumped in one call of its payload model's
    list adapter (a batch's 500 separate calls cost more); None when one is invalid or the
    type unknown: then each is checked alone by `checked_job`, whose error names the first
    bad one as it always did."""
    if job_type not in registry:
        return None
    adapter = payloads_adapter(registry.get(job_type).payload_model)
    try:
        valid = adapter.validate_python(payloads)
    except ValidationError:
        return None
    dumped: list[dict[str, Any]] = adapter.dump_python(valid, mode="json")
    return dumped


@functools.cache
def payloads_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    """A payload model's list adapter, built once per model: many payloads of one type
    validated and dumped in one call (a batch submit's, a workflow's steps of one type)."""
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def flow_keys(
    spec: HandlerSpec, owner_id: str, queue: str, payload: dict[str, Any], fair: bool
) -> tuple[str | None, tuple[LimitKey, ...]]:
    """A job's fair key (None unless `fair`) and its limits' keys, from its type's
    declarations and its checked payload: evaluated once, at submit; the claim never reads
    the payload again."""
    fair_key = (
        evaluate_key(
            spec.fair_key, owner_id=owner_id, queue=queue, type_name=spec.name, payload=payload
        )
        if fair
        else None
    )
    keys = tuple(
        LimitKey(
            limit.name,
            evaluate_key(
                limit.key, owner_id=owner_id, queue=queue, type_name=spec.name, payload=payload
            ),
        )
        for limit in spec.limits
    )
    return fair_key, keys
