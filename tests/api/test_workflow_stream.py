"""The order a workflow's stream tells its end in (api/workflow_stream.py): the workflow's
own settled event after the events of the statement that settled it (SQLite's triggers
write it first)."""

from __future__ import annotations

from datetime import UTC, datetime

from conveyor.api.workflow_stream import settled_last
from conveyor.domain.events import Event

AT = datetime(2026, 1, 1, tzinfo=UTC)


def ev(event_id: int, kind: str, job: str, state: str, xid: int = 0) -> Event:
    return Event(event_id, xid, kind, job, "u1", "default", "t", state, 1, None, AT)


def test_the_settled_event_moves_after_its_transactions_events_taking_the_last_position() -> None:
    told = settled_last(
        [
            ev(17, "started", "d", "running", xid=5),
            ev(18, "workflow", "wf", "completed", xid=6),
            ev(19, "completed", "d", "completed", xid=6),
            ev(20, "created", "x", "queued", xid=7),
        ]
    )
    assert [(e.type, e.id, e.xid) for e in told] == [
        ("started", 17, 5), ("completed", 19, 6), ("workflow", 19, 6), ("created", 20, 7),
    ]  # fmt: skip


def test_a_running_workflow_event_and_an_already_last_one_stay_where_they_are() -> None:
    events = [
        ev(1, "workflow", "wf", "running"),
        ev(2, "queued", "a", "queued"),
        ev(3, "completed", "a", "completed", xid=1),
        ev(4, "workflow", "wf", "completed", xid=1),
    ]
    assert settled_last(events) == events
