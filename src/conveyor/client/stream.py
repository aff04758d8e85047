"""Following one job's event stream across dropped connections, without doing any I/O.

The sync and async clients feed the lines they read into `Follow` and ask it what to do
next; so the rules (where to resume, when the story has ended, how long to read, how long
to pause before reconnecting) are written once. The SSE framing is the WHATWG one: `field:
value` lines, a blank line ends a message, lines starting with `:` are comments.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from conveyor.client.errors import ConnectionFailed, WaitTimeout
from conveyor.client.models import TERMINAL_EVENTS, JobEvent, Progress
from conveyor.client.transport import Call, nothing

EventCallback = Callable[[JobEvent], None]
ProgressCallback = Callable[[Progress], None]

# A workflow's own event (`type` "workflow") in one of these states ends its story.
WORKFLOW_SETTLED = frozenset({"completed", "failed", "cancelled"})
STREAM_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
KEEPALIVE_READ_S = 45.0  # the server sends a comment every 15 s; three missed ones = dead
RECONNECT_PAUSES = (0.0, 0.25, 0.5, 1.0, 2.0, 5.0)
MAX_DROPS = 12  # reconnects in a row that read nothing: about 45 s of a server gone


@dataclass
class SseParser:
    """Turns lines into complete messages (`id`, `event`, `data`)."""

    _fields: dict[str, str] = field(default_factory=dict)
    _data: list[str] = field(default_factory=list)

    def line(self, line: str) -> tuple[str | None, str, str] | None:
        """Feed one line; a finished message `(id, event, data)` when the line ends one."""
        if line.startswith(":"):
            return None
        if line:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            else:
                self._fields[name] = value
            return None
        if not self._data:
            self._fields.clear()
            return None
        message = (
            self._fields.get("id"),
            self._fields.get("event", "message"),
            "\n".join(self._data),
        )
        self._fields, self._data = {}, []
        return message


@dataclass
class Follow:
    """The state of one `watch()`: the last event seen, the deadline, failed reconnects.
    `job_id` is a job's id, or a workflow's when `workflow` is set (its stream then ends with
    the workflow's own settled event, not with a step's)."""

    job_id: str
    timeout: float | None = None
    last_event_id: str | None = None
    ended: bool = False
    drops: int = 0
    _started: float = field(default_factory=time.monotonic)
    parser: SseParser = field(default_factory=SseParser)
    workflow: bool = False

    def request(self, connect_timeout: float | None) -> tuple[Call[None], httpx.Timeout]:
        """The stream to open next, resuming after the last event seen (the server then
        sends only what came next), and its timeouts."""
        headers = dict(STREAM_HEADERS)
        if self.last_event_id is not None:
            headers["Last-Event-ID"] = self.last_event_id
        kind = "workflows" if self.workflow else "jobs"
        call = Call("GET", f"/{kind}/{self.job_id}/events", nothing, headers=headers)
        return call, httpx.Timeout(connect_timeout, read=self.read_timeout())

    def remaining(self) -> float | None:
        """Seconds left before the deadline (None: no deadline); WaitTimeout once past it."""
        if self.timeout is None:
            return None
        left = self.timeout - (time.monotonic() - self._started)
        if left <= 0:
            raise WaitTimeout(self.job_id, self.timeout)
        return left

    def read_timeout(self) -> float:
        """How long one read may block: until the deadline, and never past a missed
        keep-alive (a silent dead connection is then noticed and reopened)."""
        left = self.remaining()
        return KEEPALIVE_READ_S if left is None else min(left, KEEPALIVE_READ_S)

    def feed(self, line: str) -> JobEvent | None:
        """One line of the stream; the event when the line completes one. Any line, even a
        keep-alive comment, shows the connection works. The deadline is checked here too: a
        busy stream never waits on its read timeout."""
        self.remaining()
        self.drops = 0
        message = self.parser.line(line)
        if message is None:
            return None
        event_id, _, data = message
        event = JobEvent.model_validate_json(data)
        self.last_event_id = event_id or event.event_id
        self.ended = self.ends(event)
        return event

    def ends(self, event: JobEvent) -> bool:
        if self.workflow:
            return event.type == "workflow" and event.job.state.value in WORKFLOW_SETTLED
        return event.type in TERMINAL_EVENTS

    def broke(self, cause: Exception, url: str) -> None:
        """The connection failed (or the server answered 503): reconnecting goes on, up to
        `MAX_DROPS` times in a row without a line read, then ConnectionFailed."""
        if self.drops >= MAX_DROPS:
            raise ConnectionFailed(url, cause) from cause

    def dropped(self) -> float:
        """The stream ended or broke before the end: the pause before reconnecting (short at
        first, growing while reconnects keep failing), never past the deadline."""
        self.parser = SseParser()  # a half-read message is sent again after the resume
        pause = RECONNECT_PAUSES[min(self.drops, len(RECONNECT_PAUSES) - 1)]
        self.drops += 1
        left = self.remaining()
        return pause if left is None else min(pause, left)
