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

SCHEMA = "conveyor.event/1"
CONTENT_TYPE = "application/json"


def routing_key(event: Event) -> str:
    """`jobs.<type>`: `jobs.created`, `jobs.completed`, `jobs.failed`, ..."""
    return f"jobs.{event.type}"


def message_id(event: Event) -> str:
    """The event's id as text: the same on every redelivery, so consumers can dedupe on it."""
    return str(event.id)


def to_message(event: Event) -> dict[str, Any]:
    return {
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


def encode(event: Event) -> bytes:
    return json.dumps(to_message(event), ensure_ascii=False, separators=(",", ":")).encode()
