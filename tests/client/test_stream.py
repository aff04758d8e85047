"""The SSE framing and the follower's bookkeeping, line by line (no server needed)."""

from __future__ import annotations

import json

import pytest

from conveyor.client import ConnectionFailed, WaitTimeout
from conveyor.client.stream import MAX_DROPS, Follow, SseParser


def event(event_id: str, kind: str) -> str:
    body = {
        "event_id": event_id,
        "type": kind,
        "job": {"id": "j", "type": "sleep", "queue": "default", "state": "running", "attempt": 1},
        "data": {"percent": 50, "message": "half"} if kind == "progress" else None,
        "at": "2026-12-01T10:00:00Z",
    }
    return json.dumps(body)


def test_messages_comments_and_multi_line_data() -> None:
    parser = SseParser()
    lines = [": keep-alive", "", "id: 1.2", "event: x", "data: a", "data:b", "", "", "data: c", ""]
    assert [m for line in lines if (m := parser.line(line))] == [
        ("1.2", "x", "a\nb"),
        (None, "message", "c"),
    ]


def test_follow_resumes_after_the_last_event_and_stops_at_the_end() -> None:
    follow = Follow("j")
    call, _ = follow.request(5.0)
    assert "Last-Event-ID" not in call.headers and call.headers["Accept"] == "text/event-stream"
    for line in ("id: 7.1", "event: progress", f"data: {event('7.1', 'progress')}"):
        assert follow.feed(line) is None
    seen = follow.feed("")
    assert seen is not None and seen.progress is not None and seen.progress.percent == 50
    assert follow.request(5.0)[0].headers["Last-Event-ID"] == "7.1" and not follow.ended

    follow.feed("id: 7.2")  # a message cut off by a dropped connection ...
    follow.dropped()
    assert follow.feed("") is None  # ... is forgotten, and sent again after the resume
    for line in ("id: 8.3", f"data: {event('8.3', 'completed')}", ""):
        follow.feed(line)
    assert follow.ended and follow.last_event_id == "8.3"


def test_reconnects_back_off_then_give_up_and_the_deadline_holds() -> None:
    follow = Follow("j")
    pauses = []
    for _ in range(MAX_DROPS):
        follow.broke(OSError("refused"), "http://x")
        pauses.append(follow.dropped())
    assert pauses[0] == 0 and pauses == sorted(pauses) and pauses[-1] == 5.0
    with pytest.raises(ConnectionFailed):
        follow.broke(OSError("refused"), "http://x")
    follow.feed(": keep-alive")  # any line read shows the connection works again
    follow.broke(OSError("reset"), "http://x")

    with pytest.raises(WaitTimeout):
        Follow("j", timeout=0).read_timeout()
    with pytest.raises(WaitTimeout):  # a stream that keeps talking does not outlast it
        Follow("j", timeout=0).feed(": keep-alive")
    assert Follow("j", timeout=3).read_timeout() <= 3
