"""The published form of an event, shared by every sink that leaves the process.

`conveyor.event/1` is a contract with consumers we do not control (docs/events.md): fields
may be added within version 1, never renamed, removed or retyped; anything else is
`conveyor.event/2`, published alongside version 1 for a deprecation period.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from conveyor.domain.events import Event
from conveyor.domain.workflows import WORKFLOW_EVENT

SCHEMA = "conveyor.event/1"
CONTENT_TYPE = "application/json"


def routing_key(event: Event) -> str:
    """`jobs.<type>`: `jobs.created`, `jobs.completed`, `jobs.failed`, ...; a workflow's own
    event (type `workflow`) is `workflows.<its state>`: `workflows.completed`, ... (so a
    consumer of `jobs.#` sees jobs only, and one of `workflows.#` every workflow's end)."""
    if event.type == WORKFLOW_EVENT:
        return f"workflows.{event.state}"
    return f"jobs.{event.type}"


def message_id(event: Event) -> str:
    """The event's id as text: the same on every redelivery, so consumers can dedupe on it."""
    return str(event.id)


def to_message(event: Event) -> dict[str, Any]:
    """A workflow's own event says the same in `job` (its id, name and state: the outbox's
    columns) and again in `workflow`, named as a workflow is (docs/events.md)."""
    message = {
        "schema": SCHEMA,
        "event_id": event.id,
        "position": str(event.position),
        "type": event.type,
        "job": {
            "id": event.job_id,
            "type": event.job_type,
            "queue": event.queue,
            "owner_id": event.owner_id,
            "state": event.state,
            "attempt": event.attempt,
        },
        "data": event.data or {},
        "at": event.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    if event.type == WORKFLOW_EVENT:
        message["workflow"] = {
            "id": event.job_id,
            "name": event.job_type,
            "owner_id": event.owner_id,
            "state": event.state,
        }
    return message


def encode(event: Event) -> bytes:
    return json.dumps(to_message(event), ensure_ascii=False, separators=(",", ":")).encode()
