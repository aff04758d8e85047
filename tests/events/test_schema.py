"""The published message form, `conveyor.event/1`: what consumers may rely on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from conveyor.domain.events import Event
from conveyor.events import schema


def event(**changes: object) -> Event:
    fields: dict[str, object] = {
        "id": 42,
        "xid": 7,
        "type": "completed",
        "job_id": "01a2-job",
        "owner_id": "u1",
        "queue": "mail",
        "job_type": "email",
        "state": "completed",
        "attempt": 2,
        "data": {"result": {"sent": True}},
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    }
    fields.update(changes)
    return Event(**fields)  # type: ignore[arg-type]


def test_the_message_names_its_schema_event_job_and_data() -> None:
    assert json.loads(schema.encode(event())) == {
        "schema": "conveyor.event/1",
        "event_id": 42,
        "position": "7.42",
        "type": "completed",
        "job": {
            "id": "01a2-job",
            "type": "email",
            "queue": "mail",
            "owner_id": "u1",
            "state": "completed",
            "attempt": 2,
        },
        "data": {"result": {"sent": True}},
        "at": "2026-01-02T03:04:05.678000Z",
    }


def test_routing_key_and_message_id() -> None:
    assert schema.routing_key(event(type="created")) == "jobs.created"
    assert schema.routing_key(event(type="failed")) == "jobs.failed"
    assert schema.message_id(event()) == "42"


def test_no_data_is_an_empty_object_and_times_are_utc() -> None:
    paris = timezone(timedelta(hours=1))
    body = schema.to_message(event(data=None, created_at=datetime(2026, 1, 2, 4, tzinfo=paris)))
    assert body["data"] == {} and body["at"] == "2026-01-02T03:00:00Z"


def test_text_stays_readable() -> None:
    assert "café" in schema.encode(event(data={"message": "café"})).decode()


def test_a_workflows_own_event_routes_by_its_state_and_names_the_workflow() -> None:
    """A workflow's event (type 'workflow', job_id = the workflow's id, job_type = its name)
    goes out as `workflows.<state>`, so `jobs.#` consumers see jobs only; the body keeps the
    v1 fields and adds `workflow` (docs/events.md)."""
    settled = event(
        type="workflow", job_id="wf-1", job_type="nightly", state="failed", queue="", attempt=0,
        data=None,
    )  # fmt: skip
    assert schema.routing_key(settled) == "workflows.failed"
    message = json.loads(schema.encode(settled))
    assert message["type"] == "workflow"
    assert message["job"]["id"] == "wf-1" and message["job"]["state"] == "failed"
    assert message["workflow"] == {
        "id": "wf-1", "name": "nightly", "owner_id": "u1", "state": "failed"
    }  # fmt: skip
    assert message["data"] == {}
    assert "workflow" not in json.loads(schema.encode(event()))
